"""The call side of an artifact: forward's arguments bound by the manifest, input leaves checked, requirements.

``bind_arguments`` is forward's calling convention read from the manifest's ``call`` (the
export side binds samples with ``inspect.Signature.bind`` on the module itself). The leaf
checks say which input leaf is wrong and how, where a runtime's own message would not.
"""

from __future__ import annotations

import dataclasses
import importlib
import operator
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_deploy.artifact.manifest import dynamic_dims
from lightning_deploy.errors import LoadError, StructureError
from lightning_deploy.runtime.arrays import dtype_name, numpy_dtype

__all__ = ["Call", "LeafCheck", "bind_arguments", "check_shared", "import_requirements", "leaf_checks", "shared_axes"]


@dataclasses.dataclass(frozen=True)
class Call:
    """``forward``'s calling convention: its parameters, and which take ``*args``, ``**kwargs`` or positions only.

    The export side makes it from ``inspect.signature`` (``exporting/adapters.bind_sample``) and
    records it in the manifest (:meth:`to_json`); ``load()`` reads it back (:meth:`from_json`),
    where the signature is known only from the JSON. The two directions live here, together:
    :meth:`bind` maps a call's ``args``/``kwargs`` to ``{parameter: value}``, :meth:`split` maps
    them back to ``(args, kwargs)``.
    """

    parameters: tuple[str, ...]
    var_positional: str | None = None
    var_keyword: str | None = None
    positional_only: tuple[str, ...] = ()  # export side only: the manifest binds every parameter by position too

    @classmethod
    def from_json(cls, call: Mapping[str, Any]) -> Call:
        """The convention a manifest's ``inputs.schema.call`` records."""
        return cls(tuple(call["parameters"]), call["var_positional"], call["var_keyword"])

    def to_json(self) -> dict[str, Any]:
        """The manifest's ``call``: which names may be passed, and which take ``*args`` and ``**kwargs``."""
        return {"parameters": list(self.parameters), "var_positional": self.var_positional,
                "var_keyword": self.var_keyword}  # fmt: skip

    def bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """``{parameter: value}`` of a call, like ``inspect.Signature.bind``; :class:`StructureError` on a misfit."""
        params, var_pos, var_kw = self.parameters, self.var_positional, self.var_keyword
        arguments: dict[str, Any] = {}
        remaining = list(args)
        for name in params:
            if name == var_pos:
                arguments[name], remaining = tuple(remaining), []
            elif name != var_kw and remaining:
                arguments[name] = remaining.pop(0)
        if remaining:
            raise StructureError(f"Too many positional arguments: the model takes {list(params)}.")
        for name, value in kwargs.items():
            if name in arguments:
                raise StructureError(f"Argument {name!r} given twice.")
            if name in params and name not in (var_pos, var_kw):
                arguments[name] = value
            elif var_kw is not None:
                arguments.setdefault(var_kw, {})[name] = value
            else:
                raise StructureError(f"Unknown argument {name!r}: the model was exported with {list(params)}.")
        missing = [p for p in params if p not in arguments]
        if missing:
            raise StructureError(f"Missing argument(s) {missing}: the model was exported with {list(params)}.")
        return arguments

    def split(self, arguments: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """``(args, kwargs)`` that call ``forward`` with ``arguments`` (``{parameter: value}``).

        Positional-only and ``*args`` parameters go by position, ``**kwargs`` is expanded, every
        other parameter goes by keyword.
        """
        args = [arguments[n] for n in self.positional_only if n in arguments]
        if self.var_positional in arguments:
            args.extend(arguments[self.var_positional])
        special = {*self.positional_only, self.var_positional, self.var_keyword}
        kwargs = {n: v for n, v in arguments.items() if n not in special}
        if self.var_keyword in arguments:
            kwargs.update(arguments[self.var_keyword])
        return args, kwargs


def bind_arguments(call: Mapping[str, Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Map ``args``/``kwargs`` onto a manifest's ``call``: :meth:`Call.bind` of :meth:`Call.from_json`."""
    return Call.from_json(call).bind(args, kwargs)


def import_requirements(packages: Sequence[str], artifact: Path) -> None:
    """Import the operator libraries the artifact calls (``torchvision`` for ``torchvision::nms``).

    Importing registers their operators with torch; without it TorchScript fails with "Unknown
    builtin op". ``onnx-domain:`` entries name custom ONNX domains: nothing to import.
    """
    for package in packages:
        if package.startswith("onnx-domain:"):
            continue
        if not package.isidentifier():
            raise LoadError(f"{artifact.name}: the manifest's requires lists {package!r}, not a package name.")
        try:
            importlib.import_module(package)
        except ImportError as err:
            raise LoadError(
                f"{artifact.name} calls operators of {package!r}, which cannot be imported here ({err})."
                f" HINT: pip install {package}."
            ) from None


def leaf_checks(inputs: Mapping[str, Any]) -> list[LeafCheck]:
    """Per input leaf, its dtype and static dims, compiled once."""
    return [
        LeafCheck(name, dtype, shape, set(dynamic_dims(inputs, name)))
        for name, dtype, shape in zip(inputs["names"], inputs["dtypes"], inputs["shapes"])
    ]


def shared_axes(inputs: Mapping[str, Any]) -> list[tuple[str, list[tuple[int, int]]]]:
    """Dynamic axes that several input dims share (a batch): ``(axis, [(leaf index, dim), ...])``."""
    places: dict[str, list[tuple[int, int]]] = {}
    for index, name in enumerate(inputs["names"]):
        for dim, axis in dynamic_dims(inputs, name).items():
            places.setdefault(axis, []).append((index, dim))
    return [(axis, where) for axis, where in places.items() if len(where) > 1]


def check_shared(axis: str, places: list[tuple[int, int]], arrays: Sequence[Any], names: Sequence[str]) -> None:
    """Leaves that share a dynamic axis must agree on its size: the graph assumes it (a runtime's guard fails)."""
    first_index, first_dim = places[0]
    size = arrays[first_index].shape[first_dim]
    for index, dim in places[1:]:
        if arrays[index].shape[dim] != size:
            raise StructureError(
                f"inputs disagree on dim {axis!r}: it is {size} in input '{names[first_index]}' and"
                f" {arrays[index].shape[dim]} in input '{names[index]}'. HINT: give every input the same {axis} size."
            )


class LeafCheck:
    """One input leaf's dtype and static dims; calling it checks an array (a few hundred ns)."""

    __slots__ = ("dtype", "dynamic", "name", "ndim", "numpy_dtype", "pick_static", "shape", "static_sizes")

    def __init__(self, name: str, dtype: str, shape: list[int], dynamic: set[int]) -> None:
        self.name, self.dtype, self.shape, self.dynamic, self.ndim = name, dtype, shape, dynamic, len(shape)
        self.numpy_dtype = numpy_dtype(dtype)
        static = [d for d in range(len(shape)) if d not in dynamic]
        # itemgetter picks the static dims in C; comparing what it picks of the exported shape
        # with what it picks of an array's shape is the whole check.
        self.pick_static = operator.itemgetter(*static) if static else (lambda shape: ())
        self.static_sizes = self.pick_static(tuple(shape))

    def __call__(self, array: Any) -> None:
        """Raise :class:`StructureError` naming the leaf where ``array`` has another dtype or static dims."""
        dtype = array.dtype
        if dtype is not self.numpy_dtype and dtype != self.numpy_dtype and (got := dtype_name(array)) != self.dtype:
            raise StructureError(
                f"input '{self.name}': dtype {got}, the model was exported with {self.dtype}. HINT: cast it."
            )
        got = array.shape
        if len(got) != self.ndim or self.pick_static(tuple(got)) != self.static_sizes:
            wanted = ", ".join("*" if d in self.dynamic else str(s) for d, s in enumerate(self.shape))
            raise StructureError(
                f"input '{self.name}': shape {list(got)} does not fit the exported shape [{wanted}] (* = dynamic)."
                " HINT: only the dims marked * may change; export with dynamic_axes to free others."
            )
