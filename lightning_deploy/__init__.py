"""lightning-deploy: verified deployable artifacts from PyTorch Lightning models.

Public API: ``ModelExport`` (the callback), ``export`` (the engine) and ``load`` (run an
artifact with structured I/O).
Imports are lazy so that ``from lightning_deploy import load`` of an ONNX artifact works
with only ``onnxruntime`` and ``numpy`` installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Eager, not lazy: importing the submodule ``lightning_deploy.load`` (the verifier does) would
# otherwise leave the package attribute ``load`` bound to that module instead of the function.
# It is torch-free (numpy and, for ONNX, onnxruntime only when an artifact is opened).
from lightning_deploy.load import load

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigurationError",
    "ExportError",
    "IntegrityError",
    "LightningDeployError",
    "LoadError",
    "ModelExport",
    "StructureError",
    "export",
    "load",
]

_LAZY = {
    "export": "lightning_deploy.engine",
    "ModelExport": "lightning_deploy.callback",
    "CheckpointError": "lightning_deploy.errors",
    "ConfigurationError": "lightning_deploy.errors",
    "ExportError": "lightning_deploy.errors",
    "IntegrityError": "lightning_deploy.errors",
    "LightningDeployError": "lightning_deploy.errors",
    "LoadError": "lightning_deploy.errors",
    "StructureError": "lightning_deploy.errors",
}

if TYPE_CHECKING:
    from lightning_deploy.callback import ModelExport
    from lightning_deploy.engine import export
    from lightning_deploy.errors import (
        CheckpointError,
        ConfigurationError,
        ExportError,
        IntegrityError,
        LightningDeployError,
        LoadError,
        StructureError,
    )


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lightning_deploy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
