"""lightning-deploy: verified deployable artifacts from PyTorch Lightning models.

Public API: ``ModelExport`` (the callback), ``export`` (the engine) and ``load`` (run an
artifact with structured I/O).
Imports are lazy so that ``from lightning_deploy import load`` of an ONNX artifact works
with only ``onnxruntime`` and ``numpy`` installed. The parts and the way they depend on
each other are in ``docs/design.md``.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from lightning_deploy import _compat

__version__ = "0.2.0"

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
    "verify",
]

_LAZY = {
    "load": "lightning_deploy.runtime.loading",  # torch-free: numpy, and onnxruntime once an artifact opens
    "export": "lightning_deploy.exporting.engine",
    "ModelExport": "lightning_deploy.lightning.callback",
    "verify": "lightning_deploy.verification.rerun",  # torch-free, as load()
    "CheckpointError": "lightning_deploy.errors",
    "ConfigurationError": "lightning_deploy.errors",
    "ExportError": "lightning_deploy.errors",
    "IntegrityError": "lightning_deploy.errors",
    "LightningDeployError": "lightning_deploy.errors",
    "LoadError": "lightning_deploy.errors",
    "StructureError": "lightning_deploy.errors",
}

if TYPE_CHECKING:
    from lightning_deploy.errors import (
        CheckpointError,
        ConfigurationError,
        ExportError,
        IntegrityError,
        LightningDeployError,
        LoadError,
        StructureError,
    )
    from lightning_deploy.exporting.engine import export
    from lightning_deploy.lightning.callback import ModelExport
    from lightning_deploy.runtime.loading import load
    from lightning_deploy.verification.rerun import verify


# The training side's packages (the `train` extra); a deployment-side install has none of them.
_TRAINING_PACKAGES = ("torch", "lightning", "onnx", "onnxscript", "jsonargparse", "yaml")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        try:
            module = importlib.import_module(_LAZY[name])
        except ModuleNotFoundError as err:
            if (err.name or "").partition(".")[0] not in _TRAINING_PACKAGES:
                raise
            raise ModuleNotFoundError(
                f"lightning_deploy.{name} is on the training side and needs {err.name}, not installed here."
                " HINT: pip install 'lightning-deploy[train]' (load, verify and serve need only the runtime).",
                name=err.name,
            ) from None
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lightning_deploy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


class _Package(types.ModuleType):
    """This package, whose public functions keep their names when a submodule of the same name is imported.

    Importing a submodule binds it on its parent; the old path ``lightning_deploy.load``
    (``_compat``) would so replace the function ``load``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in __all__ and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
_compat.install()
