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
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_deploy.accuracy import accuracy_delta
from lightning_deploy.adapters import CallSpec, FlatAdapter, FlatTree, bind_sample, flatten_tree
from lightning_deploy.dynamic import (
    DynamicDims,
    export_and_check_samples,
    list_length_samples,
    longest_list,
    resolve_dynamic_dims,
)
from lightning_deploy.errors import ConfigurationError, ExportError
from lightning_deploy.exporters import EXPORTERS, Capture, ExportContext
from lightning_deploy.files import copy_files, move_into_place, sha256_file, staging_dir, write_json_atomic
from lightning_deploy.manifest import MANIFEST_SUFFIX, ONNX_FORMATS, artifact_name, header, json_safe, versions
from lightning_deploy.onnx_passes import DERIVED_FORMATS
from lightning_deploy.options import ExportOptions, methods_for
from lightning_deploy.runtimes import runtime_module
from lightning_deploy.verify import Verification, verify_artifact, verify_native

__all__ = ["export"]

_MAX_ERROR_CHARS = 2000


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
) -> dict[str, Any]:
    """Export ``module`` to verified artifacts ``dirpath/stem.*`` and a manifest.

    Args:
        module: any ``nn.Module``; exported in eval mode (its modes are restored after).
        input_sample: nested tensors by ``example_input_array``'s convention: a tuple holds
            positional arguments, a dict keyword arguments, anything else is the one argument.
        dirpath: the folder of the artifacts (created if missing).
        stem: the artifacts' common file name stem (``STEM.onnx``, ``STEM.export.json``).
        formats: any of ``"torchscript"``, ``"onnx"``, ``"pt2"``, and the faster ONNX files
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
            ``DataLoader``: the ``onnx-int8`` artifact's top-1 accuracy is measured on them
            beside the eager model's, and the delta recorded under ``accuracy``.

    Returns:
        The manifest, also written to ``dirpath/stem.export.json``.

    Raises:
        ConfigurationError: for a bad argument, before any file is written.

    Example:
        >>> manifest = export(model, torch.randn(4, 8), "out", "model", formats=["onnx"])  # doctest: +SKIP
        >>> manifest["artifacts"][0]["ok"]  # doctest: +SKIP
        True

    """
    options = ExportOptions(formats, method, dynamic_batch, dynamic_axes, verify, atol, rtol, opset, int8_rtol)
    dirpath = _checked_target(module, dirpath, stem)
    with _eval_mode(module), torch.no_grad():
        plan = _prepare(module, input_sample, options)
        dirpath.mkdir(parents=True, exist_ok=True)
        with staging_dir(dirpath, stem) as staging:
            work = _Work(plan, options, staging, stem, accuracy_data)
            artifacts = [_export_format(fmt, work, dirpath) for fmt in options.formats]
    # A JSON round trip, so that the returned dict is exactly what the file holds (str keys).
    manifest = json.loads(json.dumps(_manifest(plan, options, artifacts, dirpath, checkpoint), allow_nan=False))
    write_json_atomic(dirpath / (stem + MANIFEST_SUFFIX), manifest)
    return manifest


@dataclasses.dataclass
class _Plan:
    """Everything decided before the first exporter runs."""

    inputs: FlatTree
    call: CallSpec
    outputs: FlatTree
    ctx: ExportContext
    samples: list[tuple[torch.Tensor, ...]]
    expected: list[tuple[torch.Tensor, ...]]
    _native_checks: tuple[list[dict], list[Any]] | None = None

    def native_checks(self) -> tuple[list[dict], list[Any]]:
        """Structured samples and eager outputs for an artifact with native I/O (computed once).

        The export and check samples, then every list cut to one item and grown by one.
        """
        if self._native_checks is None:
            export_args, check_args = (self.inputs.unflatten(s) for s in self.samples)
            extra = list_length_samples(export_args, check_args)
            module = self.ctx.adapter.module
            outputs = [self.outputs.unflatten(e) for e in self.expected]
            for arguments in extra:
                args, kwargs = self.call.split(arguments)
                outputs.append(module(*args, **kwargs))
            self._native_checks = ([export_args, check_args, *extra], outputs)
        return self._native_checks


@dataclasses.dataclass
class _Work:
    """One export's shared state: what is captured and saved once per method is kept here."""

    plan: _Plan
    options: ExportOptions
    staging: Path
    stem: str
    accuracy_data: Iterable[Any] | None
    captures: dict[str, Capture | Exception] = dataclasses.field(default_factory=dict)
    onnx_files: dict[str, Path | Exception] = dataclasses.field(default_factory=dict)

    @property
    def shares_onnx(self) -> bool:
        """Whether derived ONNX formats were asked for, so that one ONNX file per method serves them all."""
        return any(fmt in DERIVED_FORMATS for fmt in self.options.formats)

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
    verification: Verification | None = None
    derived: dict[str, Any] | None = None  # what an ONNX pass did (fusions, quantised nodes)
    accuracy: dict[str, Any] | None = None
    error: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
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
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode for the export; every submodule's own mode is restored afterwards."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


def _prepare(module: nn.Module, input_sample: Any, options: ExportOptions) -> _Plan:
    """Flatten the sample, run eager at both shapes, and fix every name and dynamic dim."""
    if input_sample is None:
        raise ConfigurationError("export(input_sample=None): a sample input is needed to export. HINT: pass one.")
    arguments, call = bind_sample(module, input_sample)
    inputs, tensors = flatten_tree(arguments, None, "input_sample", ConfigurationError)
    if not tensors:
        raise ConfigurationError("export(input_sample=...): the sample holds no tensor. HINT: pass tensors.")
    input_dims = resolve_dynamic_dims(inputs.names, tensors, options.dynamic_batch, options.dynamic_axes)
    export_args, check_args = export_and_check_samples(tensors, input_dims)
    export_arguments = inputs.unflatten(export_args)
    args, kwargs = call.split(export_arguments)
    outputs, expected = flatten_tree(module(*args, **kwargs), "out", "The model's output", ExportError)
    if not expected:
        raise ExportError(f"{type(module).__name__} returned no tensor; there is nothing to export.")
    adapter = FlatAdapter(module, inputs, call, outputs)
    check_expected = adapter(*check_args)
    ctx = ExportContext(
        adapter=adapter,
        args=export_args,
        input_names=inputs.names,
        output_names=outputs.names,
        input_dims=input_dims,
        output_dims=_output_dims(outputs.names, expected, check_expected),
        opset=options.opset,
        native=longest_list(export_arguments) > 0,
    )
    return _Plan(inputs, call, outputs, ctx, [export_args, check_args], [expected, check_expected])


def _output_dims(names: Sequence[str], first: Sequence[torch.Tensor], second: Sequence[torch.Tensor]) -> DynamicDims:
    """Output dims that changed between the two samples are dynamic."""
    dims: DynamicDims = []
    for name, a, b in zip(names, first, second):
        if a.dim() != b.dim():
            raise ExportError(f"Output '{name}' has {a.dim()} dims at one input shape and {b.dim()} at another.")
        dims.append({d: f"{name}_{d}" for d in range(a.dim()) if a.shape[d] != b.shape[d]})
    return dims


def _export_format(fmt: str, work: _Work, dirpath: Path) -> dict[str, Any]:
    """Try the format's methods in order; move the chosen file(s) into place; describe them."""
    plan, stem = work.plan, work.stem
    attempts: list[_Attempt] = []
    for method in methods_for(fmt, work.options.method):
        attempts.append(_attempt(fmt, method, work))
        if attempts[-1].clean:
            break
    chosen = next((a for a in attempts if a.clean), None) or next((a for a in attempts if a.ok), None)
    chosen = chosen or next((a for a in attempts if a.written), None)
    name = artifact_name(stem, fmt)
    files = [p.name for p in move_into_place(chosen.folder, dirpath)] if chosen else []
    verification = chosen.verification if chosen else None
    return {
        "format": fmt,
        "path": name,
        "method": chosen.method if chosen else None,
        "io": "native" if chosen and _native_io(fmt, chosen.method, plan) else "flat",
        "ok": bool(chosen and chosen.ok),
        "verified": bool(verification and verification.ok),
        "sha256": sha256_file(dirpath / name) if chosen else None,
        "files": files,
        "side_files_sha256": {f: sha256_file(dirpath / f) for f in files if f != name},
        "runtime": verification.runtime if verification else None,
        "max_abs_diff": json_safe(verification.max_abs_diff) if verification else None,
        "max_rel_diff": json_safe(verification.max_rel_diff) if verification else None,
        "checked_shapes": verification.checked_shapes if verification else [],
        "detections": verification.detections if verification else None,
        "tolerance": dict(zip(("atol", "rtol"), work.options.tolerance(fmt))),
        "derived": chosen.derived if chosen else None,
        "accuracy": chosen.accuracy if chosen else None,
        "error": chosen.error if chosen else attempts[-1].error,
        "warnings": chosen.warnings if chosen else [],
        "attempts": [_describe_attempt(a) for a in attempts],
    }


def _attempt(fmt: str, method: str, work: _Work) -> _Attempt:
    """Capture (once per method), save, and verify from disk; errors are recorded, not raised."""
    attempt = _Attempt(method, work.staging / f"{fmt}-{method}")
    attempt.folder.mkdir()
    path = attempt.folder / artifact_name(work.stem, fmt)
    try:
        with _timed(attempt, "capture", skip=method in work.captures):
            capture = work.capture(method)
        attempt.warnings = capture.warnings
        with _timed(attempt, "save"):
            _save(fmt, method, capture, path, work, attempt)
        attempt.written = True
        if work.options.verify:
            with _timed(attempt, "verify"):
                attempt.verification = _verify(fmt, method, path, work.plan, work.options)
            attempt.error = attempt.verification.error
        if fmt == "onnx-int8" and work.accuracy_data is not None and attempt.error is None:
            with _timed(attempt, "accuracy"):
                attempt.accuracy = _accuracy(path, work)
    except Exception as err:  # noqa: BLE001 - recorded in the manifest; the next method or format goes on
        attempt.error = _error_text(err)  # a half-written file stays in staging, which is removed
    return attempt


@contextlib.contextmanager
def _timed(attempt: _Attempt, step: str, skip: bool = False) -> Iterator[None]:
    """Record the wall time of ``step`` in the attempt (not when ``skip``: the work was done before)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        if not skip:
            attempt.seconds[step] = attempt.seconds.get(step, 0.0) + time.perf_counter() - start


def _save(fmt: str, method: str, capture: Capture, path: Path, work: _Work, attempt: _Attempt) -> None:
    """Write ``fmt`` at ``path``; with derived ONNX formats asked for, all ONNX formats share one export per method."""
    if fmt not in ONNX_FORMATS or (fmt == "onnx" and not work.shares_onnx):
        EXPORTERS[method].save(capture, fmt, path, work.plan.ctx)
    elif fmt == "onnx":
        copy_files(work.onnx_file(method).parent, path.parent)  # the source stays for the derived formats
    else:
        attempt.derived = DERIVED_FORMATS[fmt](work.onnx_file(method), path)


def _verify(fmt: str, method: str, path: Path, plan: _Plan, options: ExportOptions) -> Verification:
    atol, rtol = options.tolerance(fmt)
    if _native_io(fmt, method, plan):
        return verify_native(path, *plan.native_checks(), atol, rtol)
    ctx = plan.ctx
    return verify_artifact(fmt, path, ctx.input_names, ctx.output_names, plan.samples, plan.expected, atol, rtol)


def _accuracy(path: Path, work: _Work) -> dict[str, Any]:
    """The artifact's top-1 accuracy on ``accuracy_data`` beside the eager model's (a failure is recorded)."""
    ctx = work.plan.ctx
    runner = runtime_module("onnx").open_runner(
        str(path), ctx.input_names, ctx.output_names, providers=["CPUExecutionProvider"]
    )
    try:
        return accuracy_delta(ctx.adapter.module, lambda leaves: ctx.adapter(*leaves),
                              lambda leaves: runner([t.numpy() for t in leaves]), work.accuracy_data)  # fmt: skip
    except Exception as err:  # noqa: BLE001 - the artifact verified; a wrong dataset must not fail it
        return {"error": _error_text(err)}


def _native_io(fmt: str, method: str, plan: _Plan) -> bool:
    """Whether this artifact takes ``forward``'s own arguments (scripted TorchScript, inputs with lists)."""
    return fmt == "torchscript" and method == "script" and plan.ctx.native


def _error_text(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS] + " ..."


def _describe_attempt(attempt: _Attempt) -> dict[str, Any]:
    return {
        "method": attempt.method,
        "ok": attempt.ok,
        "error": attempt.error,
        "tracer_warnings": attempt.warnings,
        "seconds": {k: round(v, 4) for k, v in attempt.seconds.items()},
    }


def _manifest(
    plan: _Plan,
    options: ExportOptions,
    artifacts: list[dict[str, Any]],
    dirpath: Path,
    checkpoint: str | os.PathLike[str] | None,
) -> dict[str, Any]:
    ctx = plan.ctx
    return {
        **header(dirpath, checkpoint),
        "ok": all(a["ok"] for a in artifacts),
        "inputs": {
            "schema": {**plan.inputs.schema, "call": plan.call.to_json()},
            "names": list(ctx.input_names),
            "shapes": [list(t.shape) for t in ctx.args],
            "dtypes": [_dtype_name(t) for t in ctx.args],
            "dynamic_axes": {n: dims for n, dims in zip(ctx.input_names, ctx.input_dims) if dims},
        },
        "outputs": {
            "schema": plan.outputs.schema,
            "names": list(ctx.output_names),
            "shapes": [list(t.shape) for t in plan.expected[0]],
            "dtypes": [_dtype_name(t) for t in plan.expected[0]],
            "dynamic_axes": {n: dims for n, dims in zip(ctx.output_names, ctx.output_dims) if dims},
        },
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


def _dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")
