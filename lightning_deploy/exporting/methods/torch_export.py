"""``method="export"``: one ``torch.export`` capture for ``.pt2``, ONNX (dynamo) and ``.aoti.pt2``."""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import torch

from lightning_deploy.artifact.ranges import Ranges
from lightning_deploy.exporting.methods.base import Capture, ExportContext, Exporter, save_to_file, tensor_bytes
from lightning_deploy.exporting.ranges import axis_sizes, leaf_ranges, probe_axis
from lightning_deploy.runtime.backends.pt2 import on_device

__all__ = [
    "TorchExportExporter",
    "guarded_ranges",
    "on_cpu",
    "unbacked_output_dims",
    "write_aoti",
    "write_onnx",
    "write_pt2",
]

# torch._inductor options of the aoti format (measured in docs/performance.md, runtime.py)
AOTI_INDUCTOR_CONFIGS = {"freezing": True}

_SHAPES_LOGGER = logging.getLogger("torch.fx.experimental.symbolic_shapes")

# Serialising ONNX weights inline holds about three copies of them in memory at once (measured:
# vit_b_16, 330 MB of weights, peaked 1000 MB above the model in ``ONNXProgram.save``), while
# external data is written tensor by tensor (120 MB). Above this size the weights go to
# ``STEM.onnx.data`` beside the model; below it one self-contained file is handier.
EXTERNAL_DATA_BYTES = 128 * 2**20


@contextlib.contextmanager
def _quiet_failure() -> Iterator[None]:
    """Hold back what torch.export prints while it runs; drop it if the export fails.

    On a failure torch.export logs and prints the partial graph (hundreds of lines for a
    detection model). The error itself goes into the manifest and the engine falls back to
    another method, so the graph dump is noise; on success everything is replayed.
    """
    level = _SHAPES_LOGGER.level
    _SHAPES_LOGGER.setLevel(logging.ERROR)
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            yield
    finally:
        _SHAPES_LOGGER.setLevel(level)
    sys.stderr.write(held.getvalue())


class TorchExportExporter(Exporter):
    """One ``ExportedProgram`` serves the ``.pt2`` file, the ONNX model and the AOTInductor package."""

    method: ClassVar[str] = "export"

    def capture(self, ctx: ExportContext) -> Capture:
        """``torch.export.export`` with ``Dim.DYNAMIC`` on every dynamic dim.

        ``Dim.DYNAMIC`` lets torch.export infer relations between dims (two inputs sharing a
        batch) and still raise if a dim it was told is dynamic gets specialised.
        """
        shapes = tuple({d: torch.export.Dim.DYNAMIC for d in dims} or None for dims in ctx.input_dims)
        with _quiet_failure():
            program = torch.export.export(ctx.adapter, ctx.args, dynamic_shapes=(shapes,))
        return Capture(program)


def write_pt2(capture: Capture, path: Path, ctx: ExportContext) -> dict[str, Ranges]:
    """``torch.export.save`` (see ``save_to_file``); the sizes its guards accept."""
    size = tensor_bytes(capture.program.state_dict) + tensor_bytes(capture.program.constants)
    save_to_file(path, lambda target: torch.export.save(capture.program, target), buffered=True, size=size)
    return {"ranges": guarded_ranges(capture.program, ctx)}


def guarded_ranges(program: torch.export.ExportedProgram, ctx: ExportContext) -> Ranges:
    """The sizes the program's module takes on each dynamic axis, as its own guards decide (``ranges.py``).

    ``program.module()`` checks its inputs with ``_guards_fn`` before running (what ``load()``
    of the ``.pt2`` calls); given meta tensors it only compares sizes. A torch without it, or
    guards that cannot take meta tensors, leave the ranges unknown (empty): the runtime still
    refuses, in its own words.
    """
    sample = axis_sizes([arg.shape for arg in ctx.args], ctx.input_dims)
    guards = getattr(program.module(), "_guards_fn", None) if sample else None
    if guards is None:
        return {}

    def accepts(sizes: dict[str, int]) -> bool:
        leaves = []
        for arg, dims in zip(ctx.args, ctx.input_dims):
            shape = [sizes.get(dims[d], size) if d in dims else size for d, size in enumerate(arg.shape)]
            leaves.append(torch.empty(shape, dtype=arg.dtype, device="meta"))
        try:
            guards(*leaves)
        except AssertionError:  # "Guard failed: ..."
            return False
        return True

    try:
        if not accepts({}):
            return {}
        spans = {axis: probe_axis(lambda s, axis=axis: accepts({axis: s}), size) for axis, size in sample.items()}
    except Exception:  # noqa: BLE001 - guards that cannot take meta tensors: the ranges stay unknown, the file is fine
        return {}
    return leaf_ranges(spans, ctx.input_names, ctx.input_dims)


def write_aoti(capture: Capture, path: Path, ctx: ExportContext) -> None:
    """An AOTInductor package compiled (a C++ compiler, tens of seconds) for the device of the program's weights.

    Freezing folds the weights into the compiled code as constants (conv weights prepacked for
    the CPU): resnet18 at batch 1 ran 28.3 -> 22.8 ms here, same numbers, and compiles faster.
    The package's weights cannot be swapped afterwards, which a deployed artifact never does.
    """
    # imported here: torch._inductor takes a second to import and warns where CUDA is absent
    from torch._inductor import aoti_compile_and_package

    save_to_file(
        path,
        lambda handle: aoti_compile_and_package(
            capture.program, package_path=handle, inductor_configs=AOTI_INDUCTOR_CONFIGS
        ),
        buffered=True,
    )


def write_onnx(capture: Capture, path: Path, ctx: ExportContext) -> None:
    """``torch.onnx.export(dynamo=True)``; inline weights, or above :data:`EXTERNAL_DATA_BYTES` in STEM.onnx.data."""
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
        onnx_program = torch.onnx.export(
            capture.program,
            ctx.args,
            dynamo=True,
            input_names=list(ctx.input_names),
            output_names=list(ctx.output_names),
            opset_version=ctx.opset,
            verbose=False,
        )
    weights = tensor_bytes(capture.program.state_dict)
    onnx_program.save(str(path), external_data=True if weights > EXTERNAL_DATA_BYTES else None)


def on_cpu(capture: Capture) -> torch.export.ExportedProgram:
    """The captured program with its weights on the CPU (what ExecuTorch and OpenVINO convert)."""
    return on_device(capture.program, "cpu")


def unbacked_output_dims(program: torch.export.ExportedProgram, names: tuple[str, ...]) -> dict[str, list[int]]:
    """Output dims whose size torch.export could only name by an unbacked symbol (``u0``): set by values.

    ``names`` are the flat adapter's output leaf names, in the order of the program's user outputs.
    """
    from torch.export.graph_signature import OutputKind
    from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols

    user = [spec.kind == OutputKind.USER_OUTPUT for spec in program.graph_signature.output_specs]
    values = [node.meta.get("val") for node, keep in zip(program.graph.output_node().args[0], user) if keep]
    found = {}
    for name, value in zip(names, values):
        dims = [d for d, size in enumerate(getattr(value, "shape", ())) if free_unbacked_symbols(size)]
        if dims:
            found[name] = dims
    return found
