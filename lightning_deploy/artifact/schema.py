"""A plain-JSON description of nested inputs and outputs, and the one walker over it; readable without torch.

The export side builds these nodes from ``torch.utils._pytree`` trees (``exporting/adapters.py``).
Every walk over a schema (leaf names, flattening and rebuilding values in ``structure.py``,
the straight-line call, JSON answers) goes through :data:`NODE_KINDS`, :func:`children` and
:func:`walk`, and names leaves by one rule, :func:`leaf_path`. Written by hand on purpose:
``load`` of an ONNX artifact must work where torch (and so ``_pytree``) is not installed.

Node kinds::

    {"kind": "tensor", "name": "batch.mask"}
    {"kind": "none"}
    {"kind": "list" | "tuple", "items": [node, ...]}
    {"kind": "dict", "keys": [key, ...], "items": [node, ...]}
    {"kind": "namedtuple" | "dataclass" | "record", "class": "module.QualName",
     "fields": [name, ...], "items": [node, ...]}

``record`` (schema version 2) is any other pytree node: transformers' ``ModelOutput`` (only
the fields that were set), or a type registered with ``register_pytree_node`` (fields named by
its keys, or by child index where it has none).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from lightning_deploy.errors import LoadError

__all__ = [
    "KINDS",
    "NODE_KINDS",
    "SCHEMA_VERSION",
    "NodeKind",
    "check_node",
    "check_schema_version",
    "children",
    "key_label",
    "kind_for_type",
    "kind_of",
    "leaf_names",
    "leaf_path",
    "walk",
]

SCHEMA_VERSION = 2
KNOWN_SCHEMA_VERSIONS = (1, 2)  # 2 added the record kind


@dataclasses.dataclass(frozen=True)
class NodeKind:
    """One kind of schema node and its operations: the schema's counterpart of pytree's node registry.

    Every walker (checking a node, flattening and rebuilding values in ``structure.py``, the
    straight-line call, JSON answers, the export side's ``describe``) asks the kind, never its
    name; a new kind is one entry of :data:`NODE_KINDS` (``docs/design.md`` has the recipe).

    Attributes:
        layout: how it holds its children, the one thing the walkers switch on: ``"leaf"`` (a
            tensor), ``"none"``, ``"sequence"`` (by index; a JSON array), ``"mapping"`` (by the
            recorded ``keys``; a JSON object) or ``"record"`` (by the recorded ``fields``, rebuilt
            as its ``class`` where that class is at hand; a JSON object).
        labels: the children's labels in leaf order (an index, a dict key or a field name),
            which name the leaves below them (:func:`leaf_path`).
        access: how a child is written in Python source from its container's expression
            (``v[0]``, ``v['key']``, ``v.field``), for the straight-line call.
        types: the Python types the export side describes as this kind (sequences and mappings;
            a later entry takes a type from an earlier one). A value of a sequence kind is
            accepted as any of them, or a list or tuple.
        rebuild: a sequence's constructor from its items (``list``, ``tuple``).
        positional: a record built from its items by position (a named tuple), not by field name.
        identifier_fields: a record's fields must be Python identifiers (a ``record`` may have ``"0"``).
    """

    layout: str
    labels: Callable[[Mapping[str, Any]], Sequence[Any]]
    access: Callable[[str, Any], str]
    types: tuple[type, ...] = ()
    rebuild: Callable[[Iterable[Any]], Any] | None = None
    positional: bool = False
    identifier_fields: bool = True


def _no_children(node: Mapping[str, Any]) -> Sequence[Any]:
    return ()


def _by_index(node: Mapping[str, Any]) -> Sequence[Any]:
    return range(len(node["items"]))


def _by_key(node: Mapping[str, Any]) -> Sequence[Any]:
    return node["keys"]


def _by_field(node: Mapping[str, Any]) -> Sequence[Any]:
    return node["fields"]


def _itself(value: str, label: Any) -> str:
    return value


def _item(value: str, label: Any) -> str:
    return f"{value}[{label!r}]"


def _attribute(value: str, label: Any) -> str:
    return f"{value}.{label}"


NODE_KINDS: dict[str, NodeKind] = {
    "tensor": NodeKind("leaf", _no_children, _itself),
    "none": NodeKind("none", _no_children, _itself),
    "list": NodeKind("sequence", _by_index, _item, types=(list, collections.deque), rebuild=list),
    "tuple": NodeKind("sequence", _by_index, _item, types=(tuple,), rebuild=tuple),
    "dict": NodeKind("mapping", _by_key, _item, types=(dict, collections.OrderedDict, collections.defaultdict)),
    "namedtuple": NodeKind("record", _by_field, _attribute, positional=True),
    "dataclass": NodeKind("record", _by_field, _attribute),
    "record": NodeKind("record", _by_field, _attribute, identifier_fields=False),
}
KINDS = tuple(NODE_KINDS)  # the kinds of release 0.1's schema module; the registry is NODE_KINDS


def kind_of(node: Mapping[str, Any]) -> NodeKind:
    """The registered kind of ``node`` (checked by :func:`check_node` first where the node comes from a file)."""
    return NODE_KINDS[node["kind"]]


def kind_for_type(cls: type) -> str | None:
    """The sequence or mapping kind the export side describes a value of type ``cls`` as (the latest entry wins)."""
    found = None
    for name, kind in NODE_KINDS.items():
        if cls in kind.types:
            found = name
    return found


def children(node: Mapping[str, Any]) -> list[tuple[Any, Mapping[str, Any]]]:
    """A node's ``(label, child)`` pairs in leaf order; none for a tensor or ``None`` leaf."""
    return list(zip(kind_of(node).labels(node), node.get("items", ())))


def key_label(key: Any) -> Any:
    """The label of a ``torch.utils._pytree`` key entry: a dict key, a sequence index or a field name.

    The one key -> label rule: the export side names leaves by it, the runtime names native
    outputs by it. Read by attribute (``key``, ``idx``, ``name``), so no torch is imported here.
    """
    for attribute in ("key", "idx", "name"):
        if hasattr(key, attribute):
            return getattr(key, attribute)
    return key


def leaf_path(parent: str, label: Any) -> str:
    """The name of a child below ``parent``: ``out.0.boxes`` is index 0, then key ``boxes``, of ``out``.

    The one rule for leaf names: the export side names leaves by it from pytree key paths, and
    the runtime and the comparisons find them by it.
    """
    return f"{parent}.{label}" if parent else str(label)


def walk(node: Mapping[str, Any], visit: Callable[[Mapping[str, Any], str, list[tuple[Any, Any]]], Any],
         path: str = "") -> Any:  # fmt: skip
    """Fold the tree bottom-up: ``visit(node, path, [(label, result of the child), ...])`` for every node.

    Children are visited in leaf order, before their parent, so a ``visit`` that consumes leaves
    from an iterator takes them in the artifact's order.
    """
    folded = [(label, walk(child, visit, leaf_path(path, label))) for label, child in children(node)]
    return visit(node, path, folded)


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

    def visit(node: Mapping[str, Any], path: str, folded: list[tuple[Any, list[str]]]) -> list[str]:
        return [node["name"]] if kind_of(node).layout == "leaf" else [name for _, names in folded for name in names]

    return walk(node, visit)


def check_node(node: Any, path: str) -> None:
    """Raise :class:`LoadError` unless ``node`` (and everything under it) is a well-formed schema node.

    A schema comes from a manifest that may have been edited; this keeps a bad one from
    surfacing later as a ``KeyError`` or ``TypeError`` inside the compiled functions.
    """

    def fail(problem: str) -> None:
        raise LoadError(f"{path}: the manifest's schema {problem}. HINT: the manifest is damaged; re-export.")

    if not isinstance(node, Mapping) or not isinstance(node.get("kind"), str) or node["kind"] not in NODE_KINDS:
        fail(f"has a node that is not one of the kinds {tuple(NODE_KINDS)}: {str(node)[:80]}")
    kind, layout = node["kind"], kind_of(node).layout
    if layout == "leaf":
        if not isinstance(node.get("name"), str):
            fail("has a tensor without a name")
        return
    if layout == "none":
        return
    items = node.get("items")
    if not isinstance(items, list):
        fail(f"has a {kind} without a list of items")
    if layout == "mapping":
        keys = node.get("keys")
        hashable = isinstance(keys, list) and all(isinstance(k, (str, int)) for k in keys)
        if not hashable or len(keys) != len(items) or len(set(keys)) != len(keys):
            fail(f"has a {kind} whose keys do not match its items")
    elif layout == "record":
        fields = node.get("fields")
        named = isinstance(fields, list) and all(
            isinstance(f, str) and (f.isidentifier() or not kind_of(node).identifier_fields) for f in fields
        )
        if not named or len(fields) != len(items) or len(set(fields)) != len(fields):
            fail(f"has a {kind} whose fields do not match its items")
        if not isinstance(node.get("class"), str):
            fail(f"has a {kind} without a class name")
    for index, child in enumerate(items):
        check_node(child, leaf_path(path, index))
