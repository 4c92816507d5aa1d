"""Smoke-test an artifact: load it from disk in its own runtime, compare with eager.

The artifact runs at every check sample (the export shape and the second shape); it is
``ok`` only if every output leaf matches at all of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils._pytree as pytree

from lightning_deploy.adapters import flatten_tree
from lightning_deploy.compare import LeafDiff, compare_detections, compare_leaves, detection_groups
from lightning_deploy.errors import ExportError
from lightning_deploy.manifest import ONNX_FORMATS
from lightning_deploy.runtimes import runtime_module

__all__ = ["Verification", "verify_artifact", "verify_native"]


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


def verify_artifact(
    fmt: str,
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    samples: Sequence[Sequence[torch.Tensor]],
    expected: Sequence[Sequence[torch.Tensor]],
    atol: float,
    rtol: float,
) -> Verification:
    """Run ``path`` at each sample and compare with the eager ``expected`` outputs.

    ``checked_shapes`` holds, per sample, the shapes of the input leaves. Failures to load
    or run are reported in ``error``, not raised.
    """
    runtime = runtime_module(fmt)
    onnx_format = fmt in ONNX_FORMATS
    if onnx_format:
        import onnx  # only the verifier needs the checker; load() stays onnx-free

        onnx.checker.check_model(str(path))
    cpu = {"providers": ["CPUExecutionProvider"]} if onnx_format else {}  # the reference runtime
    runner = runtime.open_runner(str(path), input_names, output_names, **cpu)
    result = Verification(ok=True, runtime=runtime.RUNTIME, max_abs_diff=0.0, max_rel_diff=0.0)
    for sample, want in zip(samples, expected):
        shapes = [list(t.shape) for t in sample]
        got = runner([_as(runtime.ARRAYS, t) for t in sample])
        diffs = _compare_outputs(result, output_names, [_numpy(g) for g in got], [_numpy(w) for w in want], atol, rtol)
        result.checked_shapes.append(shapes)
        _accumulate(result, diffs, shapes, atol, rtol)
    return result


def verify_native(
    path: Path,
    samples: Sequence[Mapping[str, Any]],
    expected: Sequence[Any],
    atol: float,
    rtol: float,
) -> Verification:
    """Run a TorchScript artifact that takes ``forward``'s own arguments at each sample.

    ``samples`` are ``{parameter: value}``; ``expected`` the eager outputs. The outputs are
    flattened and compared leaf by leaf by name, so a list of detections may have any length.
    """
    from lightning_deploy.runtimes.torchscript import RUNTIME, open_native

    run = open_native(str(path))
    result = Verification(ok=True, runtime=RUNTIME, max_abs_diff=0.0, max_rel_diff=0.0)
    for sample, want in zip(samples, expected):
        shapes = [list(t.shape) for t in pytree.tree_leaves(sample) if isinstance(t, torch.Tensor)]
        got_tree, got = flatten_tree(run(**sample), "out", "The artifact's output", ExportError)
        want_tree, want_leaves = flatten_tree(want, "out", "The model's output", ExportError)
        if got_tree.names == want_tree.names:
            got_arrays, want_arrays = [_numpy(g) for g in got], [_numpy(w) for w in want_leaves]
            diffs = _compare_outputs(result, want_tree.names, got_arrays, want_arrays, atol, rtol)
        else:
            reason = f"output leaves {list(got_tree.names)}, expected {list(want_tree.names)}"
            diffs = [LeafDiff("out", False, float("inf"), float("inf"), 0.0, reason)]
        result.checked_shapes.append(shapes)
        _accumulate(result, diffs, shapes, atol, rtol)
    return result


def _compare_outputs(
    result: Verification, names: Sequence[str], got: list[np.ndarray], want: list[np.ndarray], atol: float, rtol: float
) -> list[LeafDiff]:
    """Detection sets are compared order-insensitively, every other leaf element-wise."""
    if len(got) != len(want):
        return compare_leaves(names, got, want, atol, rtol)
    groups = detection_groups(names)
    grouped = {i for indices in groups.values() for i in indices}
    plain = [i for i in range(len(names)) if i not in grouped]
    diffs = compare_leaves([names[i] for i in plain], [got[i] for i in plain], [want[i] for i in plain], atol, rtol)
    if groups:
        result.detections = result.detections or {"matched": 0, "unmatched": 0}
    for indices in groups.values():
        match = compare_detections(
            [names[i] for i in indices], [got[i] for i in indices], [want[i] for i in indices], atol, rtol
        )
        diffs.extend(match.diffs)
        result.detections["matched"] += match.matched
        result.detections["unmatched"] += match.unmatched
    return diffs


def _accumulate(result: Verification, diffs: list[LeafDiff], shapes: list, atol: float, rtol: float) -> None:
    for diff in diffs:
        result.max_abs_diff = max(result.max_abs_diff, diff.max_abs)
        result.max_rel_diff = max(result.max_rel_diff, diff.max_rel)
    failed = [d for d in diffs if not d.ok]
    if failed and result.ok:
        result.ok = False
        result.error = f"mismatch in {result.runtime} at input shapes {shapes}: " + "; ".join(
            d.describe(atol, rtol) for d in failed
        )


def _as(kind: str, tensor: torch.Tensor) -> Any:
    return tensor.detach().cpu().numpy() if kind == "numpy" else tensor.detach().cpu()


def _numpy(value: Any) -> np.ndarray:
    if not isinstance(value, torch.Tensor):
        return np.asarray(value)
    value = value.detach().cpu()
    return (value.float() if value.dtype == torch.bfloat16 else value).numpy()  # numpy has no bfloat16
