"""Exporters by method name, the formats' declared writers and passes: the engine looks them up here, no if/elif chains.

Beside the methods (trace, script, torch.export) live the conversions that start from what
they make: ONNX passes and int8 (``onnx_passes.py``, ``int8.py``), OpenVINO's IR and
ExecuTorch's program, and the ONNX exporter's repairs (``onnx_symbolics.py``, ``onnx_if_types.py``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning_deploy.exporting.methods.base import Capture, ExportContext, Exporter
from lightning_deploy.exporting.methods.script import ScriptExporter
from lightning_deploy.exporting.methods.torch_export import TorchExportExporter
from lightning_deploy.exporting.methods.trace import TraceExporter
from lightning_deploy.formats import by_name

__all__ = ["EXPORTERS", "Capture", "ExportContext", "Exporter", "declared", "write"]

EXPORTERS: dict[str, Exporter] = {
    exporter.method: exporter for exporter in (TraceExporter(), ScriptExporter(), TorchExportExporter())
}


def declared(reference: str) -> Callable[..., Any]:
    """The function a declaration names (``"module:function"`` of this folder), its module imported on first use.

    ExecuTorch's and OpenVINO's modules import optional packages, slow to import.
    """
    module, _, function = reference.partition(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)


def write(fmt: str, method: str, capture: Capture, path: Path, ctx: ExportContext) -> dict[str, Any] | None:
    """Write ``capture`` (made by ``method``) as ``fmt`` at ``path`` by the writer ``formats.py`` declares for them."""
    return declared(by_name(fmt).writer(method))(capture, path, ctx)
