"""The export engine: adapters -> exporters -> verification -> manifest.

``export()`` is the one entry point; the callback and the command line are thin layers over
it. Every argument is checked before any file is written; every file is staged and renamed
into place; a failing format never stops the others; the manifest is written last.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lightning_deploy import detectron2
from lightning_deploy.accuracy import accuracy_delta, input_leaves
from lightning_deploy.checks import labelled_samples
from lightning_deploy.eager import attention_fast_path
from lightning_deploy.errors import ConfigurationError
from lightning_deploy.exporters import EXPORTERS, Capture
from lightning_deploy.exporters.torch_export import unbacked_output_dims
from lightning_deploy.files import (
    copy_files,
    install_lock,
    install_order,
    move_into_place,
    sha256_file,
    staging_dir,
    write_json_atomic,
)
from lightning_deploy.latency import seconds_per_call
from lightning_deploy.manifest import MANIFEST_SUFFIX, ONNX_FORMATS, artifact_name, header, json_safe, versions
from lightning_deploy.onnx_passes import DERIVED_FORMATS
from lightning_deploy.options import ExportOptions, methods_for
from lightning_deploy.plan import Plan, make_plan
from lightning_deploy.progress import StepLog
from lightning_deploy.requires import required_packages
from lightning_deploy.runtimes import runtime_module
from lightning_deploy.verify import Verification, verify_artifact

__all__ = ["export"]

_MAX_ERROR_CHARS = 2000
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# FlatAdapter.forward(*tensors)'s arguments, as torch.export's messages name them
_FLAT_ARGUMENT = re.compile(r"\btensors_(\d+)\b|L\['tensors'\]\[(\d+)\]")


def export(
    module: nn.Module,
    input_sample: Any,
    dirpath: str | os.PathLike[str],
    stem: str,
    formats: Sequence[str] | str = ("torchscript", "onnx"),
    method: str = "auto",
    dynamic_batch: bool = True,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    verify: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    opset: int | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    int8_rtol: float = 0.05,
    accuracy_data: Iterable[Any] | None = None,
    check_samples: Sequence[Any] | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Export ``module`` to verified artifacts ``dirpath/stem.*`` and a manifest.

    Args:
        module: any ``nn.Module``; exported in eval mode (its modes are restored after) on the
            device it lives on: the sample is moved there, and every artifact is verified there
            (ONNX on a GPU only where ONNX Runtime has its CUDA provider, else on the CPU).
        input_sample: nested tensors by ``example_input_array``'s convention: a tuple holds
            positional arguments, a dict keyword arguments, anything else is the one argument.
        dirpath: the folder of the artifacts (created if missing).
        stem: the artifacts' common file name stem (``STEM.onnx``, ``STEM.export.json``).
        formats: any of ``"torchscript"``, ``"onnx"``, ``"pt2"``, ``"aoti"`` (an AOTInductor
            package compiled for the module's device), and the faster ONNX files
            ``"onnx-optimized"`` (fused for ONNX Runtime) and ``"onnx-int8"`` (int8 weights).
        method: ``"trace"``, ``"script"``, ``"export"`` or ``"auto"`` (ONNX: export, then
            trace, then script; TorchScript: trace, then script where tracing warned or did
            not verify; pt2: export).
        dynamic_batch: make dimension 0 of every input leaf dynamic.
        dynamic_axes: more dynamic dims, ``{leaf or prefix: {dim: name}}``.
        verify: reload every artifact in its runtime and compare with eager at two shapes.
        atol: absolute tolerance; ``rtol``: tolerance relative to each leaf's largest value.
        rtol: see ``atol``.
        opset: ONNX opset; ``None`` for the exporter's default.
        checkpoint: the checkpoint the weights came from, recorded in the manifest.
        int8_rtol: ``rtol`` of the ``onnx-int8`` artifact's verification.
        accuracy_data: labelled batches ``(input_sample, class indices)``, e.g. a validation
            ``DataLoader`` (read twice, so not a one-shot generator): ``onnx-int8`` becomes
            static int8 calibrated on its first batches, and its top-1 accuracy is measured
            on them beside the eager model's, the delta recorded under ``accuracy``.
        check_samples: more samples, in ``input_sample``'s convention, that every artifact is
            verified at (real data: what the deployed model will see); a mapping names them
            (``{"validation batch 0": sample}``). Each check is recorded in the artifact's
            ``checks``; besides them every artifact is checked at the export sample, at a
            second sample with every dynamic dim changed, and at a synthetic sample with
            smaller dynamic dims and new values.

    Returns:
        The manifest, also written to ``dirpath/stem.export.json``.

    Raises:
        ConfigurationError: for a bad argument, before any file is written.

    Examples:
        >>> manifest = export(model, torch.randn(4, 8), "out", "model", formats=["onnx"])  # doctest: +SKIP
        >>> manifest["artifacts"][0]["ok"]  # doctest: +SKIP
        True

    """
    options = ExportOptions(formats, method, dynamic_batch, dynamic_axes, verify, atol, rtol, opset, int8_rtol)
    dirpath = _checked_target(module, dirpath, stem)
    # Captures and the eager reference take the plain attention path (eager.py); eval mode, no autograd.
    with contextlib.ExitStack() as stack:
        for context in (_eval_mode(module), torch.no_grad(), attention_fast_path(False), _lightning_scripting(module)):
            stack.enter_context(context)
        module = stack.enter_context(detectron2.support(module))
        plan = make_plan(module, input_sample, options, labelled_samples(check_samples))
        dirpath.mkdir(parents=True, exist_ok=True)
        with staging_dir(dirpath, stem) as staging:
            work = _Work(plan, options, staging, stem, accuracy_data)
            results = [_export_format(fmt, work) for fmt in options.formats]
            # A JSON round trip, so that the returned dict is exactly what the file holds (str keys).
            artifacts = [entry for entry, _ in results]
            _unbacked_sizes(work, artifacts)
            manifest = json.loads(json.dumps(_manifest(work, artifacts, dirpath, checkpoint), allow_nan=False))
            with install_lock(dirpath):  # the whole set moves in together, the manifest last
                for _, folder in results:
                    if folder is not None:
                        move_into_place(folder, dirpath)
                write_json_atomic(dirpath / (stem + MANIFEST_SUFFIX), manifest)
    return manifest


# Batches of accuracy_data that calibrate static int8's activation ranges (ONNX Runtime's MinMax).
CALIBRATION_BATCHES = 8


@dataclasses.dataclass
class _Work:
    """One export's shared state: what is captured and saved once per method is kept here."""

    plan: Plan
    options: ExportOptions
    staging: Path
    stem: str
    accuracy_data: Iterable[Any] | None
    captures: dict[str, Capture | Exception] = dataclasses.field(default_factory=dict)
    onnx_files: dict[str, Path | Exception] = dataclasses.field(default_factory=dict)
    _cache: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.steps = StepLog(f"lightning-deploy {self.stem}")
        # What load() will read from the manifest, through JSON as it will be written.
        self.io_manifest: dict[str, Any] = json.loads(json.dumps(self.plan.io_manifest()))

    @property
    def shares_onnx(self) -> bool:
        """Whether derived ONNX formats were asked for, so that one ONNX file per method serves them all."""
        return any(fmt in DERIVED_FORMATS for fmt in self.options.formats)

    def calibration(self) -> list[dict[str, np.ndarray]] | None:
        """Feeds for static int8 (input leaf name -> array), or ``None`` for dynamic int8.

        The first batches of ``accuracy_data`` (the data the model will see), and the two
        samples the artifact is verified at: static ranges clip what calibration never saw,
        and an export sample unlike the data (``torch.randn`` where pixels are in [0, 1]) would
        otherwise fail verification on values the deployed model never gets. Without
        ``accuracy_data``, or with batches of another form than ``(input_sample, labels)``
        (the accuracy entry records why), ``None``.
        """
        if "calibration" in self._cache:
            return self._cache["calibration"]
        self._cache["calibration"] = feeds = self._calibration_feeds()
        return feeds

    def _calibration_feeds(self) -> list[dict[str, np.ndarray]] | None:
        if self.accuracy_data is None:
            return None
        try:
            found = input_leaves(self.plan.ctx.adapter.module, self.accuracy_data, CALIBRATION_BATCHES)
        except ConfigurationError:
            return None
        if not found:
            return None
        verified = [self.plan.inputs.tensors(sample) for sample in self.plan.samples]
        names = self.plan.ctx.input_names
        return [{n: leaf.detach().cpu().numpy() for n, leaf in zip(names, leaves)} for leaves in [*found, *verified]]

    def capture(self, method: str) -> Capture:
        """The method's capture of the flat adapter, made on first use (a failure is kept and re-raised)."""
        if method not in self.captures:
            try:
                self.captures[method] = EXPORTERS[method].capture(self.plan.ctx)
            except Exception as err:  # noqa: BLE001 - any exporter failure is recorded, others go on
                self.captures[method] = err
        return _result(self.captures[method])

    def onnx_file(self, method: str) -> Path:
        """The method's plain ONNX file, saved once into staging, for the derived ONNX formats (and a copy for onnx)."""
        if method not in self.onnx_files:
            folder = self.staging / f"onnx-source-{method}"
            folder.mkdir()
            path = folder / artifact_name(self.stem, "onnx")
            try:
                EXPORTERS[method].save(self.capture(method), "onnx", path, self.plan.ctx)
                self.onnx_files[method] = path
            except Exception as err:  # noqa: BLE001 - recorded by every ONNX format that needs it
                self.onnx_files[method] = err
        return _result(self.onnx_files[method])


def _result(value: Any) -> Any:
    if isinstance(value, Exception):
        raise value
    return value


@dataclasses.dataclass
class _Attempt:
    """One method's try at one format."""

    method: str
    folder: Path
    variant: str | None = None  # int8: "static" or "dynamic"
    verification: Verification | None = None
    derived: dict[str, Any] | None = None  # what an ONNX pass did (fusions, quantised nodes)
    accuracy: dict[str, Any] | None = None
    error: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    requires: list[str] = dataclasses.field(default_factory=list)  # operator libraries the file calls
    device: str | None = None  # where it was verified
    device_note: str | None = None  # why that is not the module's device
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    ms_per_call: float | None = None  # int8: a call at each verified shape, timed against the other variant
    written: bool = False

    @property
    def ok(self) -> bool:
        return self.written and self.error is None

    @property
    def clean(self) -> bool:
        return self.ok and not self.warnings


def _checked_target(module: Any, dirpath: Any, stem: Any) -> Path:
    if not isinstance(module, nn.Module):
        raise ConfigurationError(f"export(module=...): expected a torch.nn.Module, got {type(module).__name__}.")
    if not isinstance(stem, str) or not stem or os.sep in stem or "/" in stem or stem.startswith("."):
        raise ConfigurationError(
            f"export(stem={stem!r}): the stem must be a plain file name without folders or a leading dot."
            " HINT: pass the folder as dirpath and e.g. stem='model'."
        )
    path = Path(dirpath)
    if path.exists() and not path.is_dir():
        raise ConfigurationError(f"export(dirpath={str(path)!r}): this is a file, not a folder. HINT: pass a folder.")
    return path


@contextlib.contextmanager
def _lightning_scripting(module: nn.Module) -> Iterator[None]:
    """For a LightningModule, Lightning's own ``_jit_is_scripting`` (what ``to_torchscript`` uses).

    A LightningModule's ``trainer`` property raises when no Trainer is attached, and tracing or
    scripting reads every attribute; inside this context it returns ``None``. Looked up in
    ``sys.modules`` so that the engine never imports Lightning itself: a LightningModule means
    Lightning is already imported.
    """
    core = sys.modules.get("lightning.pytorch.core.module")
    if core is None or not isinstance(module, core.LightningModule):
        yield
        return
    with core._jit_is_scripting():
        yield


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode for the export; every submodule's own mode is restored afterwards."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


def _export_format(fmt: str, work: _Work) -> tuple[dict[str, Any], Path | None]:
    """Try the format's methods in order; describe the chosen file(s), still staged (their folder is returned)."""
    plan, stem = work.plan, work.stem
    attempts: list[_Attempt] = []
    for method in methods_for(fmt, work.options.method):
        for variant in _variants(fmt, work):
            attempts.append(_attempt(fmt, method, work, variant))
            if attempts[-1].clean and variant != "static":  # a clean static int8 still meets dynamic
                break
        if any(a.clean for a in attempts):
            break
    clean = [a for a in attempts if a.clean]
    chosen = _fastest(fmt, clean, work) if len(clean) > 1 else next(iter(clean), None)
    chosen = chosen or next((a for a in attempts if a.ok), None)
    chosen = chosen or next((a for a in attempts if a.written), None)
    name = artifact_name(stem, fmt)
    files = [p.name for p in install_order(chosen.folder)] if chosen else []
    verification = chosen.verification if chosen else None
    vacuous = verification.vacuous if verification else []
    notes = [_vacuous_warning(fmt, vacuous)] if vacuous else []
    if chosen and chosen.device_note:
        notes.append(chosen.device_note)
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    entry = {
        "format": fmt,
        "path": name,
        "method": chosen.method if chosen else None,
        "io": "native" if chosen and _native_io(fmt, chosen.method, plan) else "flat",
        "requires": chosen.requires if chosen else [],
        "device": (chosen.device if chosen else None) or plan.device,
        "ok": bool(chosen and chosen.ok),
        "verified": bool(verification and verification.ok),
        "sha256": sha256_file(chosen.folder / name) if chosen else None,
        "files": files,
        "side_files_sha256": {f: sha256_file(chosen.folder / f) for f in files if f != name},
        "runtime": verification.runtime if verification else None,
        "max_abs_diff": json_safe(verification.max_abs_diff) if verification else None,
        "max_rel_diff": json_safe(verification.max_rel_diff) if verification else None,
        "checked_shapes": verification.checked_shapes if verification else [],
        "checks": verification.checks if verification else [],
        "checks_passed": verification.checks_passed if verification else 0,
        "detections": verification.detections if verification else None,
        "vacuous": bool(vacuous),
        "vacuous_leaves": vacuous,
        "tolerance": dict(zip(("atol", "rtol"), work.options.tolerance(fmt))),
        "derived": chosen.derived if chosen else None,
        "accuracy": chosen.accuracy if chosen else None,
        "error": chosen.error if chosen else _most_informative(attempts),
        "warnings": (chosen.warnings if chosen else []) + notes,
        "attempts": [_describe_attempt(a) for a in attempts],
    }
    return entry, (chosen.folder if chosen else None)


# An exporter naming the operator it cannot export says what blocks the format; a later fallback's
# failure ("Failed to get source" or "Lambda aren't supported" from scripting) says only that the
# fallback failed too.
_UNSUPPORTED = re.compile(r"unsupported|not supported", re.IGNORECASE)
_OPERATOR = re.compile(r"\boperator\b", re.IGNORECASE)


def _most_informative(attempts: list[_Attempt]) -> str | None:
    """The error of a format no attempt wrote: an unsupported-operator message first, else the first method's."""
    errors = [a.error for a in attempts if a.error]
    named = (e for e in errors if _UNSUPPORTED.search(e) and _OPERATOR.search(e))
    return next(named, errors[0] if errors else None)


def _unbacked_sizes(work: _Work, artifacts: list[dict[str, Any]]) -> None:
    """Output sizes torch.export found set by values: recorded; a trace they never changed in is not ok.

    Where this export made a ``torch.export`` capture, its unbacked output dims depend on the
    input's values. Every check that changed such a size tested whether a trace baked it in;
    where none did, a traced artifact may hold the export sample's size as a constant, so it
    is not ok, and the error says which sample to give.
    """
    capture = work.captures.get("export")
    if not isinstance(capture, Capture):
        return
    ctx, outputs = work.plan.ctx, work.io_manifest["outputs"]
    found = unbacked_output_dims(capture.program, ctx.output_names)
    for name, dims in found.items():
        outputs["data_dependent"][name] = sorted({*outputs["data_dependent"].get(name, []), *dims})
        outputs["dynamic_axes"].setdefault(name, {}).update({str(d): f"{name}_{d}" for d in dims})
    varied = dict(zip(ctx.output_names, ctx.output_dims))
    unchanged = [(name, d) for name, dims in found.items() for d in dims if d not in varied[name]]
    if not unchanged:
        return
    name, dim = unchanged[0]
    size = work.plan.flat_expected[0][ctx.output_names.index(name)].shape[dim]
    error = (
        f"output '{name}' dim {dim} depends on the input's values (torch.export names its size by an unbacked"
        f" symbol), but every check gave it size {size}, so a trace that baked {size} in would pass them."
        " HINT: pass check_samples (export) or check_batches (ModelExport) with inputs that give it another size."
    )
    for entry in artifacts:
        if entry["method"] == "trace" and entry["ok"]:
            entry["ok"], entry["error"] = False, error


def _variants(fmt: str, work: _Work) -> tuple[str | None, ...]:
    """The ways to make ``fmt`` from one method's capture, in the order to try them.

    int8 with calibration data: static and dynamic, both made and verified, and where both
    verify the faster on this machine is kept (``latency.py``: static quantises convolutions,
    dynamic is faster on attention); dynamic alone is what remains where static does not
    verify (ranges calibrated on the data clip a sample unlike it, e.g. an all-zeros
    ``example_input_array``). Other formats: one.
    """
    if fmt == "onnx-int8":
        return ("static", "dynamic") if work.calibration() else ("dynamic",)
    return (None,)


def _fastest(fmt: str, attempts: list[_Attempt], work: _Work) -> _Attempt:
    """The attempt whose ONNX file runs fastest here at the two verified samples (each attempt records its time)."""
    ctx = work.plan.ctx
    samples = [[leaf.detach().cpu().numpy() for leaf in work.plan.inputs.tensors(s)] for s in work.plan.samples]
    paths = [a.folder / artifact_name(work.stem, fmt) for a in attempts]
    try:
        with work.steps.step(f"{fmt} variants timed"):
            times = seconds_per_call(paths, ctx.input_names, ctx.output_names, samples)
    except Exception as err:  # noqa: BLE001 - both verified; a failed timing keeps the first, saying why
        attempts[0].derived = {**(attempts[0].derived or {}), "chosen": f"first verified (timing failed: {err})"}
        return attempts[0]
    for attempt, seconds in zip(attempts, times):
        attempt.ms_per_call = round(seconds * 1e3, 4)
    chosen = min(zip(times, range(len(attempts))))[1]
    others = ", ".join(f"{a.variant} {a.ms_per_call} ms" for i, a in enumerate(attempts) if i != chosen)
    winner = attempts[chosen]
    winner.derived = {**(winner.derived or {}), "chosen": f"faster here: {winner.ms_per_call} ms for a call at"
                      f" each verified shape, against {others}"}  # fmt: skip
    return winner


def _attempt(fmt: str, method: str, work: _Work, variant: str | None = None) -> _Attempt:
    """Capture (once per method), save, and verify from disk; errors are recorded, not raised."""
    suffix = f"-{variant}" if variant else ""
    attempt = _Attempt(method, work.staging / f"{fmt}-{method}{suffix}", variant=variant)
    attempt.folder.mkdir()
    path = attempt.folder / artifact_name(work.stem, fmt)
    label = f"{fmt} ({method}{', ' + variant if variant else ''})"
    try:
        with _timed(attempt, "capture", work.steps, label, skip=method in work.captures):
            capture = work.capture(method)
        attempt.warnings = capture.warnings
        with _timed(attempt, "compile" if fmt == "aoti" else "save", work.steps, label):
            _save(fmt, method, capture, path, work, attempt)
        attempt.written = True
        attempt.requires = required_packages(fmt, path)
        if work.options.verify:
            attempt.device, attempt.device_note = _verification_device(fmt, work.plan.device)
            with _timed(attempt, "verify", work.steps, label):
                attempt.verification = _verify(fmt, method, path, attempt.device, attempt.requires, work)
            attempt.error = attempt.verification.error
        if fmt == "onnx-int8" and work.accuracy_data is not None and attempt.error is None:
            with _timed(attempt, "accuracy", work.steps, label):
                attempt.accuracy = _accuracy(path, work)
    except Exception as err:  # noqa: BLE001 - recorded in the manifest; the next method or format goes on
        # a half-written file stays in staging, which is removed
        attempt.error = _error_text(err, work.plan.ctx.input_names)
    return attempt


@contextlib.contextmanager
def _timed(attempt: _Attempt, step: str, steps: StepLog, label: str, skip: bool = False) -> Iterator[None]:
    """Record the wall time of ``step`` in the attempt and show it (not when ``skip``: the work was done before)."""
    if skip:
        yield
        return
    start = time.perf_counter()
    try:
        with steps.step(f"{label} {step}"):
            yield
    finally:
        attempt.seconds[step] = attempt.seconds.get(step, 0.0) + time.perf_counter() - start


def _save(fmt: str, method: str, capture: Capture, path: Path, work: _Work, attempt: _Attempt) -> None:
    """Write ``fmt`` at ``path``; with derived ONNX formats asked for, all ONNX formats share one export per method."""
    if fmt not in ONNX_FORMATS or (fmt == "onnx" and not work.shares_onnx):
        EXPORTERS[method].save(capture, fmt, path, work.plan.ctx)
    elif fmt == "onnx":
        copy_files(work.onnx_file(method).parent, path.parent)  # the source stays for the derived formats
    elif fmt == "onnx-int8":
        calibration = work.calibration() if attempt.variant == "static" else None
        attempt.derived = DERIVED_FORMATS[fmt](work.onnx_file(method), path, calibration=calibration)
    else:
        attempt.derived = DERIVED_FORMATS[fmt](work.onnx_file(method), path)


def _verification_device(fmt: str, device: str) -> tuple[str, str | None]:
    """The device to verify ``fmt`` on, and a note when it is not the module's.

    The module's device, unless the runtime cannot run there (ONNX Runtime without its CUDA
    provider): then the CPU, and the entry's ``device`` and a warning say so.
    """
    runtime = runtime_module(fmt)
    if device == "cpu" or runtime.has_device(device):
        return device, None
    return "cpu", f"{fmt}: verified on the CPU, not on {device} where the model lives: {runtime.MISSING_DEVICE_HINT}"


def _verify(fmt: str, method: str, path: Path, device: str, requires: list[str], work: _Work) -> Verification:
    """Verify through ``load()``'s path on ``device``, with the manifest's inputs and outputs as written."""
    native = _native_io(fmt, method, work.plan)
    entry = {"format": fmt, "io": "native" if native else "flat", "requires": requires, "device": device}
    atol, rtol = work.options.tolerance(fmt)
    checks = work.plan.checks_for(native)
    return verify_artifact(entry, path, work.io_manifest, work.plan.call, checks, atol, rtol, device)


def _vacuous_warning(fmt: str, leaves: list[str]) -> str:
    return (
        f"{fmt}: the comparison of {leaves[:5]} proves nothing: their largest eager value is within the"
        " tolerance of zero (an untrained head, outputs near 1e-16), so any output near zero would match."
        " HINT: verify with trained weights or inputs that make these outputs non-trivial."
    )


def _accuracy(path: Path, work: _Work) -> dict[str, Any]:
    """The artifact's top-1 accuracy on ``accuracy_data`` beside the eager model's (a failure is recorded)."""
    ctx = work.plan.ctx
    runner = runtime_module("onnx").open_runner(str(path), ctx.input_names, ctx.output_names, "cpu")
    device = work.plan.device
    try:
        return accuracy_delta(ctx.adapter.module, lambda leaves: ctx.adapter(*(t.to(device) for t in leaves)),
                              lambda leaves: runner([t.cpu().numpy() for t in leaves]), work.accuracy_data)  # fmt: skip
    except Exception as err:  # noqa: BLE001 - the artifact verified; a wrong dataset must not fail it
        return {"error": _error_text(err)}


def _native_io(fmt: str, method: str, plan: Plan) -> bool:
    """Whether this artifact takes ``forward``'s own arguments (scripted TorchScript, inputs with lists)."""
    return fmt == "torchscript" and method == "script" and plan.ctx.native


def _error_text(err: BaseException, input_names: tuple[str, ...] = ()) -> str:
    """Plain text for the manifest and reports.

    ANSI colour codes (torch.onnx's errors carry them) are removed, and the flat adapter's
    argument names (``tensors_0``, in torch.export's guard messages) name the input leaves.
    """
    text = _ANSI.sub("", f"{type(err).__name__}: {err}")
    text = _FLAT_ARGUMENT.sub(lambda m: _leaf_name(m, input_names), text)
    return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS] + " ..."


def _leaf_name(match: re.Match, input_names: tuple[str, ...]) -> str:
    index = int(match.group(1) or match.group(2))
    return f"input '{input_names[index]}'" if index < len(input_names) else match.group(0)


def _describe_attempt(attempt: _Attempt) -> dict[str, Any]:
    return {
        "method": attempt.method,
        **({"variant": attempt.variant} if attempt.variant else {}),
        **({"ms_per_call": attempt.ms_per_call} if attempt.ms_per_call is not None else {}),
        "ok": attempt.ok,
        "error": attempt.error,
        "tracer_warnings": attempt.warnings,
        "seconds": {k: round(v, 4) for k, v in attempt.seconds.items()},
    }


def _manifest(
    work: _Work,
    artifacts: list[dict[str, Any]],
    dirpath: Path,
    checkpoint: str | os.PathLike[str] | None,
) -> dict[str, Any]:
    options = work.options
    return {
        **header(dirpath, checkpoint),
        "ok": all(a["ok"] for a in artifacts),
        **work.io_manifest,
        "attention_fast_path": work.plan.fast_path,
        "skipped_checks": work.plan.skipped,
        "options": {
            "formats": list(options.formats),
            "method": options.method,
            "dynamic_batch": options.dynamic_batch,
            "dynamic_axes": options.dynamic_axes,
            "verify": options.verify,
            "atol": options.atol,
            "rtol": options.rtol,
            "int8_rtol": options.int8_rtol,
            "opset": options.opset,
        },
        "artifacts": artifacts,
        "versions": versions(),
    }
