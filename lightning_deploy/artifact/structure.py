"""A schema compiled into the functions that take a value apart into leaves and build one from them.

``load()`` flattens a user's structured value into the artifact's tensor leaves, checking
every container against the schema (naming the place that differs), and rebuilds the outputs:
a dataclass or a ``ModelOutput`` as its own class where that class is already imported,
everything else keyed as a :class:`Record` (attribute access by field, key access by field name
or position). numpy only.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from lightning_deploy.artifact.schema import (
    KINDS,
    SCHEMA_VERSION,
    check_node,
    check_schema_version,
    kind_of,
    leaf_names,
    walk,
)
from lightning_deploy.errors import StructureError

# KINDS, SCHEMA_VERSION, check_node, check_schema_version, leaf_names: where release 0.1 had them.
__all__ = ["KINDS", "SCHEMA_VERSION", "Record", "Structure", "check_node", "check_schema_version", "leaf_names"]

Flattener = Callable[[Any, list], None]
Builder = Callable[[Any], Any]


class Record:
    """A structured output whose class is not at hand: fields by attribute, by key and by position.

    ``out.logits``, ``out["logits"]`` and ``out[0]`` are the same value, as on a Hugging Face
    ``ModelOutput``; iterating yields the field names, like a mapping's keys.
    """

    _fields: tuple[str, ...] = ()

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __getitem__(self, key: str | int) -> Any:
        if isinstance(key, int):
            return self.__dict__[self._fields[key]]
        return self.__dict__[key]

    def __iter__(self) -> Any:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, key: object) -> bool:
        return key in self._fields

    def keys(self) -> list[str]:
        """The field names, in order."""
        return list(self._fields)

    def values(self) -> list[Any]:
        """The field values, in order."""
        return [self.__dict__[f] for f in self._fields]

    def items(self) -> list[tuple[str, Any]]:
        """``(field, value)`` pairs, in order."""
        return [(f, self.__dict__[f]) for f in self._fields]

    def __repr__(self) -> str:
        inner = ", ".join(f"{f}={type(v).__name__}" for f, v in self.items())
        return f"{type(self).__name__}({inner})"


def _resolve_class(node: Mapping[str, Any]) -> Callable[..., Any]:
    """The recorded class, or a look-alike with the same fields.

    The original class is used only when its module is already imported (no import is
    triggered by a manifest) and it can be built from its fields by keyword (a named tuple
    positionally; a dataclass only when every recorded field is one of its init fields, since
    the class here may differ from the one exported); otherwise a :class:`Record` subclass of
    the same name is made.
    """
    module_name, _, qualname = node["class"].rpartition(".")
    target: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        target = getattr(target, part, None)
    fields = list(node["fields"])
    name = qualname.rsplit(".", 1)[-1] or "Record"
    if kind_of(node).positional:
        if isinstance(target, type) and list(getattr(target, "_fields", ())) == fields:
            return target
        return collections.namedtuple(name, fields)  # type: ignore[misc]
    if isinstance(target, type) and dataclasses.is_dataclass(target):
        if set(fields) <= {f.name for f in dataclasses.fields(target) if f.init}:
            return target
    return type(name, (Record,), {"_fields": tuple(fields), "__module__": __name__})


class Structure:
    """A schema node compiled once into a flattening and a rebuilding function.

    Args:
        node: the schema node (see the module docstring).
        root: the name used for the whole value in error messages.
        leaf: where leaves arrive as something else than arrays (JSON's nested lists), called
            with each tensor leaf's name and value and returns the array to use; it raises
            :class:`StructureError` for a value it cannot take.

    Examples:
        >>> s = Structure({"kind": "dict", "keys": ["x"], "items": [{"kind": "tensor", "name": "x"}]})
        >>> s.flatten({"x": 1.0})
        [1.0]
        >>> s.unflatten([2.0])
        {'x': 2.0}

    """

    def __init__(
        self, node: Mapping[str, Any], root: str = "input", leaf: Callable[[str, Any], Any] | None = None
    ) -> None:
        check_node(node, root)
        self.node = node
        self._leaf = leaf
        self.names = leaf_names(node)
        self._classes: dict[int, Callable[..., Any]] = {}
        self._flatten = walk(node, self._flattener, root)
        self._build = walk(node, self._builder)

    def flatten(self, value: Any) -> list:
        """The tensor leaves of ``value``, checked against the schema."""
        leaves: list = []
        self._flatten(value, leaves)
        return leaves

    def unflatten(self, leaves: Sequence[Any]) -> Any:
        """Rebuild the structured value from its tensor leaves."""
        if len(leaves) != len(self.names):
            raise StructureError(f"Expected {len(self.names)} leaves, got {len(leaves)}.")
        return self._build(iter(leaves))

    def class_of(self, node: Mapping[str, Any]) -> Callable[..., Any]:
        """The class :meth:`unflatten` builds for ``node``, a record node of this schema's tree."""
        return self._classes[id(node)]

    def _flattener(self, node: Mapping[str, Any], path: str, folded: list[tuple[Any, Flattener]]) -> Flattener:
        """The function that takes a value of ``node`` apart into ``out``, checking it (from its children's)."""
        kind = kind_of(node)
        if kind.layout == "leaf":
            return _flatten_leaf(path) if self._leaf is None else _convert_leaf(node["name"], self._leaf)
        if kind.layout == "none":
            return _flatten_none(path)
        labels, children = [label for label, _ in folded], [child for _, child in folded]
        if kind.layout == "sequence":
            return _flatten_sequence(path, (list, tuple, *kind.types), children)
        if kind.layout == "mapping":
            return _flatten_mapping(path, labels, children)
        return _flatten_record(path, node["kind"], labels, children)

    def _builder(self, node: Mapping[str, Any], path: str, folded: list[tuple[Any, Builder]]) -> Builder:
        """The function that builds a value of ``node`` from the leaves (from its children's)."""
        kind = kind_of(node)
        if kind.layout == "leaf":
            return next
        if kind.layout == "none":
            return lambda leaves: None
        children = [child for _, child in folded]
        if kind.layout == "sequence":
            rebuild = kind.rebuild
            return lambda leaves: rebuild(build(leaves) for build in children)
        if kind.layout == "mapping":
            keys = node["keys"]
            return lambda leaves: {k: build(leaves) for k, build in zip(keys, children)}
        cls = self._classes[id(node)] = _resolve_class(node)
        fields = node["fields"]
        if kind.positional:
            return lambda leaves: cls(*(build(leaves) for build in children))
        return lambda leaves: cls(**{f: build(leaves) for f, build in zip(fields, children)})


def _flatten_leaf(path: str) -> Flattener:
    def flatten(value: Any, out: list) -> None:
        # arrays and tensors (both have __dlpack__) skip the isinstance against Mapping, an ABC and slow
        if (
            type(value) is not np.ndarray
            and not hasattr(value, "__dlpack__")
            and (value is None or isinstance(value, (Mapping, list, tuple, str)))
        ):
            raise StructureError(
                f"{path}: expected an array or tensor, got {type(value).__name__}."
                " HINT: pass the same structure as the model's forward."
            )
        out.append(value)

    return flatten


def _convert_leaf(name: str, convert: Callable[[str, Any], Any]) -> Flattener:
    def flatten(value: Any, out: list) -> None:
        out.append(convert(name, value))

    return flatten


def _flatten_none(path: str) -> Flattener:
    def flatten(value: Any, out: list) -> None:
        if value is not None:
            raise StructureError(
                f"{path}: the model was exported with None here, got {type(value).__name__}."
                " HINT: pass None (the exported graph has no input for it)."
            )

    return flatten


def _flatten_sequence(path: str, accepted: tuple[type, ...], children: list[Flattener]) -> Flattener:
    def flatten(value: Any, out: list) -> None:
        if not isinstance(value, accepted):
            raise StructureError(f"{path}: expected a list or tuple, got {type(value).__name__}.")
        if len(value) != len(children):
            raise StructureError(
                f"{path}: expected {len(children)} items, got {len(value)}."
                " HINT: the exported graph has a fixed number of items; export with a sample"
                " of that length."
            )
        for child, item in zip(children, value):
            child(item, out)

    return flatten


def _flatten_mapping(path: str, keys: list, children: list[Flattener]) -> Flattener:
    key_set = frozenset(keys)

    def flatten(value: Any, out: list) -> None:
        if type(value) is not dict and not isinstance(value, Mapping):
            raise StructureError(f"{path}: expected a dict, got {type(value).__name__}.")
        if value.keys() != key_set:
            missing = [k for k in keys if k not in value]
            extra = [k for k in value if k not in key_set]
            raise StructureError(
                f"{path}: keys do not match the exported model: missing {missing}, extra {extra}."
                f" HINT: pass exactly the keys {keys}."
            )
        for key, child in zip(keys, children):
            child(value[key], out)

    return flatten


def _flatten_record(path: str, kind: str, fields: list[str], children: list[Flattener]) -> Flattener:
    def flatten(value: Any, out: list) -> None:
        if isinstance(value, Mapping):
            getter = value.__getitem__
            present = set(value)
        else:
            getter = lambda f: getattr(value, f)  # noqa: E731
            present = {f for f in fields if hasattr(value, f)}
        missing = [f for f in fields if f not in present]
        if missing:
            raise StructureError(
                f"{path}: expected a {kind} with fields {fields}, missing {missing} (got {type(value).__name__})."
            )
        for field, child in zip(fields, children):
            child(getter(field), out)

    return flatten
