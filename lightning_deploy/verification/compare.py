"""Compare exported outputs with eager ones, leaf by leaf, each against its own scale.

A leaf matches when ``max|got - want| <= atol + rtol * max|want|`` (docs/design.md, "Tolerance":
random-weight networks have huge outputs, so an element-wise relative tolerance would fail at
float32 precision). NaNs match NaNs in the same places; boolean leaves match where at most ``rtol`` of
their elements differ. numpy only, so ``load`` can share it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lightning_deploy.artifact.schema import NODE_KINDS, leaf_path
from lightning_deploy.artifact.structure import Record

__all__ = ["LeafDiff", "compare_leaf", "compare_leaves", "named_leaves"]


@dataclasses.dataclass(frozen=True)
class LeafDiff:
    """How one output leaf compared."""

    name: str
    ok: bool
    max_abs: float
    max_rel: float
    scale: float
    reason: str | None = None

    def vacuous(self, atol: float, rtol: float) -> bool:
        """Whether the comparison proved nothing: the tolerance admits an all-zero output (e.g. scale ~1e-16)."""
        return self.reason is None and self.scale <= atol + rtol * self.scale

    def describe(self, atol: float, rtol: float) -> str:
        """One line naming the leaf, the differences and the tolerances."""
        if self.reason:
            return f"output '{self.name}': {self.reason}"
        return (
            f"output '{self.name}': max abs diff {self.max_abs:.3g} > atol {atol:g} + rtol {rtol:g}"
            f" * scale {self.scale:.3g} (max diff relative to scale {self.max_rel:.3g})"
        )


def compare_leaves(
    names: Sequence[str], got: Sequence[np.ndarray], want: Sequence[np.ndarray], atol: float, rtol: float
) -> list[LeafDiff]:
    """Compare each pair of leaves; returns one :class:`LeafDiff` per name."""
    if len(got) != len(want):
        return [LeafDiff("*", False, float("inf"), float("inf"), 0.0, f"{len(got)} outputs, expected {len(want)}")]
    return [compare_leaf(name, np.asarray(g), np.asarray(w), atol, rtol) for name, g, w in zip(names, got, want)]


def named_leaves(value: Any, prefix: str) -> dict[str, Any]:
    """The leaves of a structured value by path (``out.logits``, ``out.parts.0.first``), ``None`` left out.

    The paths are those that ``torch.utils._pytree`` key paths give on the export side: dict keys,
    sequence indices, named tuple and dataclass fields, and a :class:`Record`'s or mapping's keys.
    Walked by hand, not by pytree: this side runs without torch, and it walks the value a call
    returned, not the schema, so that a rebuilt output whose leaves moved is caught.
    """
    found: dict[str, Any] = {}
    # the Python types of the registered sequence kinds (a new kind's too), walked by index
    sequences = tuple(
        {t for kind in NODE_KINDS.values() if kind.layout == "sequence" for t in (list, tuple, *kind.types)}
    )
    _collect(value, prefix, found, sequences)
    return found


def _collect(value: Any, path: str, found: dict[str, Any], sequences: tuple[type, ...]) -> None:
    """Walks the value itself, not the schema: a rebuilt output whose leaves moved is named where they are."""
    if value is None:
        return
    if isinstance(value, (Record, Mapping)):
        children: Any = value.items()
    elif isinstance(value, tuple) and hasattr(value, "_fields"):
        children = zip(value._fields, value)
    elif isinstance(value, sequences):
        children = enumerate(value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        children = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
    else:
        found[path] = value
        return
    for key, child in children:
        _collect(child, leaf_path(path, key), found, sequences)


def compare_leaf(name: str, got: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> LeafDiff:
    """One leaf against its own scale (booleans by the share of elements that differ); shapes must agree."""
    if got.shape != want.shape:
        return LeafDiff(
            name, False, float("inf"), float("inf"), 0.0, f"shape {list(got.shape)}, expected {list(want.shape)}"
        )
    if want.size == 0:
        return LeafDiff(name, True, 0.0, 0.0, 0.0)
    if want.dtype == np.bool_ and got.dtype == np.bool_:
        return _compare_binary(name, got, want, rtol)
    got64, want64 = got.astype(np.float64), want.astype(np.float64)
    nan_got, nan_want = np.isnan(got64), np.isnan(want64)
    if not np.array_equal(nan_got, nan_want):
        return LeafDiff(name, False, float("nan"), float("nan"), 0.0, "NaNs in different places")
    finite = ~nan_want
    diff = np.abs(got64[finite] - want64[finite])
    max_abs = float(diff.max(initial=0.0))
    scale = float(np.abs(want64[finite]).max(initial=0.0))
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    ok = bool(max_abs <= atol + rtol * scale)
    return LeafDiff(name, ok, max_abs, max_rel, scale)


def _compare_binary(name: str, got: np.ndarray, want: np.ndarray, rtol: float) -> LeafDiff:
    """Boolean leaves (thresholded masks) match where at most ``rtol`` of their elements differ.

    A value at the threshold (a mask's edge, pasted by bilinear interpolation) flips with float
    rounding, and a flipped element differs by the whole scale: no element-wise tolerance fits.
    ``max_rel`` is the share of elements that differ; ``max_abs`` 1 where any does.
    """
    share = float(np.count_nonzero(got != want)) / want.size
    reason = None if share <= rtol else f"{share:.3g} of its elements differ (more than rtol {rtol:g})"
    return LeafDiff(name, share <= rtol, float(share > 0), share, 1.0, reason)
