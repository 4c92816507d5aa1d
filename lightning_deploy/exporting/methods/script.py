"""``method="script"``: ``torch.jit.script`` keeps the model's control flow.

The user's module is scripted, then the thin flat adapter around it is traced: the adapter
only rewires structure, while calls into the scripted module keep their branches and loops.
ONNX is saved from that flat graph as for tracing. TorchScript is saved the same way, except
where the inputs hold lists (``ctx.native``): then the scripted module itself is saved, which
takes ``forward``'s own arguments, so a list of images may have any length.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import ClassVar, Dict, List  # noqa: UP035 - TorchScript reads typing's generics

import torch
from torch import nn

from lightning_deploy.exporting.adapters import FlatAdapter
from lightning_deploy.exporting.methods.base import Capture, ExportContext, save_torchscript
from lightning_deploy.exporting.methods.trace import TraceExporter, trace_flat

__all__ = ["ScriptExporter", "write_torchscript"]


class ScriptExporter(TraceExporter):
    """Script the module, trace the structure-only adapter around it."""

    method: ClassVar[str] = "script"

    def capture(self, ctx: ExportContext) -> Capture:
        """Script ``ctx.adapter.module`` and trace the adapter around the scripted copy."""
        adapter = ctx.adapter
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*deprecated", category=FutureWarning)  # supported on purpose
            scripted = torch.jit.script(adapter.module)
        if hasattr(adapter.module, "eager_outputs"):
            scripted = torch.jit.script(_DetectionsOnly(scripted))
        capture = trace_flat(FlatAdapter(scripted, adapter.inputs, adapter.call, adapter.outputs), ctx)
        capture.native = scripted
        return capture


def write_torchscript(capture: Capture, path: Path, ctx: ExportContext) -> None:
    """The scripted module itself where inputs hold lists (native I/O), else the trace around it."""
    save_torchscript(capture.native if ctx.native else capture.program, path)


class _DetectionsOnly(nn.Module):
    """torchvision's detection models return ``(losses, detections)`` when scripted, detections in eager mode.

    Their ``eager_outputs`` method marks the convention; this keeps the eager structure.
    """

    def __init__(self, scripted: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.scripted = scripted

    def forward(self, images: List[torch.Tensor]) -> List[Dict[str, torch.Tensor]]:  # noqa: UP006 - TorchScript
        """The scripted model's detections."""
        return self.scripted(images)[1]
