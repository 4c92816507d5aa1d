"""The module paths release 0.1 documented (``lightning_deploy.serve``, ``.flat_files``, ...), kept one release.

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

# The five module paths 0.1's documentation named; its other modules were internal and moved without an alias
# (CHANGELOG.md lists where).
MOVED = {
    "lightning_deploy.schema": "lightning_deploy.artifact.structure",  # Record
    "lightning_deploy.load": "lightning_deploy.runtime.loading",  # ExportedModel, resolve_artifact, bind_arguments
    "lightning_deploy.lightning_cli": "lightning_deploy.lightning.lightning_cli",  # LightningDeployCLI
    "lightning_deploy.serve": "lightning_deploy.serving.server",  # ExportedModelAPI, serve
    "lightning_deploy.flat_files": "lightning_deploy.serving.flat_files",  # save_inputs, load_outputs
}


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
