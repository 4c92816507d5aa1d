"""The sizes each dynamic axis accepts, found by asking: the program's guards, or the model itself.

An artifact's entry records them as ``ranges`` (``artifact/ranges.py``); here they are found,
per axis (leaves sharing an axis change together), by bisection over a yes/no question about
one size, the other axes at the export sample's sizes:

- a ``.pt2`` program's own guards (``torch_export.py``): torch.export's ``range_constraints``
  say ``[2, inf]`` for resnet18's height, yet the program refuses 32 (``1 + (H - 1) // 32 != 1``,
  a last feature map of 1x1) and takes a batch of 1 (measured, torch 2.14.1); the guards only
  read sizes, so meta tensors ask them without computing anything;
- the eager model, where it fails at the synthetic check (``plan.py``): inception_v3 needs 75
  pixels; the smallest size it runs at is what every artifact then accepts.

Bisection assumes the accepted sizes are one interval around the export sample's size, which
holds for both (a guard or a kernel that needs a minimum); a model that also needs a divisor
still runs at the minimum found, and any size that fails later is refused by its runtime.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence

from lightning_deploy.artifact.ranges import Ranges
from lightning_deploy.exporting.dynamic import DynamicDims

__all__ = ["LARGEST_PROBE", "axis_minimums", "axis_sizes", "leaf_ranges", "probe_axis"]

LARGEST_PROBE = 2**31 - 1  # a size past any real input: accepted there means no largest size

Accepts = Callable[[int], bool]  # one axis's size -> whether it is accepted


def axis_sizes(shapes: Sequence[Sequence[int]], dims: DynamicDims) -> dict[str, int]:
    """Each dynamic axis's size in the given leaves' shapes (its first leaf's)."""
    sizes: dict[str, int] = {}
    for shape, leaf_dims in zip(shapes, dims):
        for dim, axis in leaf_dims.items():
            sizes.setdefault(axis, shape[dim])
    return sizes


def probe_axis(
    accepts: Accepts, size: int, largest: int | None = LARGEST_PROBE, smallest: int = 1
) -> tuple[int, int | None]:
    """``(min, max)`` of the sizes ``accepts`` takes around ``size`` (accepted); ``max`` ``None`` past ``largest``.

    The minimum is looked for from ``smallest`` up; ``largest=None`` asks nothing above ``size``
    (the maximum is then unknown, left ``None``).
    """
    low = bisect.bisect_left(range(smallest, size + 1), True, key=accepts) + smallest
    if largest is None or accepts(largest):
        return low, None
    refused = bisect.bisect_left(range(size, largest + 1), True, key=lambda s: not accepts(s))
    return low, size + refused - 1


def leaf_ranges(spans: Mapping[str, tuple[int, int | None]], names: Sequence[str], dims: DynamicDims) -> Ranges:
    """Per-axis ``(min, max)`` as the entry's ``ranges``: each leaf's dims of a limited axis."""
    limited = {axis: [low, high] for axis, (low, high) in spans.items() if low > 1 or high is not None}
    ranges = {name: {str(dim): limited[axis] for dim, axis in leaf_dims.items() if axis in limited}
              for name, leaf_dims in zip(names, dims)}  # fmt: skip
    return {name: found for name, found in ranges.items() if found}


def axis_minimums(ranges: Mapping[str, Mapping[str, Sequence[int | None]]], names: Sequence[str],
                  dims: DynamicDims) -> dict[str, int]:  # fmt: skip
    """The smallest size each axis may take under ``ranges`` (the largest minimum of its leaves' dims)."""
    least: dict[str, int] = {}
    for name, leaf_dims in zip(names, dims):
        for dim, axis in leaf_dims.items():
            span = ranges.get(name, {}).get(str(dim))
            if span is not None:
                least[axis] = max(least.get(axis, 1), span[0])
    return least
