"""The ``executorch`` format: a ``torch.export`` program lowered to an ExecuTorch ``.pte`` file.

ExecuTorch plans every buffer's memory ahead of time for the largest input, so each dynamic
dim needs an upper bound. The program captured for ``.pt2`` has unbounded dims; it is
exported once more, from its own graph (a fraction of a second, the same operators), with
each dynamic axis bounded by ``ExportContext.bounds``. The graph is then lowered with the
XNNPACK partitioner: operators XNNPACK implements run in its delegate, the rest in
ExecuTorch's portable kernels.
"""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Any

import torch

from lightning_deploy.exporting.methods.base import Capture, ExportContext
from lightning_deploy.exporting.methods.torch_export import on_cpu

__all__ = ["lower_to_executorch", "write_executorch"]


def write_executorch(capture: Capture, path: Path, ctx: ExportContext) -> dict[str, Any]:
    """The ``executorch`` writer of method ``export``: the program (on the CPU) lowered and bounded."""
    return lower_to_executorch(on_cpu(capture), path, ctx)


def lower_to_executorch(program: torch.export.ExportedProgram, path: Path, ctx: ExportContext) -> dict[str, Any]:
    """Write ``program`` (on the CPU) bounded by ``ctx.bounds`` as ``path`` (a ``.pte``); returns what was delegated."""
    # imported here: the package is optional (lightning-deploy[executorch]) and slow to import
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    axes: dict[str, Any] = {axis: torch.export.Dim.DYNAMIC(max=bound) for axis, bound in ctx.bounds.items()}
    shapes = tuple({dim: axes[axis] for dim, axis in dims.items()} or None for dims in ctx.input_dims)
    args = tuple(arg.cpu() for arg in ctx.args)
    bounded = torch.export.export(program.module(), args, dynamic_shapes=shapes)  # flat: one per argument
    lowered = to_edge_transform_and_lower(bounded, partitioner=[XnnpackPartitioner()])
    graph = lowered.exported_program().graph
    calls = [node for node in graph.nodes if node.op == "call_function" and node.target is not operator.getitem]
    delegated = sum("call_delegate" in str(node.target) for node in calls)
    buffer = lowered.to_executorch().buffer
    path.write_bytes(buffer)
    return {
        "delegate": "XnnpackBackend",
        "delegated_calls": delegated,
        "portable_ops": sorted({str(node.target) for node in calls if "call_delegate" not in str(node.target)}),
        "bounds": planned_bounds(buffer, ctx),
    }


def planned_bounds(buffer: bytes, ctx: ExportContext) -> dict[str, dict[str, int]]:
    """The largest size of each dynamic dim that the program's memory is planned for, read from the program.

    ExecuTorch may plan for less than the bound it was given (measured: resnet18 at 224x224 with
    the batch bounded by 64 was planned for 15), so what the entry records and ``load()``
    enforces is read from the file, never assumed.
    """
    from executorch.runtime import Runtime

    meta = Runtime.get().load_program(buffer).load_method("forward").metadata
    sizes = [meta.input_tensor_meta(i).sizes() for i in range(meta.num_inputs())]
    return {
        name: {str(dim): int(leaf_sizes[dim]) for dim in dims}
        for name, dims, leaf_sizes in zip(ctx.input_names, ctx.input_dims, sizes)
        if dims
    }
