"""One manifest's common call on the CPU, written out as one straight-line function: ONNX Runtime or a torch module.

``load()``'s general path walks the schema with compiled closures (``artifact/structure.py``),
converts and checks leaf by leaf and rebuilds the outputs: 8 µs a call on a small MLP with
torch tensors in and out, more than ONNX Runtime's own run of it (6 µs), measured here. Like
``dataclasses`` and ``collections.namedtuple``, which write a class's ``__init__`` as source
once, this module writes for one manifest the function a person would write by hand for
that model: index the arguments, take each tensor's memory as an array, feed the session by
name, wrap the outputs and build the output structure, with no loop and no call per node.

It takes only the common case: positional arguments, containers of exactly the exported
types, leaves all CPU tensors without grad or (ONNX) all numpy arrays, batch sizes that agree;
for a torch module also each leaf's dtype, rank and static dims, which ONNX Runtime checks
itself. Any other call raises, and ``load()`` runs its general path instead, which gives the
same answer or the error that names the leaf; so this function never has to explain anything.
"""

from __future__ import annotations

import keyword
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from lightning_deploy.artifact.schema import children, kind_of, walk

__all__ = ["Miss", "bind_torch", "compile_call", "compile_torch_call"]


class Miss(Exception):
    """The call is not the common case; the general path takes it."""


class _NoTorch:
    """Stands for ``torch.Tensor`` while torch is not imported: nothing is of this type."""


def compile_call(
    parameters: Sequence[str],
    input_tree: Mapping[str, Any],
    output_tree: Mapping[str, Any],
    fed: Sequence[tuple[int, str]],
    output_names: Sequence[str],
    run: Callable[[list[str], dict[str, Any], Any], list[Any]],
    run_options: Any,
    shared_axes: Sequence[tuple[str, list[tuple[int, int]]]],
    spans: Sequence[tuple[int, int, int, int | None]],
    output_class: Callable[[Mapping[str, Any]], Any],
) -> Callable[..., Any]:
    """The fast call of an ONNX artifact: ``call(*args)`` returns the structured outputs or raises.

    Args:
        parameters: ``forward``'s parameter names, called positionally.
        input_tree: the input schema's tree (its root: the arguments by parameter name, in order).
        output_tree: the output schema's tree.
        fed: ``(leaf index, graph input name)`` of the leaves the graph reads.
        output_names: the graph's outputs, in the order of the output leaves.
        run: ONNX Runtime's ``run(output_names, feed, run_options)``.
        run_options: passed to ``run`` on every call.
        shared_axes: ``(axis, [(leaf index, dim), ...])`` of dynamic axes several leaves share.
        spans: ``(leaf index, dim, min, max)`` of the dynamic dims whose sizes are limited (the
            entry's ``ranges``), which ONNX Runtime does not know.
        output_class: the class ``load()``'s general path builds for a record node of the
            outputs, so both paths return the same types.

    Raises:
        Miss: where an input record has a field that is no attribute name (the general path only).
    """
    outputs = [f"o{i}" for i in range(len(output_names))]

    def body(leaves: list[str], build: str) -> list[str]:
        """Both array types' calls: each leaf's memory as an array (a CPU tensor's own), the run, the structure.

        ONNX Runtime refuses a wrong dtype, rank or static dim itself, so only the shared axes and ranges are checked.
        """
        feed = ", ".join(f"{name!r}: a{index}" for index, name in fed)
        unpack = f"        {', '.join(outputs)}, = run(output_names, {{{feed}}}, run_options)"
        arrays = [f"a{i}" for i in range(len(leaves))]
        checks = _shared_axes_check(arrays, shared_axes) + _spans_check(arrays, spans)

        def branch(arrays: list[str], wrap: str | None) -> list[str]:
            return [
                *(f"        a{i} = {array}" for i, array in enumerate(arrays)),
                *checks,
                unpack,
                *(f"        {o} = {wrap}({o})" for o in outputs if wrap),
                f"        return {build}",
            ]

        return [
            f"    if {_all_of(leaves, 'Tensor')}:",  # CPU tensors without grad (.numpy() refuses others)
            *branch([f"{leaf}.numpy()" for leaf in leaves], "from_numpy"),
            f"    if {_all_of(leaves, 'ndarray')}:",
            *branch(leaves, None),
        ]

    names = {"ndarray": np.ndarray, "run": run, "run_options": run_options, "output_names": list(output_names)}
    call = _compile(parameters, input_tree, output_tree, outputs, output_class, names, body)
    bind_torch(call)
    return call


def compile_torch_call(
    parameters: Sequence[str],
    input_tree: Mapping[str, Any],
    output_tree: Mapping[str, Any],
    module: Callable[..., Any],
    leaves: Sequence[tuple[Any, int, Sequence[tuple[int, int]]]],
    output_count: int,
    shared_axes: Sequence[tuple[str, list[tuple[int, int]]]],
    spans: Sequence[tuple[int, int, int, int | None]],
    output_class: Callable[[Mapping[str, Any]], Any],
) -> Callable[..., Any]:
    """The fast call of a torch artifact on the CPU: torch tensors in and out, no conversion, no grad mode.

    ``module`` takes the flat input tensors and returns a tuple (or list) of the flat outputs;
    its weights need no grad (the backend sets that once), so nothing records autograd and
    no ``no_grad`` context is entered (2 µs a call here). The call takes only CPU tensors
    without grad, of each leaf's dtype, rank and static dims (``leaves``: ``(torch dtype,
    rank, [(dim, size), ...])``) and the sizes ``spans`` allows: the checks the general path makes, written out.
    """
    import torch

    outputs = [f"o{i}" for i in range(output_count)]
    dtypes = {f"D{i}": dtype for i, (dtype, _, _) in enumerate(leaves)}

    def body(names: list[str], build: str) -> list[str]:
        refused = []
        for i, (name, (_, rank, static)) in enumerate(zip(names, leaves)):
            refused += [
                f"{name}.dtype is not D{i}",
                f"not {name}.is_cpu",
                f"{name}.requires_grad",
                f"{name}.dim() != {rank}",
                *(f"{name}.shape[{dim}] != {size}" for dim, size in static),
            ]
        return [
            f"    if {_all_of(names, 'Tensor')}:",
            f"        if {' or '.join(refused)}:",
            "            raise Miss",
            *_shared_axes_check(names, shared_axes),
            *_spans_check(names, spans),
            f"        outs = module({', '.join(names)})",
            f"        if type(outs) is not tuple and type(outs) is not list or len(outs) != {output_count}:",
            "            raise Miss",
            f"        {', '.join(outputs)}, = outs",
            f"        return {build}",
        ]

    names = {"module": module, **dtypes, "Tensor": torch.Tensor}
    return _compile(parameters, input_tree, output_tree, outputs, output_class, names, body)


def _compile(
    parameters: Sequence[str],
    input_tree: Mapping[str, Any],
    output_tree: Mapping[str, Any],
    outputs: list[str],
    output_class: Callable[[Mapping[str, Any]], Any],
    names: dict[str, Any],
    body: Callable[[list[str], str], list[str]],
) -> Callable[..., Any]:
    """Write and execute ``call``: take the arguments apart into leaves, then ``body(leaves, build)``, else Miss."""
    if len(parameters) != len(input_tree["items"]):
        raise Miss("the call's parameters are not the schema's arguments")  # load() refuses such a manifest first
    writer = _Writer()
    leaves = writer.flatten_tuple(input_tree, [f"p{i}" for i in range(len(parameters))])
    if not leaves:
        raise Miss("no input leaves")
    names = {"Miss": Miss, "Tensor": _NoTorch, "from_numpy": None, **names}
    build = _build(output_tree, iter(outputs), names, output_class)
    lines = [f"def call({', '.join(f'p{i}' for i in range(len(parameters)))}):", *writer.lines,
             *body(leaves, build), "    raise Miss"]  # fmt: skip
    # The source holds only names made here and literals written by repr() from a checked schema
    # (keys, fields and graph input names), so executing it runs nothing a manifest could inject.
    exec("\n".join(lines), names)
    return names.pop("call")  # its globals hold the runtime; the function in them would make a cycle, freed late


def _all_of(leaves: list[str], kind: str) -> str:
    return " and ".join(f"type({leaf}) is {kind}" for leaf in leaves)


def _shared_axes_check(arrays: list[str], shared_axes: Sequence[tuple[str, list[tuple[int, int]]]]) -> list[str]:
    """Lines that raise Miss where leaves sharing a dynamic axis (the batch) disagree on its size."""
    differ = [
        f"{arrays[index]}.shape[{dim}] != {arrays[first]}.shape[{first_dim}]"
        for _, ((first, first_dim), *rest) in shared_axes
        for index, dim in rest
    ]
    return [f"        if {' or '.join(differ)}:", "            raise Miss"] if differ else []


def _spans_check(arrays: list[str], spans: Sequence[tuple[int, int, int, int | None]]) -> list[str]:
    """Lines that raise Miss where a limited dynamic dim is outside its range (the entry's ``ranges``)."""
    outside = []
    for index, dim, low, high in spans:
        size = f"{arrays[index]}.shape[{dim}]"
        outside += [f"{size} < {low}", *([f"{size} > {high}"] if high is not None else [])]
    return [f"        if {' or '.join(outside)}:", "            raise Miss"] if outside else []


def _attribute_name(field: str) -> bool:
    """Whether ``value.field`` and ``cls(field=...)`` can be written in source (``lambda`` cannot)."""
    return field.isidentifier() and not keyword.iskeyword(field)


def bind_torch(call: Callable[..., Any]) -> None:
    """Let ``call`` take torch tensors once torch is imported (it may be after ``load()``)."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "from_numpy"):
        call.__globals__["Tensor"], call.__globals__["from_numpy"] = torch.Tensor, torch.from_numpy


class _Writer:
    """Writes the lines that take an input value apart into leaf variables, checking each container's type."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.leaves: list[str] = []
        self.count = 0

    def flatten_tuple(self, root: Mapping[str, Any], arguments: list[str]) -> list[str]:
        """The root holds ``forward``'s arguments by parameter name; each is passed as a separate argument."""
        for child, argument in zip(root["items"], arguments):
            self.flatten(child, argument)
        return self.leaves

    def flatten(self, node: Mapping[str, Any], expression: str) -> None:
        kind = kind_of(node)
        if kind.layout == "leaf":
            self.leaves.append(self._name(expression))
            return
        if kind.layout == "none":
            self.lines += [f"    if {expression} is not None:", "        raise Miss"]
            return
        value = self._name(expression)
        labelled = children(node)
        if kind.layout == "sequence":
            self.lines += [
                f"    if type({value}) is not tuple and type({value}) is not list or len({value}) != {len(labelled)}:",
                "        raise Miss",
            ]
        elif kind.layout == "mapping":
            # the right length and every key found: exactly the exported keys
            self.lines += [
                f"    if type({value}) is not dict or len({value}) != {len(labelled)}:",
                "        raise Miss",
            ]
        else:  # a record by attribute (a dict given for it takes the general path)
            self.lines += [f"    if type({value}) is dict:", "        raise Miss"]
            bad = [field for field, _ in labelled if not _attribute_name(field)]
            if bad:
                raise Miss(f"field {bad[0]!r} is no attribute name")
        for label, child in labelled:
            self.flatten(child, kind.access(value, label))

    def _name(self, expression: str) -> str:
        if expression.isidentifier():  # an argument already has a name
            return expression
        self.count += 1
        self.lines.append(f"    v{self.count} = {expression}")
        return f"v{self.count}"


def _build(tree: Mapping[str, Any], outputs: Any, names: dict[str, Any], output_class: Callable) -> str:
    """The expression that rebuilds the output structure from the output variables."""
    return walk(tree, lambda node, path, folded: _build_node(node, [item for _, item in folded], outputs, names,
                                                             output_class))  # fmt: skip


def _build_node(node: Mapping[str, Any], items: list[str], outputs: Any, names: dict[str, Any],
                output_class: Callable) -> str:  # fmt: skip
    """One node's expression from its children's."""
    kind = kind_of(node)
    if kind.layout == "leaf":
        return next(outputs)
    if kind.layout == "none":
        return "None"
    if kind.layout == "sequence":
        if kind.rebuild is list:
            return f"[{', '.join(items)}]"
        literal = f"({''.join(f'{item}, ' for item in items)})"
        if kind.rebuild is tuple:
            return literal
        rebuild = f"R{len(names)}"
        names[rebuild] = kind.rebuild
        return f"{rebuild}({literal})"
    if kind.layout == "mapping":
        return "{" + ", ".join(f"{key!r}: {item}" for key, item in zip(node["keys"], items)) + "}"
    cls = f"C{len(names)}"
    names[cls] = output_class(node)
    if kind.positional:
        return f"{cls}({', '.join(items)})"
    if all(_attribute_name(field) for field in node["fields"]):
        return f"{cls}({', '.join(f'{field}={item}' for field, item in zip(node['fields'], items))})"
    return f"{cls}(**{{{', '.join(f'{field!r}: {item}' for field, item in zip(node['fields'], items))}}})"
