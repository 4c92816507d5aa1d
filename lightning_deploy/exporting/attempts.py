"""One format's attempts: each method (and variant) captured, saved and verified in turn; the best one kept.

A failure of one attempt is recorded in the manifest and the next method goes on; an attempt
is clean when it verified without capture warnings, and the first clean one ends the search
(for int8 with two clean variants, the faster one is kept: ``int8.py``).
"""

from __future__ import annotations

import contextlib
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lightning_deploy.artifact.entry import ArtifactEntry
from lightning_deploy.artifact.files import copy_files, install_order, sha256_file
from lightning_deploy.artifact.manifest import artifact_name, json_safe
from lightning_deploy.artifact.ranges import Ranges, intersect
from lightning_deploy.exporting.methods import Capture, write
from lightning_deploy.exporting.methods import declared as declared_function
from lightning_deploy.exporting.methods.int8 import accuracy, fastest, pass_options, variants
from lightning_deploy.exporting.methods.torch_export import unbacked_output_dims
from lightning_deploy.exporting.options import methods_for
from lightning_deploy.exporting.plan import Plan
from lightning_deploy.exporting.progress import StepLog
from lightning_deploy.exporting.requires import required_packages
from lightning_deploy.exporting.verifying.verify import Verification, verify_artifact
from lightning_deploy.exporting.work import Attempt, Work
from lightning_deploy.formats import by_name
from lightning_deploy.runtime.backends import runtime_module

__all__ = ["error_text", "export_format", "unbacked_sizes", "verification_device"]

_MAX_ERROR_CHARS = 2000
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# FlatAdapter.forward(*tensors)'s arguments, as torch.export's messages name them
_FLAT_ARGUMENT = re.compile(r"\btensors_(\d+)\b|L\['tensors'\]\[(\d+)\]")


def export_format(fmt: str, work: Work) -> tuple[dict[str, Any], Path | None]:
    """Try the format's methods in order; describe the chosen file(s), still staged (their folder is returned)."""
    plan, stem = work.plan, work.stem
    attempts: list[Attempt] = []
    for method in methods_for(fmt, work.options.method):
        for variant in variants(fmt, work):
            attempts.append(_attempt(fmt, method, work, variant))
            if attempts[-1].clean and variant != "static":  # a clean static int8 still meets dynamic
                break
        if any(a.clean for a in attempts):
            break
    clean = [a for a in attempts if a.clean]
    chosen = fastest(fmt, clean, work) if len(clean) > 1 else next(iter(clean), None)
    chosen = chosen or next((a for a in attempts if a.ok), None)
    chosen = chosen or next((a for a in attempts if a.written), None)
    name = artifact_name(stem, fmt)
    files = [p.name for p in install_order(chosen.folder)] if chosen else []
    verification = chosen.verification if chosen else None
    vacuous = verification.vacuous if verification else []
    notes = [_vacuous_warning(fmt, vacuous)] if vacuous else []
    if chosen and chosen.device_note:
        notes.append(chosen.device_note)
    derived = dict(chosen.derived) if chosen and chosen.derived else None
    bounds = derived.pop("bounds", None) if derived else None
    if derived:
        derived.pop("ranges", None)  # the entry's own key (below)
    if bounds is not None and bounds != plan.ctx.leaf_bounds():
        notes.append(
            f"{fmt}: its memory is planned for smaller sizes than asked ({plan.ctx.leaf_bounds()}): {bounds};"
            " load() refuses bigger inputs. HINT: give smaller executorch_bounds, or split bigger inputs."
        )
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    notice = by_name(fmt).notice  # said in the entry and under the report's table, not as a Python warning
    entry = ArtifactEntry(
        format=fmt,
        path=name,
        method=chosen.method if chosen else None,
        io="native" if chosen and _native_io(fmt, chosen.method, plan) else "flat",
        bounds=bounds,
        ranges=(chosen.ranges or None) if chosen else None,
        requires=chosen.requires if chosen else [],
        device=(chosen.device if chosen else None) or plan.device,
        ok=bool(chosen and chosen.ok),
        verified=bool(verification and verification.ok),
        sha256=sha256_file(chosen.folder / name) if chosen else None,
        files=files,
        side_files_sha256={f: sha256_file(chosen.folder / f) for f in files if f != name},
        runtime=verification.runtime if verification else None,
        max_abs_diff=json_safe(verification.max_abs_diff) if verification else None,
        max_rel_diff=json_safe(verification.max_rel_diff) if verification else None,
        checked_shapes=verification.checked_shapes if verification else [],
        checks=verification.checks if verification else [],
        checks_passed=verification.checks_passed if verification else 0,
        detections=verification.detections if verification else None,
        vacuous=bool(vacuous),
        vacuous_leaves=vacuous,
        tolerance=dict(zip(("atol", "rtol"), work.options.tolerance(fmt))),
        derived=derived or None,
        accuracy=chosen.accuracy if chosen else None,
        error=chosen.error if chosen else _most_informative(attempts),
        warnings=(chosen.warnings if chosen else []) + notes + ([notice] if chosen and notice else []),
        attempts=[_describe_attempt(a) for a in attempts],
    )
    return entry.to_json(), (chosen.folder if chosen else None)


# An exporter naming the operator it cannot export says what blocks the format; a later fallback's
# failure ("Failed to get source" or "Lambda aren't supported" from scripting) says only that the
# fallback failed too.
_UNSUPPORTED = re.compile(r"unsupported|not supported", re.IGNORECASE)
_OPERATOR = re.compile(r"\boperator\b", re.IGNORECASE)


def _most_informative(attempts: list[Attempt]) -> str | None:
    """The error of a format no attempt wrote: an unsupported-operator message first, else the first method's."""
    errors = [a.error for a in attempts if a.error]
    named = (e for e in errors if _UNSUPPORTED.search(e) and _OPERATOR.search(e))
    return next(named, errors[0] if errors else None)


def unbacked_sizes(work: Work, artifacts: list[dict[str, Any]]) -> None:
    """Output sizes torch.export found set by values: recorded; a trace they never changed in is not ok.

    Where this export made a ``torch.export`` capture, its unbacked output dims depend on the
    input's values. Every check that changed such a size tested whether a trace baked it in;
    where none did, a traced artifact may hold the export sample's size as a constant, so it
    is not ok, and the error says which sample to give.
    """
    capture = work.captures.get("export")
    if not isinstance(capture, Capture):
        return
    ctx = work.plan.ctx
    found = unbacked_output_dims(capture.program, ctx.output_names)
    work.contract = work.contract.with_data_dependent(found)
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


def _attempt(fmt: str, method: str, work: Work, variant: str | None = None) -> Attempt:
    """Capture (once per method), save, and verify from disk; errors are recorded, not raised."""
    suffix = f"-{variant}" if variant else ""
    attempt = Attempt(method, work.staging / f"{fmt}-{method}{suffix}", variant=variant)
    attempt.folder.mkdir()
    path = attempt.folder / artifact_name(work.stem, fmt)
    label = f"{fmt} ({method}{', ' + variant if variant else ''})"
    try:
        with _timed(attempt, "capture", work.steps, label, skip=method in work.captures):
            capture = work.capture(method)
        attempt.warnings = capture.warnings
        with _timed(attempt, "compile" if by_name(fmt).compiled else "save", work.steps, label):
            _save(fmt, method, capture, path, work, attempt)
        attempt.written = True
        attempt.ranges = _accepted_ranges(attempt.derived, work.plan.ranges)
        attempt.requires = required_packages(fmt, path)
        if work.options.verify:
            attempt.device, attempt.device_note = verification_device(fmt, work.plan.device)
            with _timed(attempt, "verify", work.steps, label):
                attempt.verification = _verify(fmt, method, path, attempt.device, attempt.requires, attempt.ranges,
                                               work)  # fmt: skip
            attempt.error = attempt.verification.error
        if by_name(fmt).lower_precision and work.accuracy_data is not None and attempt.error is None:
            with _timed(attempt, "accuracy", work.steps, label):
                attempt.accuracy = _accuracy(fmt, path, work)
    except Exception as err:  # noqa: BLE001 - recorded in the manifest; the next method or format goes on
        # a half-written file stays in staging, which is removed
        attempt.error = error_text(err, work.plan.ctx.input_names)
    return attempt


@contextlib.contextmanager
def _timed(attempt: Attempt, step: str, steps: StepLog, label: str, skip: bool = False) -> Iterator[None]:
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


def _save(fmt: str, method: str, capture: Capture, path: Path, work: Work, attempt: Attempt) -> None:
    """Write ``fmt`` at ``path``: by the method's exporter, by a pass over the file it derives from, or a copy of it.

    Where formats derived from ``fmt`` were asked for too, ``fmt``'s file is saved once per
    method and copied here, and each derived format starts from that same file.
    """
    declared = by_name(fmt)
    if declared.derived_by:
        derive = declared_function(declared.derived_by)
        source = work.source_file(declared.derived_from, method)
        attempt.derived = derive(source, path, **pass_options(attempt, work))
    elif fmt in work.shared_sources:
        copy_files(work.source_file(fmt, method).parent, path.parent)  # the source stays for the derived formats
    else:
        attempt.derived = write(fmt, method, capture, path, work.plan.ctx)


def verification_device(fmt: str, device: str) -> tuple[str, str | None]:
    """The device to verify ``fmt`` on, and a note when it is not the module's.

    The module's device, unless the runtime cannot run there (ONNX Runtime without its CUDA
    provider): then the CPU, and the entry's ``device`` and a warning say so.
    """
    runtime = runtime_module(fmt)
    if device == "cpu" or runtime.has_device(device):
        return device, None
    return "cpu", f"{fmt}: verified on the CPU, not on {device} where the model lives: {runtime.MISSING_DEVICE_HINT}"


def _accepted_ranges(derived: dict[str, Any] | None, model_ranges: Ranges) -> Ranges:
    """The sizes an artifact accepts: what its file says, within the sizes the model itself runs at (``plan.ranges``).

    A ``.pt2`` program's guards give ``ranges``; an ExecuTorch program's planned ``bounds`` are maxima.
    """
    derived = derived or {}
    bounds = derived.get("bounds") or {}
    planned = {leaf: {dim: [1, bound] for dim, bound in dims.items()} for leaf, dims in bounds.items()}
    return intersect(model_ranges, derived.get("ranges"), planned)


def _verify(fmt: str, method: str, path: Path, device: str, requires: list[str], ranges: Ranges,
            work: Work) -> Verification:  # fmt: skip
    """Verify through ``load()``'s path on ``device``, with the manifest's inputs and outputs as written."""
    native = _native_io(fmt, method, work.plan)
    entry = {"format": fmt, "io": "native" if native else "flat", "requires": requires, "device": device,
             "ranges": ranges, "files": [p.name for p in install_order(path.parent)]}  # fmt: skip
    atol, rtol = work.options.tolerance(fmt)
    checks = work.plan.checks_within(native, ranges)
    return verify_artifact(entry, path, work.contract, checks, atol, rtol, device)


def _vacuous_warning(fmt: str, leaves: list[str]) -> str:
    return (
        f"{fmt}: the comparison of {leaves[:5]} proves nothing: their largest eager value is within the"
        " tolerance of zero (an untrained head, outputs near 1e-16), so any output near zero would match."
        " HINT: verify with trained weights or inputs that make these outputs non-trivial."
    )


def _native_io(fmt: str, method: str, plan: Plan) -> bool:
    """Whether this artifact takes ``forward``'s own arguments (scripted TorchScript, inputs with lists)."""
    return by_name(fmt).native_io and method == "script" and plan.ctx.native


def error_text(err: BaseException, input_names: tuple[str, ...] = ()) -> str:
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


def _describe_attempt(attempt: Attempt) -> dict[str, Any]:
    return {
        "method": attempt.method,
        **({"variant": attempt.variant} if attempt.variant else {}),
        **({"ms_per_call": attempt.ms_per_call} if attempt.ms_per_call is not None else {}),
        "ok": attempt.ok,
        "error": attempt.error,
        "tracer_warnings": attempt.warnings,
        "seconds": {k: round(v, 4) for k, v in attempt.seconds.items()},
    }


def _accuracy(fmt: str, path: Path, work: Work) -> dict[str, Any]:
    """The int8 accuracy delta; a failure is recorded: the artifact verified, a wrong dataset must not fail it."""
    try:
        return accuracy(fmt, path, work)
    except Exception as err:  # noqa: BLE001 - recorded in the entry's accuracy
        return {"error": error_text(err)}
