"""Dynamic dimensions: which input dims may vary, and the samples that exercise them.

A size-1 (or 0) dimension is specialised away by tracing and by ``torch.export``, so a
dynamic dim of size below 2 in the export sample is grown to 2 for the export and checked at
its original size. Otherwise the second sample changes every dynamic dim by a step that
keeps its divisibility (64 -> 96, 224 -> 256, batch 2 -> 3).

A list in the inputs (torchvision detection's list of images) has a fixed length in a flat
graph; an artifact that takes the model's own arguments (scripted TorchScript) is also checked
with every list cut to one item and grown by one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from lightning_deploy.errors import ConfigurationError

__all__ = [
    "BATCH_AXIS",
    "DEFAULT_BATCH_BOUND",
    "DynamicDims",
    "export_and_check_samples",
    "longest_list",
    "list_length_samples",
    "resolve_bounds",
    "resolve_dynamic_dims",
]

BATCH_AXIS = "batch"
DynamicDims = list[dict[int, str]]  # per input tensor leaf: {dim: axis name}
DEFAULT_BATCH_BOUND = 64  # the batch's largest size in a bounded artifact (ExecuTorch) unless told


def resolve_bounds(
    dims: DynamicDims,
    own: Sequence[Sequence[Sequence[int]]],
    data: Sequence[Sequence[Sequence[int]]],
    requested: Mapping[str, int] | None,
    owner: str = "export",
) -> dict[str, int]:
    """Each dynamic axis's largest size in a bounded artifact: ``{axis name: size}``.

    ``own`` are the input leaves' shapes at the verification's own samples (the export
    sample's first), ``data`` at the user's data checks. An axis the user bounded keeps that
    bound (a data check past it fails, naming it); otherwise the batch gets
    :data:`DEFAULT_BATCH_BOUND` and any other axis twice its export size, raised to the largest
    size any check gives it. The runtime plans memory for these sizes at load, so they are
    kept modest rather than generous.

    Raises:
        ConfigurationError: for a given bound below a size the verification's own samples need.

    """
    export_sizes: dict[str, int] = {}
    needed = {"own": dict[str, int](), "all": dict[str, int]()}
    for kind, shapes in (("own", own), ("all", [*own, *data])):
        for leaves in shapes:
            for shape, leaf_dims in zip(leaves, dims):
                for dim, axis in leaf_dims.items():
                    if dim < len(shape):  # a data check of another rank fails on its own; no size from it
                        export_sizes.setdefault(axis, shape[dim])
                        needed[kind][axis] = max(needed[kind].get(axis, 0), shape[dim])
    requested = requested or {}
    for axis, bound in requested.items():
        if bound < needed["own"].get(axis, 0):
            raise ConfigurationError(
                f"{owner}(executorch_bounds={dict(requested)!r}): {axis!r} is bounded by {bound}, but the"
                f" verification's own samples give it {needed['own'][axis]} (the export sample's size and a"
                f" changed one). HINT: bound {axis!r} by at least {needed['own'][axis]}."
            )
    return {
        axis: requested.get(axis, max(DEFAULT_BATCH_BOUND if axis == BATCH_AXIS else 2 * size, needed["all"][axis]))
        for axis, size in export_sizes.items()
    }


def resolve_dynamic_dims(
    names: Sequence[str],
    tensors: Sequence[torch.Tensor],
    dynamic_batch: bool,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None,
    owner: str = "export",
) -> DynamicDims:
    """Map ``dynamic_batch`` and ``dynamic_axes`` onto the input leaves.

    A key of ``dynamic_axes`` names a leaf or a prefix of leaves (``images`` covers
    ``images.0``, ``images.1``).

    Raises:
        ConfigurationError: for a key that names no input leaf, a dim beyond a leaf's rank,
            or a batch dim on a 0-d leaf.

    """
    dims: DynamicDims = [{} for _ in names]
    if dynamic_batch:
        for i, (name, tensor) in enumerate(zip(names, tensors)):
            if tensor.dim() == 0:
                raise ConfigurationError(
                    f"{owner}(dynamic_batch=True): input '{name}' is 0-dimensional and has no batch dim."
                    " HINT: pass dynamic_batch=False (and name dynamic dims in dynamic_axes)."
                )
            dims[i][0] = BATCH_AXIS
    for key, axes in (dynamic_axes or {}).items():
        matched = [i for i, n in enumerate(names) if n == key or n.startswith(key + ".")]
        if not matched:
            raise ConfigurationError(
                f"{owner}(dynamic_axes=...): {key!r} names no input; the inputs are {list(names)}."
                " HINT: use one of those names or a prefix of them."
            )
        for i in matched:
            for dim, axis in axes.items():
                if dim >= tensors[i].dim():
                    raise ConfigurationError(
                        f"{owner}(dynamic_axes=...): input '{names[i]}' has {tensors[i].dim()} dims,"
                        f" so dim {dim} ({axis!r}) does not exist. HINT: count dims from 0."
                    )
                dims[i][dim] = axis
    return dims


def export_and_check_samples(
    tensors: Sequence[torch.Tensor], dims: DynamicDims
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """The sample to export with and the second sample to verify at.

    Sizes are decided per axis name, so leaves that share an axis (a batch) stay consistent.
    """
    sizes: dict[str, int] = {}
    for tensor, leaf_dims in zip(tensors, dims):
        for dim, axis in leaf_dims.items():
            sizes.setdefault(axis, tensor.shape[dim])
    export_sizes = {axis: max(size, 2) for axis, size in sizes.items()}
    check_sizes = {axis: size if size < 2 else _next_size(size) for axis, size in sizes.items()}
    export = tuple(_resized(t, d, export_sizes) for t, d in zip(tensors, dims))
    check = tuple(_resized(t, d, check_sizes) for t, d in zip(tensors, dims))
    return export, check


def _next_size(size: int) -> int:
    """A different size with the same power-of-two divisibility (up to half the size)."""
    step = size & -size
    while step > size // 2 and step > 1:
        step //= 2
    return size + step


def _resized(tensor: torch.Tensor, dims: Mapping[int, str], sizes: Mapping[str, int]) -> torch.Tensor:
    """``tensor`` with each dynamic dim cut or extended (by mirrored copies) to its size."""
    for dim, axis in dims.items():
        target = sizes[axis]
        if tensor.shape[dim] == 0:
            raise ConfigurationError(
                f"An input has size 0 in its dynamic dim {dim} ({axis!r}); export needs real data there."
                " HINT: give a sample with at least one element in every dimension."
            )
        while tensor.shape[dim] < target:
            tensor = torch.cat([tensor, tensor.flip(dim)], dim)
        tensor = tensor.narrow(dim, 0, target)
    return tensor.contiguous()


def longest_list(value: Any) -> int:
    """The length of the longest list in ``value`` (nested dicts, lists and tuples); 0 for none.

    Written by hand, as :func:`_relisted` is: ``torch.utils._pytree`` maps leaves and keeps every
    container's length, and these two are about the lengths of lists (native I/O's samples).
    """
    if isinstance(value, list):
        return max([len(value), *(longest_list(v) for v in value)])
    if isinstance(value, Mapping):
        return max((longest_list(v) for v in value.values()), default=0)
    if isinstance(value, tuple):
        return max((longest_list(v) for v in value), default=0)
    return 0


def list_length_samples(export_arguments: Mapping[str, Any], check_arguments: Mapping[str, Any]) -> list[dict]:
    """More samples: every list cut to its first item (where one is longer), and the check sample's grown by one.

    The added item is the export sample's first, so a grown list also mixes both shapes.
    """
    longer = {k: _relisted(v, export_arguments[k], grow=True) for k, v in check_arguments.items()}
    if longest_list(export_arguments) < 2:
        return [longer]
    return [{k: _relisted(v, v, grow=False) for k, v in export_arguments.items()}, longer]


def _relisted(value: Any, export_value: Any, grow: bool) -> Any:
    """``value`` with each list cut to one item, or grown by ``export_value``'s first item."""
    if isinstance(value, list):
        items = [_relisted(v, e, grow) for v, e in zip(value, export_value)]
        return items + export_value[:1] if grow else items[:1]
    if isinstance(value, Mapping):
        return type(value)((k, _relisted(v, export_value[k], grow)) for k, v in value.items())
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_relisted(v, e, grow) for v, e in zip(value, export_value))
    return value
