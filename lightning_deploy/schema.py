"""A plain-JSON description of nested inputs and outputs, readable without torch.

The export side builds these nodes from ``torch.utils._pytree`` tree specs (see
``adapters.py``). This module is the runtime side: it walks a schema to flatten a user's
structured value into the artifact's tensor leaves and to rebuild structured outputs from
them. It is written by hand on purpose: ``load`` of an ONNX artifact must work where torch
(and so ``_pytree``) is not installed.

Node kinds::

    {"kind": "tensor", "name": "batch.mask"}
    {"kind": "none"}
    {"kind": "list" | "tuple", "items": [node, ...]}
    {"kind": "dict", "keys": [key, ...], "items": [node, ...]}
    {"kind": "namedtuple" | "dataclass" | "record", "class": "module.QualName",
     "fields": [name, ...], "items": [node, ...]}

``record`` (schema version 2) is any other pytree node: transformers' ``ModelOutput`` (only
the fields that were set), or a type registered with ``register_pytree_node`` (fields named by
its keys, or by child index where it has none). ``load`` rebuilds a dataclass or a
``ModelOutput`` as its own class where that class is already imported, and everything else as
a :class:`Record`: attribute access by field, key access by field name or position.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from lightning_deploy.errors import LoadError, StructureError

__all__ = ["KINDS", "SCHEMA_VERSION", "Record", "Structure", "check_node", "check_schema_version", "leaf_names"]

SCHEMA_VERSION = 2
KNOWN_SCHEMA_VERSIONS = (1, 2)  # 2 added the record kind

KINDS = ("tensor", "none", "list", "tuple", "dict", "namedtuple", "dataclass", "record")
Flattener = Callable[[Any, list], None]
Builder = Callable[[Any], Any]


def check_schema_version(schema: Mapping[str, Any]) -> None:
    """Reject a schema written by an unknown (newer) version of this package."""
    version = schema.get("schema_version")
    if version not in KNOWN_SCHEMA_VERSIONS:
        raise LoadError(
            f"Unknown schema_version {version!r}; this lightning-deploy reads {KNOWN_SCHEMA_VERSIONS}."
            " HINT: upgrade lightning-deploy to the version that wrote the manifest."
        )


def leaf_names(node: Mapping[str, Any]) -> list[str]:
    """Names of the tensor leaves under ``node``, in flattening order."""
    if node["kind"] == "tensor":
        return [node["name"]]
    names: list[str] = []
    for child in node.get("items", ()):
        names.extend(leaf_names(child))
    return names


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
    if node["kind"] == "namedtuple":
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
        self._flatten = self._compile_flatten(node, root)
        self._build = self._compile_build(node)

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

    def _compile_flatten(self, node: Mapping[str, Any], path: str) -> Flattener:
        kind = node["kind"]
        if kind == "tensor":
            return _flatten_leaf(path) if self._leaf is None else _convert_leaf(node["name"], self._leaf)
        if kind == "none":
            return _flatten_none(path)
        items = node["items"]
        if kind in ("list", "tuple"):
            children = [self._compile_flatten(c, f"{path}.{i}") for i, c in enumerate(items)]
            return _flatten_sequence(path, children)
        keys = node["keys"] if kind == "dict" else node["fields"]
        children = [self._compile_flatten(c, f"{path}.{k}") for k, c in zip(keys, items)]
        if kind == "dict":
            return _flatten_mapping(path, keys, children)
        return _flatten_record(path, kind, keys, children)

    def _compile_build(self, node: Mapping[str, Any]) -> Builder:
        kind = node["kind"]
        if kind == "tensor":
            return next
        if kind == "none":
            return lambda leaves: None
        children = [self._compile_build(c) for c in node["items"]]
        if kind == "list":
            return lambda leaves: [build(leaves) for build in children]
        if kind == "tuple":
            return lambda leaves: tuple(build(leaves) for build in children)
        if kind == "dict":
            keys = node["keys"]
            return lambda leaves: {k: build(leaves) for k, build in zip(keys, children)}
        cls = self._classes[id(node)] = _resolve_class(node)
        fields = node["fields"]
        if kind == "namedtuple":
            return lambda leaves: cls(*(build(leaves) for build in children))
        return lambda leaves: cls(**{f: build(leaves) for f, build in zip(fields, children)})


def check_node(node: Any, path: str) -> None:
    """Raise :class:`LoadError` unless ``node`` (and everything under it) is a well-formed schema node.

    A schema comes from a manifest that may have been edited; this keeps a bad one from
    surfacing later as a ``KeyError`` or ``TypeError`` inside the compiled functions.
    """

    def fail(problem: str) -> None:
        raise LoadError(f"{path}: the manifest's schema {problem}. HINT: the manifest is damaged; re-export.")

    if not isinstance(node, Mapping) or node.get("kind") not in KINDS:
        fail(f"has a node that is not one of the kinds {KINDS}: {str(node)[:80]}")
    kind = node["kind"]
    if kind == "tensor":
        if not isinstance(node.get("name"), str):
            fail("has a tensor without a name")
        return
    if kind == "none":
        return
    items = node.get("items")
    if not isinstance(items, list):
        fail(f"has a {kind} without a list of items")
    if kind == "dict":
        keys = node.get("keys")
        hashable = isinstance(keys, list) and all(isinstance(k, (str, int)) for k in keys)
        if not hashable or len(keys) != len(items) or len(set(keys)) != len(keys):
            fail("has a dict whose keys do not match its items")
    elif kind not in ("list", "tuple"):
        fields = node.get("fields")
        # a record's fields may be child indices ("0"); a named tuple's and a dataclass's are identifiers
        named = isinstance(fields, list) and all(
            isinstance(f, str) and (kind == "record" or f.isidentifier()) for f in fields
        )
        if not named or len(fields) != len(items) or len(set(fields)) != len(fields):
            fail(f"has a {kind} whose fields do not match its items")
        if not isinstance(node.get("class"), str):
            fail(f"has a {kind} without a class name")
    for index, child in enumerate(items):
        check_node(child, f"{path}.{index}")


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


def _flatten_sequence(path: str, children: list[Flattener]) -> Flattener:
    def flatten(value: Any, out: list) -> None:
        if not isinstance(value, (list, tuple)):
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
