"""Repairs to the TorchScript-based ONNX exporter, used only while ``method="trace"`` saves ONNX.

Both go through torch's own extension point (``register_custom_op_symbolic``), registered for
the export and removed after it.

- torch 2.14's symbolic for ``aten::unflatten`` computes the split dim inside the graph
  (``Add``/``Mod`` of the rank), so ONNX cannot tell the rank of its ``Reshape``, and any later
  ``transpose`` with a negative dim fails: "ONNX export of transpose for tensor of unknown rank".
  ``nn.MultiheadAttention``'s plain path does exactly that (``_in_projection_packed``:
  ``unflatten(-1, (3, E)).unsqueeze(0).transpose(0, -2)``), so no model with attention (Lightning's
  demo ``Transformer``) exports through this exporter. The dim is a constant of the trace, so it
  is resolved here in Python and the output's rank set.
- ``aten::index`` with several index tensors needs the input's rank, which a scripted function
  inside the trace loses (detectron2's keypoint head: ``roi_map_scores[keypoints_idx, y_int,
  x_int]`` in ``heatmaps_to_keypoints``): "advanced indexing on tensor of unknown rank". Where
  integer index tensors of one shape index the leading dims, the result is ``GatherND`` of the
  stacked indices, whatever the rank; every other case is torch's own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

try:  # torch >= 2.9 moved the TorchScript-based exporter's helpers
    from torch.onnx._internal.torchscript_exporter import symbolic_helper, symbolic_opset11
except ImportError:  # pragma: no cover - older torch
    from torch.onnx import symbolic_helper, symbolic_opset11  # type: ignore[no-redef]

__all__ = ["trace_symbolics"]

_OPSET = 13  # the opset of torch's own unflatten symbolic, which this one stands in for


def _unflatten(g: Any, tensor: Any, dim: Any, sizes: Any) -> Any:
    """``aten::unflatten`` with the dim resolved at export time and the output rank recorded."""
    rank = symbolic_helper._get_tensor_rank(tensor)
    if rank is None:
        return symbolic_helper._unimplemented("unflatten", "input rank must be known at export time")
    dim = symbolic_helper._get_const(dim, "i", "dim") % rank

    def constant(values: list[int]) -> Any:
        return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))

    if symbolic_helper._is_packed_list(sizes):  # a list of (traced) ints: one 1-D tensor
        parts = symbolic_helper._unpack_list(sizes)
        sizes = g.op("Concat", *[symbolic_helper._reshape_helper(g, p, constant([1])) for p in parts], axis_i=0)
        count = len(parts)
    else:
        count = symbolic_helper._get_tensor_sizes(sizes)[0]
    shape = g.op("Shape", tensor)
    head = g.op("Slice", shape, constant([0]), constant([dim]))
    tail = g.op("Slice", shape, constant([dim + 1]), constant([rank]))
    out = symbolic_helper._reshape_helper(g, tensor, g.op("Concat", head, sizes, tail, axis_i=0))
    out.setType(tensor.type().with_sizes([None] * (rank + count - 1)))
    return out


def _index(g: Any, tensor: Any, index: Any) -> Any:
    """``aten::index``: two or more leading integer index tensors on a tensor of unknown rank, as ``GatherND``.

    The indices are stacked along a new last axis (negative axes: their rank may be unknown too);
    they must have one shape, which a graph that ran at the export sample had.
    """
    indices = symbolic_helper._unpack_list(index) if symbolic_helper._is_packed_list(index) else [index]
    integers = not any(symbolic_helper._is_none(i) or symbolic_helper._is_bool(i) for i in indices)
    if symbolic_helper._get_tensor_rank(tensor) is not None or len(indices) < 2 or not integers:
        return symbolic_opset11.index(g, tensor, index)
    long = [g.op("Cast", i, to_i=torch.onnx.TensorProtoDataType.INT64) for i in indices]
    axis = g.op("Constant", value_t=torch.tensor([-1], dtype=torch.int64))
    stacked = g.op("Concat", *[g.op("Unsqueeze", i, axis) for i in long], axis_i=-1)
    return g.op("GatherND", tensor, stacked)


@contextlib.contextmanager
def trace_symbolics() -> Iterator[None]:
    """Use :func:`_unflatten` and :func:`_index` during the block, torch's own after it."""
    torch.onnx.register_custom_op_symbolic("aten::unflatten", _unflatten, _OPSET)
    torch.onnx.register_custom_op_symbolic("aten::index", _index, _OPSET)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::unflatten", _OPSET)
        torch.onnx.unregister_custom_op_symbolic("aten::index", _OPSET)
