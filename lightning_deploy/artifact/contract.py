"""The manifest's ``inputs`` and ``outputs``, typed: the I/O contract every artifact of one export shares.

The counterpart of :class:`~lightning_deploy.artifact.entry.ArtifactEntry` for the I/O: leaf
names, dtypes, shapes, dynamic dims and the axes several leaves share, the schema trees and
``forward``'s calling convention. :meth:`IOContract.from_manifest` is the one place the JSON is
read and checked (``validate.check_io``, the schema version, every node, names against the
trees); ``runtime/``, ``serving/``, ``tracking/`` and the verifiers read attributes, never keys.
The export side builds one from its plan (:meth:`IOContract.from_json`) and writes it back with
:meth:`IOContract.to_json`. Standard library only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_deploy.artifact.schema import SCHEMA_VERSION, check_node, check_schema_version, leaf_names
from lightning_deploy.artifact.validate import check_io
from lightning_deploy.errors import LoadError, StructureError

__all__ = ["Call", "IOContract", "Leaf", "Tensors"]


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One tensor leaf: its name, dtype and exported shape, and its dynamic dims ``{dim: axis name}``.

    Outputs of manifests written before output shapes were recorded have ``dtype``/``shape`` ``None``.
    """

    name: str
    dtype: str | None
    shape: tuple[int, ...] | None
    dynamic: Mapping[int, str] = dataclasses.field(default_factory=dict)

    def static_dims(self) -> list[int]:
        """The dims whose size the artifact fixes."""
        return [d for d in range(len(self.shape or ())) if d not in self.dynamic]


@dataclasses.dataclass(frozen=True)
class Tensors:
    """One side of the contract: its leaves in the artifact's order and the schema tree that holds them."""

    leaves: tuple[Leaf, ...]
    tree: Mapping[str, Any]
    schema_version: int = SCHEMA_VERSION
    data_dependent: Mapping[str, list[int]] = dataclasses.field(default_factory=dict)  # outputs: value-set dims

    @property
    def names(self) -> list[str]:
        """The leaf names, in the artifact's order."""
        return [leaf.name for leaf in self.leaves]

    def shared_axes(self) -> list[tuple[str, list[tuple[int, int]]]]:
        """Dynamic axes that several dims share (a batch): ``(axis, [(leaf index, dim), ...])``."""
        places: dict[str, list[tuple[int, int]]] = {}
        for index, leaf in enumerate(self.leaves):
            for dim, axis in leaf.dynamic.items():
                places.setdefault(axis, []).append((index, dim))
        return [(axis, where) for axis, where in places.items() if len(where) > 1]

    def to_json(self, call: Call | None = None) -> dict[str, Any]:
        """The manifest's section (``inputs`` with ``call``, or ``outputs``)."""
        schema = {"schema_version": self.schema_version, "tree": self.tree}
        section = {
            "schema": {**schema, "call": call.to_json()} if call is not None else schema,
            "names": self.names,
            "shapes": [list(leaf.shape) if leaf.shape is not None else None for leaf in self.leaves],
            "dtypes": [leaf.dtype for leaf in self.leaves],
            "dynamic_axes": {
                leaf.name: {str(d): axis for d, axis in leaf.dynamic.items()} for leaf in self.leaves if leaf.dynamic
            },
        }
        return section if call is not None else {**section, "data_dependent": dict(self.data_dependent)}

    @classmethod
    def from_json(cls, section: Mapping[str, Any]) -> Tensors:
        """The typed view of a manifest section (checked by :meth:`IOContract.from_manifest` where read from disk)."""
        names = section["names"]
        shapes = section.get("shapes") or [None] * len(names)
        dtypes = section.get("dtypes") or [None] * len(names)
        axes = section.get("dynamic_axes") or {}
        leaves = tuple(
            Leaf(name, dtype, tuple(shape) if shape is not None else None, _dims(axes.get(name)))
            for name, dtype, shape in zip(names, dtypes, shapes)
        )
        schema = section["schema"]
        return cls(leaves, schema["tree"], schema.get("schema_version", SCHEMA_VERSION),
                   dict(section.get("data_dependent") or {}))  # fmt: skip


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

    @property
    def plain(self) -> bool:
        """``forward(a, b, ...)`` without ``*args``/``**kwargs``: a positional call binds by one zip."""
        return self.var_positional is None and self.var_keyword is None

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


@dataclasses.dataclass(frozen=True)
class IOContract:
    """What every artifact of one export takes and returns: ``inputs``, ``outputs`` and ``forward``'s ``call``."""

    inputs: Tensors
    outputs: Tensors
    call: Call

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], artifact: Path) -> IOContract:
        """Read and check the manifest's I/O once; :class:`LoadError` naming what is wrong (``artifact`` names it).

        A manifest may have been edited: the types, the schema version, every schema node and
        the leaf names against the trees are checked here, so nothing later meets a bad key.
        """
        check_io(manifest, artifact)
        for side, root in (("inputs", "input"), ("outputs", "output")):
            check_schema_version(manifest[side]["schema"])
            check_node(manifest[side]["schema"]["tree"], root)
            if leaf_names(manifest[side]["schema"]["tree"]) != manifest[side]["names"]:
                raise LoadError(f"{artifact}: the manifest's schema and leaf names disagree. HINT: re-export.")
        return cls.from_json(manifest)

    @classmethod
    def from_json(cls, io: Mapping[str, Any]) -> IOContract:
        """The typed view of ``{"inputs": ..., "outputs": ...}`` as the manifest holds them."""
        return cls(Tensors.from_json(io["inputs"]), Tensors.from_json(io["outputs"]),
                   Call.from_json(io["inputs"]["schema"]["call"]))  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """The manifest's ``inputs`` and ``outputs``."""
        return {"inputs": self.inputs.to_json(self.call), "outputs": self.outputs.to_json()}

    def with_data_dependent(self, found: Mapping[str, Sequence[int]]) -> IOContract:
        """The contract with output dims set by the input's values (torch.export's unbacked sizes) made dynamic."""
        by_name = {leaf.name: leaf for leaf in self.outputs.leaves}
        recorded = dict(self.outputs.data_dependent)
        for name, dims in found.items():
            recorded[name] = sorted({*recorded.get(name, []), *dims})
            leaf = by_name[name]
            by_name[name] = dataclasses.replace(leaf, dynamic={**leaf.dynamic, **{d: f"{name}_{d}" for d in dims}})
        outputs = dataclasses.replace(self.outputs, leaves=tuple(by_name.values()), data_dependent=recorded)
        return dataclasses.replace(self, outputs=outputs)


def _dims(axes: Any) -> dict[int, str]:
    """A leaf's dynamic dims: JSON keys are strings (``"0"``); one that is no dim, edited by hand, is skipped."""
    return {int(dim): str(axis) for dim, axis in (axes or {}).items() if str(dim).isdigit()}
