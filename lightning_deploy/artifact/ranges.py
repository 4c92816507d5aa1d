"""The sizes an artifact accepts on its dynamic dims: the manifest entry's ``ranges``.

``{leaf: {dim: [min, max]}}``, ``max`` null where there is no largest, recorded only for the
dims whose sizes are limited. Where the limits come from (``docs/files.md``): the ``.pt2``
program's own guards, ExecuTorch's memory plan (its ``bounds``), and sizes the model itself
could not run at (every format). ``load()`` refuses a size outside before the runtime sees it,
naming the range. Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["Ranges", "fits", "intersect", "leaf_spans", "span_text"]

Ranges = dict[str, dict[str, list[int | None]]]


def intersect(*ranges: Mapping[str, Mapping[str, Sequence[int | None]]] | None) -> Ranges:
    """The sizes every one of ``ranges`` accepts: the largest minimum and the smallest maximum per dim."""
    merged: Ranges = {}
    for given in ranges:
        for leaf, dims in (given or {}).items():
            for dim, (low, high) in dims.items():
                old_low, old_high = merged.setdefault(leaf, {}).get(str(dim), [1, None])
                highs = [h for h in (old_high, high) if h is not None]
                merged[leaf][str(dim)] = [max(old_low, low), min(highs) if highs else None]
    return merged


def leaf_spans(ranges: Mapping[str, Any] | None, leaf: str) -> list[tuple[int, int, int | None]]:
    """``(dim, min, max)`` of one input leaf's limited dims, in dim order."""
    dims = (ranges or {}).get(leaf) or {}
    return sorted((int(dim), low, high) for dim, (low, high) in dims.items())


def span_text(low: int, high: int | None) -> str:
    """A range as people read it: ``>= 33``, ``<= 64``, ``33..512``."""
    if high is None:
        return f">= {low}"
    return f"<= {high}" if low <= 1 else f"{low}..{high}"


def fits(ranges: Mapping[str, Mapping[str, Sequence[int | None]]], names: Sequence[str],
         shapes: Sequence[Sequence[int]]) -> bool:  # fmt: skip
    """Whether leaves of these shapes are inside ``ranges`` on every limited dim."""
    for name, shape in zip(names, shapes):
        for dim, (low, high) in ranges.get(name, {}).items():
            size = shape[int(dim)]
            if size < low or (high is not None and size > high):
                return False
    return True
