"""Smoke-test an artifact through ``load()``'s own path and compare with eager, leaf by leaf.

Each artifact is opened as an :class:`~lightning_deploy.runtime.loading.ExportedModel` from the manifest
that will be written beside it, called with the model's structured arguments, and its
structured output (rebuilt by the saved schema) compared with the eager output: the same leaf
paths, and every leaf within tolerance. So "ok" means what a user of ``load()`` will get. It
runs at every check (``checks.py``: the export sample, the second shape, a synthetic sample
unlike the first, the user's data), records each (source, shapes, differences) and is ``ok``
only if every output leaf matches at all of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils._pytree as pytree

from lightning_deploy.artifact.manifest import ONNX_FORMATS
from lightning_deploy.errors import ExportError
from lightning_deploy.exporting.adapters import flatten_tree
from lightning_deploy.exporting.checks import Check
from lightning_deploy.exporting.compare import LeafDiff, named_leaves
from lightning_deploy.exporting.detections import compare_outputs
from lightning_deploy.runtime.arrays import to_numpy
from lightning_deploy.runtime.calling import Call
from lightning_deploy.runtime.model import ExportedModel

__all__ = ["Verification", "verify_artifact"]


@dataclasses.dataclass
class Verification:
    """The outcome of a smoke test."""

    ok: bool
    runtime: str
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    checked_shapes: list[list[list[int]]] = dataclasses.field(default_factory=list)
    error: str | None = None
    detections: dict[str, int] | None = None  # matched/unmatched counts, for outputs with boxes and scores
    vacuous: list[str] = dataclasses.field(default_factory=list)  # leaves whose scale is within the tolerance
    checks: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # one record per check, in order

    @property
    def checks_passed(self) -> int:
        """How many checks matched eager."""
        return sum(1 for check in self.checks if check["ok"])


def verify_artifact(
    entry: Mapping[str, Any],
    path: Path,
    io_manifest: Mapping[str, Any],
    call: Call,
    checks: Sequence[Check],
    atol: float,
    rtol: float,
    device: str = "cpu",
) -> Verification:
    """Open ``path`` as ``load()`` does, on ``device``, and compare its outputs with eager at each check.

    Args:
        entry: the artifact's manifest entry as far as it is known (``format``, ``io``, ``requires``).
        path: the artifact.
        io_manifest: the manifest's ``inputs`` and ``outputs`` (what ``load()`` reads).
        call: how the bound arguments are passed to ``forward`` (and so to the loaded model).
        checks: where each sample came from, its ``{parameter: value}`` and eager's output; the export sample first.
        atol: absolute tolerance.
        rtol: tolerance relative to each output leaf's largest magnitude.
        device: where the artifact runs (``load(device=...)``); inputs are moved there.

    Returns:
        The verification; failures to load or run are reported in ``error``, not raised. A call
        that fails at one check fails that check; the others still run and are recorded.

    """
    if entry["format"] in ONNX_FORMATS:
        import onnx  # only the verifier needs the checker; load() stays onnx-free

        onnx.checker.check_model(str(path))
    model = ExportedModel(io_manifest, entry, path, device=device)
    result = Verification(ok=True, runtime=model.runtime, max_abs_diff=0.0, max_rel_diff=0.0)
    for check in checks:
        shapes = [list(t.shape) for t in pytree.tree_leaves(check.arguments) if isinstance(t, torch.Tensor)]
        args, kwargs = call.split(check.arguments)
        result.checked_shapes.append(shapes)
        try:
            got = model(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - the artifact failed on this input: the check fails, named
            _record_failure(result, check.source, shapes, f"{type(err).__name__}: {err}")
            continue
        _accumulate(result, check.source, _compare_structures(result, got, check.expected, atol, rtol), shapes,
                    atol, rtol)  # fmt: skip
    return result


def _record_failure(result: Verification, source: str, shapes: list, text: str) -> None:
    """A check where the artifact raised: recorded; the first failure is the verification's error."""
    result.checks.append({"source": source, "shapes": shapes, "ok": False, "error": text[:2000]})
    if result.ok:
        result.ok = False
        result.error = f"{result.runtime} failed at the {source}, input shapes {shapes}: {text}"


def _compare_structures(result: Verification, got: Any, want: Any, atol: float, rtol: float) -> list[LeafDiff]:
    """The loaded model's structured output against eager's: the same leaf paths, then the leaves' values."""
    want_tree, want_leaves = flatten_tree(want, "out", "The model's output", ExportError)
    got_by_name = named_leaves(got, "out")
    names = list(want_tree.names)
    missing, extra = [n for n in names if n not in got_by_name], [n for n in got_by_name if n not in names]
    if missing or extra:
        reason = f"the structure differs from eager: leaves missing {missing[:5]}, unexpected {extra[:5]}"
        return [LeafDiff("out", False, float("inf"), float("inf"), 0.0, reason)]
    got_arrays = [to_numpy(got_by_name[n]) for n in names]
    return _compare_outputs(result, names, got_arrays, [to_numpy(w) for w in want_leaves], atol, rtol)


def _compare_outputs(
    result: Verification, names: Sequence[str], got: list[np.ndarray], want: list[np.ndarray], atol: float, rtol: float
) -> list[LeafDiff]:
    """Detection sets are compared order-insensitively, every other leaf element-wise; detection counts add up."""
    diffs, counts = compare_outputs(names, got, want, atol, rtol)
    if counts is not None:
        result.detections = result.detections or {"matched": 0, "unmatched": 0}
        for key, value in counts.items():
            result.detections[key] += value
    return diffs


def _accumulate(result: Verification, source: str, diffs: list[LeafDiff], shapes: list, atol: float,
                rtol: float) -> None:  # fmt: skip
    """Record one check and fold it into the totals; the first failing check's message is the error."""
    failed = [d for d in diffs if not d.ok]
    finite = [d for d in diffs if d.reason is None]
    record: dict[str, Any] = {
        "source": source,
        "shapes": shapes,
        "ok": not failed,
        "max_abs_diff": max((d.max_abs for d in finite), default=0.0),
        "max_rel_diff": max((d.max_rel for d in finite), default=0.0),
    }
    for diff in diffs:
        result.max_abs_diff = max(result.max_abs_diff, diff.max_abs)
        result.max_rel_diff = max(result.max_rel_diff, diff.max_rel)
        if diff.vacuous(atol, rtol) and diff.name not in result.vacuous:
            result.vacuous.append(diff.name)
    if failed:
        record["error"] = "; ".join(d.describe(atol, rtol) for d in failed)
        if result.ok:
            result.ok = False
            result.error = f"mismatch in {result.runtime} at the {source}, input shapes {shapes}: {record['error']}"
    result.checks.append(record)
