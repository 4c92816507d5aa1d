"""``method="trace"``: TorchScript by ``torch.jit.trace``; ONNX by the TorchScript-based exporter."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import ClassVar

import torch

from lightning_deploy.exporting.methods.base import Capture, ExportContext, Exporter, save_torchscript
from lightning_deploy.exporting.methods.onnx_if_types import unify_if_branch_types
from lightning_deploy.exporting.methods.onnx_symbolics import trace_symbolics

__all__ = ["TraceExporter", "trace_flat", "write_onnx", "write_torchscript"]


def trace_flat(module: torch.nn.Module, ctx: ExportContext) -> Capture:
    """Trace ``module`` at ``ctx.args``, keeping the ``TracerWarning``s as the capture's warnings.

    ``check_trace`` is off: it fails spuriously on some models (docs/design.md), and our
    verification at two shapes is the stronger check.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, ctx.args, check_trace=False)
    found = [str(w.message) for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    for w in caught:
        if not issubclass(w.category, (torch.jit.TracerWarning, FutureWarning)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return Capture(traced, list(dict.fromkeys(found)))


class TraceExporter(Exporter):
    """Trace the flat adapter; the TorchScript graph also feeds the ONNX exporter (and OpenVINO through it)."""

    method: ClassVar[str] = "trace"

    def capture(self, ctx: ExportContext) -> Capture:
        """Trace the flat adapter."""
        return trace_flat(ctx.adapter, ctx)


def write_torchscript(capture: Capture, path: Path, ctx: ExportContext) -> None:
    """The traced module, by ``torch.jit.save``."""
    save_torchscript(capture.program, path)


def write_onnx(capture: Capture, path: Path, ctx: ExportContext) -> None:
    """The traced graph by ``torch.onnx.export(dynamo=False)`` (the TorchScript-based exporter), ``If`` types one."""
    dynamic_axes = {
        name: dict(dims)
        for name, dims in zip(ctx.input_names + ctx.output_names, ctx.input_dims + ctx.output_dims)
        if dims
    }
    with warnings.catch_warnings(), trace_symbolics():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy exporter": chosen on purpose
        torch.onnx.export(
            capture.program,
            ctx.args,
            str(path),
            dynamo=False,
            input_names=list(ctx.input_names),
            output_names=list(ctx.output_names),
            dynamic_axes=dynamic_axes,
            opset_version=ctx.opset,
        )
    unify_if_branch_types(path)
