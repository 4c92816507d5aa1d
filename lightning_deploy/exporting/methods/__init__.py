"""Exporters by method name, and the formats' declared writers: the engine looks both up here, no if/elif chains."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from lightning_deploy.exporting.methods.base import Capture, ExportContext, Exporter
from lightning_deploy.exporting.methods.script import ScriptExporter
from lightning_deploy.exporting.methods.torch_export import TorchExportExporter
from lightning_deploy.exporting.methods.trace import TraceExporter
from lightning_deploy.formats import by_name

__all__ = ["EXPORTERS", "Capture", "ExportContext", "Exporter", "write"]

EXPORTERS: dict[str, Exporter] = {
    exporter.method: exporter for exporter in (TraceExporter(), ScriptExporter(), TorchExportExporter())
}


def write(fmt: str, method: str, capture: Capture, path: Path, ctx: ExportContext) -> dict[str, Any] | None:
    """Write ``capture`` (made by ``method``) as ``fmt`` at ``path`` by the writer ``formats.py`` declares for them.

    The writer's module is imported when it is first used: ExecuTorch's and OpenVINO's are
    optional packages, slow to import.
    """
    module, _, function = by_name(fmt).writer(method).partition(":")
    return getattr(importlib.import_module(f"lightning_deploy.exporting.{module}"), function)(capture, path, ctx)
