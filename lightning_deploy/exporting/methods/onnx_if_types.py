"""A repair to ONNX graphs from the TorchScript-based exporter: ``If`` branches of different element types.

A scripted function inside a trace (``torch.jit.script_if_tracing``) becomes an ONNX ``If``
whose branches are exported as written. detectron2's ``paste_masks_in_image`` returns an empty
``uint8`` tensor when there are no detections and ``bool`` masks otherwise; the exporter
declares the ``If`` by its first branch, and ONNX Runtime refuses the whole file ("Mismatched
tensor element type: inferred=bool declared=uint8"). Here each such ``If`` gets one element
type: the type every consumer casts it to where they agree (the exporter casts to the traced
dtype), else the ``else`` branch's (the early-return edge case is usually the ``then``
branch); a ``Cast`` is added in the branch that differs. Empty tensors lose nothing.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import helper

__all__ = ["unify_if_branch_types"]


def unify_if_branch_types(path: Path) -> int:
    """Rewrite the ONNX file at ``path`` where an ``If``'s branches disagree on an output's type; returns how many."""
    model = onnx.load(str(path), load_external_data=False)  # the weights stay where they are
    fixed = _fix_graph(model.graph)
    if fixed:
        onnx.save(model, str(path))
    return fixed


def _fix_graph(graph: onnx.GraphProto) -> int:
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    fixed = 0
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                fixed += _fix_graph(attribute.g)
        if node.op_type != "If":
            continue
        branches = {a.name: a.g for a in node.attribute if a.name in ("then_branch", "else_branch")}
        for index, output in enumerate(node.output):
            types = {name: g.output[index].type.tensor_type.elem_type for name, g in branches.items()}
            if len(set(types.values())) < 2:
                continue
            target = _cast_target(consumers.get(output, [])) or types["else_branch"]
            for name, branch in branches.items():
                if types[name] != target:
                    _cast_output(branch, index, target)
            for info in graph.value_info:
                if info.name == output:
                    info.type.tensor_type.elem_type = target
            fixed += 1
    return fixed


def _cast_target(consumers: list[onnx.NodeProto]) -> int | None:
    """The element type every consumer casts to, where all consumers are ``Cast``s to one type."""
    targets = {a.i for c in consumers if c.op_type == "Cast" for a in c.attribute if a.name == "to"}
    if consumers and len(targets) == 1 and all(c.op_type == "Cast" for c in consumers):
        return targets.pop()
    return None


def _cast_output(branch: onnx.GraphProto, index: int, target: int) -> None:
    """Make the branch's ``index``-th output a ``Cast`` of it to ``target``."""
    output = branch.output[index]
    cast = f"{output.name}_as_{onnx.TensorProto.DataType.Name(target).lower()}"
    branch.node.append(helper.make_node("Cast", [output.name], [cast], to=target))
    renamed = onnx.ValueInfoProto()
    renamed.CopyFrom(output)
    renamed.name = cast
    renamed.type.tensor_type.elem_type = target
    branch.output[index].CopyFrom(renamed)
