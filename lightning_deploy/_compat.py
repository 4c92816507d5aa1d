"""The module paths of release 0.1 (``lightning_deploy.serve``, ``.flat_files``, ...), kept working one release.

The package was flat; its parts now live in folders (``docs/design.md``). An old path is
answered by an import hook that returns the new module under the old name, with a
``DeprecationWarning`` naming the new path, so no stub file per old module is needed and
the old and new names are the same module object (``isinstance`` and patches agree).
Remove in 0.3.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

__all__ = ["MOVED", "install"]

MOVED = {
    "lightning_deploy.schema": "lightning_deploy.artifact.structure",  # with the schema's names
    "lightning_deploy.manifest": "lightning_deploy.artifact.manifest",
    "lightning_deploy.manifest_check": "lightning_deploy.artifact.validate",
    "lightning_deploy.files": "lightning_deploy.artifact.files",
    "lightning_deploy.load": "lightning_deploy.runtime.loading",
    "lightning_deploy.fast_call": "lightning_deploy.runtime.fast_call",
    "lightning_deploy.placement": "lightning_deploy.runtime.placement",
    "lightning_deploy.runtimes": "lightning_deploy.runtime.backends",
    "lightning_deploy.runtimes.onnxruntime": "lightning_deploy.runtime.backends.onnxruntime",
    "lightning_deploy.runtimes.torchscript": "lightning_deploy.runtime.backends.torchscript",
    "lightning_deploy.runtimes.pt2": "lightning_deploy.runtime.backends.pt2",
    "lightning_deploy.runtimes.aoti": "lightning_deploy.runtime.backends.aoti",
    "lightning_deploy.exporters": "lightning_deploy.exporting.methods",
    "lightning_deploy.exporters.trace": "lightning_deploy.exporting.methods.trace",
    "lightning_deploy.exporters.script": "lightning_deploy.exporting.methods.script",
    "lightning_deploy.exporters.torch_export": "lightning_deploy.exporting.methods.torch_export",
    "lightning_deploy.callback": "lightning_deploy.lightning.callback",
    "lightning_deploy.checkpoints": "lightning_deploy.lightning.checkpoints",
    "lightning_deploy.lightning_cli": "lightning_deploy.lightning.lightning_cli",
    "lightning_deploy.input_spec": "lightning_deploy.lightning.input_spec",
    "lightning_deploy.serve": "lightning_deploy.serving.server",
    "lightning_deploy.serving_io": "lightning_deploy.serving.codec",
    "lightning_deploy.triton": "lightning_deploy.serving.triton",
    "lightning_deploy.flat_files": "lightning_deploy.serving.flat_files",
    "lightning_deploy.compare": "lightning_deploy.verification.compare",
    **{
        f"lightning_deploy.{name}": f"lightning_deploy.exporting.{name}"
        for name in (
            "engine", "plan", "checks", "eager", "adapters", "dynamic", "options", "latency",
            "accuracy", "onnx_passes", "progress", "requires", "detectron2",
        )
    },
}  # fmt: skip


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path in :data:`MOVED` and loads it as the new module (the same object)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """A spec for an old path; ``None`` (the normal search) for every other name."""
        return importlib.machinery.ModuleSpec(fullname, self) if fullname in MOVED else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        """The new module itself, imported under its new name."""
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new} (the old path is removed in 0.3).", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the new module was executed when it was imported."""


def install() -> None:
    """Answer the old paths from now on (idempotent)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MovedModuleFinder())  # before the path search, which would find a second copy
