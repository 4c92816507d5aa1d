"""Exporters by method name: the engine looks them up here, with no if/elif chains."""

from __future__ import annotations

from lightning_deploy.exporting.methods.base import Capture, ExportContext, Exporter
from lightning_deploy.exporting.methods.script import ScriptExporter
from lightning_deploy.exporting.methods.torch_export import TorchExportExporter
from lightning_deploy.exporting.methods.trace import TraceExporter

__all__ = ["EXPORTERS", "Capture", "ExportContext", "Exporter"]

EXPORTERS: dict[str, Exporter] = {
    exporter.method: exporter for exporter in (TraceExporter(), ScriptExporter(), TorchExportExporter())
}
