"""Compare exported outputs with eager ones, leaf by leaf, each against its own scale.

A leaf matches when ``max|got - want| <= atol + rtol * max|want|`` (DESIGN.md: random-weight
networks have huge outputs, so an element-wise relative tolerance would fail at float32
precision). NaNs match NaNs in the same places. numpy only, so ``load`` can share it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

__all__ = ["LeafDiff", "compare_leaves"]


@dataclasses.dataclass(frozen=True)
class LeafDiff:
    """How one output leaf compared."""

    name: str
    ok: bool
    max_abs: float
    max_rel: float
    scale: float
    reason: str | None = None

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
    return [_compare(name, np.asarray(g), np.asarray(w), atol, rtol) for name, g, w in zip(names, got, want)]


def _compare(name: str, got: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> LeafDiff:
    if got.shape != want.shape:
        return LeafDiff(
            name, False, float("inf"), float("inf"), 0.0, f"shape {list(got.shape)}, expected {list(want.shape)}"
        )
    if want.size == 0:
        return LeafDiff(name, True, 0.0, 0.0, 0.0)
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
