"""``method="script"``: ``torch.jit.script`` keeps the model's control flow.

The user's module is scripted, then the thin flat adapter around it is traced: the adapter
only rewires structure, while calls into the scripted module keep their branches and loops.
Both formats are then saved as for tracing.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch
from torch import nn

from lightning_deploy.adapters import FlatAdapter
from lightning_deploy.exporters.base import Capture, ExportContext
from lightning_deploy.exporters.trace import TraceExporter, trace_flat

__all__ = ["ScriptExporter"]


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
            scripted = _DetectionsOnly(scripted)
        return trace_flat(FlatAdapter(scripted, adapter.inputs, adapter.call, adapter.outputs), ctx)


class _DetectionsOnly(nn.Module):
    """torchvision's detection models return ``(losses, detections)`` when scripted, detections in eager mode.

    Their ``eager_outputs`` method marks the convention; this keeps the eager structure.
    """

    def __init__(self, scripted: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.scripted = scripted

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The scripted model's detections."""
        return self.scripted(*args, **kwargs)[1]
