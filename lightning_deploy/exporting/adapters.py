"""Adapters: structured inputs and outputs <-> flat tuples of tensors.

Every exporter sees a :class:`FlatAdapter`, whose ``forward(*tensors)`` returns a tuple of
tensors. Nesting is handled by ``torch.utils._pytree`` (what ``torch.export`` itself uses);
dataclasses found in a structure are registered with it on first sight. The tree specs are
also described as plain JSON (``artifact/schema.py``) so that ``load`` can rebuild the structure
without torch.
"""

from __future__ import annotations

import collections
import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import nn

from lightning_deploy.artifact.contract import Call
from lightning_deploy.artifact.schema import (
    NODE_KINDS,
    SCHEMA_VERSION,
    key_label,
    kind_for_type,
    kind_of,
    leaf_path,
    walk,
)
from lightning_deploy.errors import ConfigurationError, ExportError

__all__ = ["FlatAdapter", "FlatTree", "bind_sample", "describe", "flatten_tree", "keyed_children"]


def bind_sample(module: nn.Module, sample: Any, argument: str = "input_sample") -> tuple[dict, Call]:
    """Bind ``sample`` to ``module.forward`` by Lightning's ``example_input_array`` convention.

    A tuple holds the positional arguments, a dict the keyword arguments, anything else is
    the single positional argument. Returns ``{parameter name: value}`` and the call spec.
    """
    if isinstance(sample, tuple):
        args, kwargs = sample, {}
    elif isinstance(sample, Mapping):
        args, kwargs = (), dict(sample)
    else:
        args, kwargs = (sample,), {}
    signature = inspect.signature(module.forward)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as err:
        hint = " To pass a dict as one argument, wrap it: (sample,)." if kwargs else ""
        raise ConfigurationError(
            f"{argument} does not fit {type(module).__name__}.forward{signature}: {err}."
            f" HINT: a tuple holds positional arguments, a dict keyword arguments.{hint}"
        ) from None
    kinds = {p.name: p.kind for p in signature.parameters.values()}
    call = Call(
        parameters=tuple(bound.arguments),
        positional_only=tuple(n for n in bound.arguments if kinds[n] is inspect.Parameter.POSITIONAL_ONLY),
        var_positional=next((n for n in bound.arguments if kinds[n] is inspect.Parameter.VAR_POSITIONAL), None),
        var_keyword=next((n for n in bound.arguments if kinds[n] is inspect.Parameter.VAR_KEYWORD), None),
    )
    return dict(bound.arguments), call


@dataclasses.dataclass(frozen=True)
class FlatTree:
    """A structure's pytree spec, its tensor leaves' names and where they sit among the leaves.

    ``None`` is a pytree leaf; it stays a constant of the graph and is not a tensor leaf.
    """

    spec: pytree.TreeSpec
    names: tuple[str, ...]
    tensor_positions: tuple[int, ...]
    schema: dict[str, Any]

    def unflatten(self, tensors: tuple[torch.Tensor, ...]) -> Any:
        """Rebuild the structure from its tensor leaves."""
        leaves: list[Any] = [None] * self.spec.num_leaves
        for position, tensor in zip(self.tensor_positions, tensors):
            leaves[position] = tensor
        return pytree.tree_unflatten(leaves, self.spec)

    def tensors(self, value: Any) -> tuple[torch.Tensor, ...]:
        """The tensor leaves of ``value``, which must have this tree's structure.

        A structure that differs only in what the schema does not record passes (a scripted
        module returns a ``dict`` where eager code returned an ``OrderedDict``).
        """
        leaves, spec = pytree.tree_flatten(value)
        if spec != self.spec and not self._same_schema(value):
            raise ExportError(
                f"The structure changed between calls: expected {self.spec}, got {spec}."
                " HINT: make the output structure independent of the input's values and shapes."
            )
        return tuple(leaves[p] for p in self.tensor_positions)

    def _same_schema(self, value: Any) -> bool:
        try:
            node = describe(value, "", [], "output", ExportError)
        except ExportError:
            return False
        return _strip_names(node) == _strip_names(self.schema["tree"])


def flatten_tree(value: Any, root: str | None, what: str, error: type[Exception]) -> tuple[FlatTree, tuple]:
    """Flatten ``value`` with pytree and describe it; returns the tree and its tensor leaves.

    ``root`` prefixes every leaf name (``out`` gives ``out.boxes``); with ``None`` the first
    path element is the name's start (``x``, ``batch.mask``). Leaves other than tensors and
    ``None`` raise ``error`` naming the leaf; ``what`` names the value in that message.
    """
    _register_dataclasses(value)
    leaves, spec = pytree.tree_flatten(value)
    leaf_names: list[str | None] = []
    node = describe(value, root or "", leaf_names, what, error)
    positions = tuple(i for i, name in enumerate(leaf_names) if name is not None)
    names = tuple(leaf_names[i] for i in positions)
    tree = FlatTree(spec, names, positions, {"schema_version": SCHEMA_VERSION, "tree": node})
    return tree, tuple(leaves[i] for i in positions)


class FlatAdapter(nn.Module):
    """``forward(*tensors) -> tuple[Tensor, ...]`` around a module with structured I/O.

    Args:
        module: the wrapped module (eager, or already scripted).
        inputs: the flattened structure of the arguments ``{parameter name: value}``.
        call: how those arguments are passed to ``module``.
        outputs: the flattened structure of the module's output.

    """

    def __init__(self, module: nn.Module, inputs: FlatTree, call: Call, outputs: FlatTree) -> None:
        super().__init__()
        self.module = module
        self.inputs = inputs
        self.call = call
        self.outputs = outputs

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Rebuild the structured arguments, call the module, flatten its output."""
        args, kwargs = self.call.split(self.inputs.unflatten(tensors))
        return self.outputs.tensors(self.module(*args, **kwargs))


def _register_dataclasses(value: Any) -> None:
    """Register with pytree every dataclass type that it still sees as a leaf."""
    while True:
        leaves = pytree.tree_leaves(value)
        new = {type(leaf) for leaf in leaves if dataclasses.is_dataclass(leaf) and not isinstance(leaf, type)}
        if not new:
            return
        for cls in new:
            pytree.register_dataclass(cls)


def keyed_children(value: Any) -> tuple[list[Any], list[Any]] | None:
    """The keys and children of a pytree node by its registered functions; ``None`` for a leaf.

    A type registered without ``flatten_with_keys_fn`` (torch documents that form, and
    ``tree_flatten_with_path`` refuses it) gets its children's indices as keys.
    """
    handler = pytree.SUPPORTED_NODES.get(pytree._get_node_type(value))
    if handler is None:
        return None
    if handler.flatten_with_keys_fn is not None:
        pairs, _ = handler.flatten_with_keys_fn(value)
        return [k for k, _ in pairs], [c for _, c in pairs]
    children, _ = handler.flatten_fn(value)
    return list(range(len(children))), list(children)


def describe(value: Any, path: str, leaf_names: list[str | None], what: str, error: type[Exception]) -> dict:
    """The plain-JSON schema node of ``value``, walking pytree's registry in its leaf order.

    Appends each pytree leaf's name to ``leaf_names`` (``None`` for a ``None`` leaf). Dicts,
    lists, tuples and named tuples keep their kinds; a dataclass that is not a mapping keeps
    all its fields (``None`` ones too); every other node (transformers' ``ModelOutput``, a
    type registered with ``register_pytree_node``) is a ``record`` of its keys and children.
    """
    keyed = keyed_children(value)
    if keyed is None:
        name = path or "out"
        if value is None:
            leaf_names.append(None)
            return {"kind": "none"}
        if not isinstance(value, torch.Tensor):
            raise error(
                f"{what} leaf '{name}' is a {type(value).__name__}, but exported graphs carry only"
                " tensors (and None). HINT: make it a tensor, or bind the constant inside the"
                " module (a default argument or an attribute)."
            )
        leaf_names.append(name)
        return {"kind": "tensor", "name": name}
    keys, children = keyed
    fields = [str(key_label(k)) for k in keys]
    items = [describe(c, leaf_path(path, f), leaf_names, what, error) for f, c in zip(fields, children)]
    cls = type(value)
    kind = kind_for_type(cls)  # a sequence or mapping kind registered for the type (artifact/schema.py)
    if kind is not None and NODE_KINDS[kind].layout == "mapping":
        keys = [k.key for k in keys]
        if not all(isinstance(k, (str, int)) for k in keys):
            raise error(f"{what} has a dict with keys {keys}; only str and int keys are supported.")
        return {"kind": kind, "keys": keys, "items": items}
    if kind is not None:
        return {"kind": kind, "items": items}
    if pytree._get_node_type(value) is collections.namedtuple:
        return {"kind": "namedtuple", "class": _qualified(cls), "fields": list(cls._fields), "items": items}
    if dataclasses.is_dataclass(value) and not isinstance(value, Mapping):
        # pytree keeps None-valued fields out of the children; the schema lists every field.
        by_field = dict(zip(fields, items))
        names = [f.name for f in dataclasses.fields(value)]
        items = [by_field.get(f, {"kind": "none"}) for f in names]
        return {"kind": "dataclass", "class": _qualified(cls), "fields": names, "items": items}
    return {"kind": "record", "class": _qualified(cls), "fields": fields, "items": items}


def _strip_names(tree: dict[str, Any]) -> dict[str, Any]:
    """A schema tree without leaf names, to compare structures alone."""

    def visit(node: dict[str, Any], path: str, folded: list[tuple[Any, dict[str, Any]]]) -> dict[str, Any]:
        return {"kind": "tensor"} if kind_of(node).layout == "leaf" else {**node, "items": [item for _, item in folded]}

    return walk(tree, visit)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
