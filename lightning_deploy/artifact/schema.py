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

import dataclasses
from collections.abc import Callable, Mapping, Sequence
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
    "leaf_names",
    "leaf_path",
    "walk",
]

SCHEMA_VERSION = 2
KNOWN_SCHEMA_VERSIONS = (1, 2)  # 2 added the record kind

Flattener = Callable[[Any, list], None]
Builder = Callable[[Any], Any]


@dataclasses.dataclass(frozen=True)
class NodeKind:
    """How one kind of schema node holds its children: the schema's counterpart of pytree's node registry.

    Attributes:
        labels: the children's labels in leaf order (an index, a dict key or a field name),
            which name the leaves below them (:func:`leaf_path`).
        access: how a child is written in Python source from its container's expression
            (``v[0]``, ``v['key']``, ``v.field``), for the straight-line call.
    """

    labels: Callable[[Mapping[str, Any]], Sequence[Any]]
    access: Callable[[str, Any], str]


def _no_children(node: Mapping[str, Any]) -> Sequence[Any]:
    return ()


def _by_index(node: Mapping[str, Any]) -> Sequence[Any]:
    return range(len(node["items"]))


def _by_field(node: Mapping[str, Any]) -> Sequence[Any]:
    return node["fields"]


NODE_KINDS: dict[str, NodeKind] = {
    "tensor": NodeKind(_no_children, lambda value, label: value),
    "none": NodeKind(_no_children, lambda value, label: value),
    "list": NodeKind(_by_index, lambda value, label: f"{value}[{label}]"),
    "tuple": NodeKind(_by_index, lambda value, label: f"{value}[{label}]"),
    "dict": NodeKind(lambda node: node["keys"], lambda value, label: f"{value}[{label!r}]"),
    "namedtuple": NodeKind(_by_field, lambda value, label: f"{value}.{label}"),
    "dataclass": NodeKind(_by_field, lambda value, label: f"{value}.{label}"),
    "record": NodeKind(_by_field, lambda value, label: f"{value}.{label}"),
}
KINDS = tuple(NODE_KINDS)


def children(node: Mapping[str, Any]) -> list[tuple[Any, Mapping[str, Any]]]:
    """A node's ``(label, child)`` pairs in leaf order; none for a tensor or ``None`` leaf."""
    return list(zip(NODE_KINDS[node["kind"]].labels(node), node.get("items", ())))


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
        return [node["name"]] if node["kind"] == "tensor" else [name for _, names in folded for name in names]

    return walk(node, visit)


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
        check_node(child, leaf_path(path, index))
