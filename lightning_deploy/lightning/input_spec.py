"""``input_spec``: the YAML form of an input sample, turned into tensors.

A leaf spec is a mapping with ``shape`` (and optionally ``dtype``, default ``float32``,
and ``low``/``high`` for integer dtypes); a mapping of names to specs, or a list of specs,
nests. The top level follows ``input_sample``'s convention: a mapping of argument names
is passed as keyword arguments, a single leaf spec is the one positional argument.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from lightning_deploy.errors import ConfigurationError

__all__ = ["sample_from_spec"]

_EXAMPLE = "input_spec={'shape': [2, 3, 64, 64], 'dtype': 'float32'}"


def sample_from_spec(spec: Any, owner: str = "ModelExport", path: str = "input_spec") -> Any:
    """Random tensors shaped as ``spec`` says (seeded, so a preflight is repeatable).

    Raises:
        ConfigurationError: naming the entry of ``spec`` that is malformed.
    """
    generator = torch.Generator().manual_seed(0)
    return _build(spec, owner, path, generator)


def _build(spec: Any, owner: str, path: str, generator: torch.Generator) -> Any:
    if isinstance(spec, Mapping) and "shape" in spec:
        return _leaf(spec, owner, path, generator)
    if isinstance(spec, Mapping) and spec:
        return {k: _build(v, owner, f"{path}.{k}", generator) for k, v in spec.items()}
    if isinstance(spec, Sequence) and not isinstance(spec, str) and spec:
        return [_build(v, owner, f"{path}.{i}", generator) for i, v in enumerate(spec)]
    raise ConfigurationError(
        f"{owner}(input_spec=...): {path} must be a {{shape, dtype}} mapping, a mapping of such, or a list of such;"
        f" got {spec!r}. HINT: e.g. {_EXAMPLE}."
    )


def _leaf(spec: Mapping[str, Any], owner: str, path: str, generator: torch.Generator) -> torch.Tensor:
    unknown = set(spec) - {"shape", "dtype", "low", "high"}
    shape = spec["shape"]
    if unknown or not isinstance(shape, Sequence) or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ConfigurationError(
            f"{owner}(input_spec=...): {path} needs 'shape' as a list of positive ints (and only dtype, low,"
            f" high besides); got {dict(spec)!r}. HINT: e.g. {_EXAMPLE}."
        )
    dtype = getattr(torch, str(spec.get("dtype", "float32")), None)
    if not isinstance(dtype, torch.dtype):
        raise ConfigurationError(
            f"{owner}(input_spec=...): {path} has dtype {spec.get('dtype')!r}, which torch does not know."
            " HINT: use a torch dtype name such as float32, int64 or bool."
        )
    if dtype == torch.bool:
        return torch.rand(shape, generator=generator) > 0.5
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, generator=generator).to(dtype)
    return torch.randint(int(spec.get("low", 0)), int(spec.get("high", 10)), shape, generator=generator, dtype=dtype)
