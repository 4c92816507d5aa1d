"""The samples every artifact is checked at, and what their eager outputs say about output sizes.

The export sample alone proves little, and so does the second sample (``dynamic.py``): it is the
first grown by mirrored copies, so a count that a trace baked in (detections kept over a
threshold, ``len(instances)``) comes out the same at both. Every artifact is also checked at:

- a **synthetic sample unlike the first**: every dynamic dim shrunk, and new values (floats
  drawn uniformly over each leaf's own range, integers and booleans shuffled, so token ids and
  masks stay valid). Sizes that depend on values change there;
- the **user's data**: ``export(check_samples=...)``, or the first ``check_batches`` batches of the
  validation loader (``ModelExport``), taken by the ``(input_sample, target)`` convention or by the
  LightningModule's own ``export_sample(batch)``.

An output dim whose size differs between checks is dynamic; one that differs between two
checks with the same input shapes depends on the input's values (``data_dependent``).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lightning_deploy.errors import ConfigurationError, ExportError
from lightning_deploy.exporting.dynamic import DynamicDims

__all__ = [
    "EXPORT_SOURCE",
    "GENERATED_CHECKS",
    "SECOND_SOURCE",
    "SYNTHETIC_SOURCE",
    "Check",
    "GeneratedCheck",
    "labelled_samples",
    "output_dims",
    "samples_from_batches",
    "synthetic_sample",
]

EXPORT_SOURCE = "export sample"
SECOND_SOURCE = "second sample (dynamic dims changed)"
SYNTHETIC_SOURCE = "synthetic sample (dynamic dims smaller, new values)"


@dataclasses.dataclass(frozen=True)
class Check:
    """One sample every artifact is run at: where it came from, forward's arguments, eager's output."""

    source: str
    arguments: dict[str, Any]
    expected: Any


def synthetic_sample(
    tensors: Sequence[torch.Tensor], dims: DynamicDims, least: Mapping[str, int], seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """The export sample's leaves with every dynamic dim shrunk (:func:`smaller_size`) and new values.

    Sizes are decided per axis name, so leaves sharing an axis stay consistent; none goes below
    ``least`` (axis -> size: what the model or an artifact needs) or above the export sample's. Deterministic.
    """
    generator = torch.Generator().manual_seed(seed)
    sizes: dict[str, int] = {}
    for tensor, leaf_dims in zip(tensors, dims):
        for dim, axis in leaf_dims.items():
            sizes.setdefault(axis, max(smaller_size(tensor.shape[dim]), least.get(axis, 1)))
    made = []
    for tensor, leaf_dims in zip(tensors, dims):
        for dim, axis in leaf_dims.items():
            tensor = tensor.narrow(dim, 0, min(sizes[axis], tensor.shape[dim]))
        made.append(_new_values(tensor, generator))
    return tuple(made)


@dataclasses.dataclass(frozen=True)
class GeneratedCheck:
    """A check made from the export sample by a rule, run beside the export and second samples.

    ``make`` takes the export sample's flat tensor leaves, their dynamic dims (``{dim: axis}``
    per leaf) and the smallest size each axis may take (``{axis: size}``, often empty: the
    model's or an artifact's minimum, ``exporting/ranges.py``) and returns new leaves of the same
    structure. Where the model cannot run on them (its own limit), the smallest sizes it runs at
    are looked for and the check made there; failing that it is skipped and said, never failed.
    Adding a check is one entry of :data:`GENERATED_CHECKS` (``docs/design.md``'s recipe).
    """

    source: str
    make: Callable[[Sequence[torch.Tensor], DynamicDims, Mapping[str, int]], tuple[torch.Tensor, ...]]


def smaller_size(size: int) -> int:
    """About a quarter of ``size``, a multiple of the power of two dividing it (to 32): 224 -> 32, 256 -> 64, 16 -> 4.

    Never below that divisor, so that a model needing sizes divisible by 32 still runs.
    """
    divisor = min(size & -size, 32) if size > 0 else 1
    while divisor > max(1, size // 4):
        divisor //= 2
    return max(divisor, (size // 4) // divisor * divisor)


def _new_values(tensor: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Values unlike ``tensor``'s but of its kind: floats uniform over its range, other dtypes shuffled."""
    source = tensor.detach().cpu()
    if source.numel() == 0:
        return tensor.clone()
    if source.is_floating_point():
        low, high = source.float().min(), source.float().max()
        if low == high:
            high = low + 1
        drawn = torch.rand(source.shape, generator=generator) * (high - low) + low
        return drawn.to(tensor.dtype).to(tensor.device)
    order = torch.randperm(source.numel(), generator=generator)
    return source.flatten()[order].reshape(source.shape).to(tensor.device)


def labelled_samples(check_samples: Sequence[Any] | Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    """``export(check_samples=...)`` as ``(source, sample)`` pairs: a list is labelled by index, a mapping by key.

    Raises:
        ConfigurationError: for anything else (a bare tensor, a generator).
    """
    if check_samples is None:
        return []
    if isinstance(check_samples, Mapping):
        return [(str(label), sample) for label, sample in check_samples.items()]
    if isinstance(check_samples, (list, tuple)):
        return [(f"check_samples[{i}]", sample) for i, sample in enumerate(check_samples)]
    raise ConfigurationError(
        f"export(check_samples=...): expected a list of samples, got {type(check_samples).__name__}."
        " HINT: pass [sample, ...], each in input_sample's convention (e.g. [(x1,), (x2,)])."
    )


def samples_from_batches(
    module: nn.Module, batches: Iterable[Any], limit: int
) -> tuple[list[tuple[str, Any]], str | None]:
    """Forward's inputs from the first ``limit`` batches, with the reason where none could be taken.

    A module with ``export_sample(batch)`` (a LightningModule that knows its batches) decides;
    otherwise a batch must be ``(input_sample, target)``, as ``accuracy_data`` is.
    """
    convert = getattr(module, "export_sample", None)
    found: list[tuple[str, Any]] = []
    for index, batch in enumerate(itertools.islice(batches, limit)):  # no batch past the last one is loaded
        if callable(convert):
            sample = convert(batch)
        elif isinstance(batch, (tuple, list)) and len(batch) == 2:
            sample = batch[0]
        else:
            return [], (
                f"a validation batch is a {type(batch).__name__}, not (input_sample, target), and"
                f" {type(module).__name__} has no export_sample(batch) method. HINT: define"
                " export_sample(batch) returning forward's inputs, or pass check_batches=0."
            )
        found.append((f"validation batch {index}", sample))
    return found, None


def output_dims(
    names: Sequence[str], outputs: Sequence[Sequence[torch.Tensor]], input_shapes: Sequence[Sequence[Sequence[int]]]
) -> tuple[DynamicDims, dict[str, list[int]]]:
    """Which output dims vary between checks (dynamic), and which vary at equal input shapes (data-dependent).

    ``outputs`` and ``input_shapes`` are per check, the export sample first.

    Raises:
        ExportError: for an output whose rank changes between checks.
    """
    dynamic: DynamicDims = []
    data_dependent: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        shapes = [tuple(check[index].shape) for check in outputs]
        if len({len(s) for s in shapes}) > 1:
            raise ExportError(f"Output '{name}' changes its number of dims between inputs: shapes {shapes[:4]}.")
        rank = len(shapes[0])
        dynamic.append({d: f"{name}_{d}" for d in range(rank) if len({s[d] for s in shapes}) > 1})
        by_input: dict[tuple, set[tuple]] = {}
        for inputs, shape in zip(input_shapes, shapes):
            by_input.setdefault(tuple(map(tuple, inputs)), set()).add(shape)
        dims = sorted({d for group in by_input.values() for d in range(rank) if len({s[d] for s in group}) > 1})
        if dims:
            data_dependent[name] = dims
    return dynamic, data_dependent


GENERATED_CHECKS: list[GeneratedCheck] = [GeneratedCheck(SYNTHETIC_SOURCE, synthetic_sample)]
"""The checks made by rule, in the order they run (after the export and second samples, before the user's data)."""
