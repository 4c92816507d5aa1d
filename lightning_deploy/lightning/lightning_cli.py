"""``LightningDeployCLI``: LightningCLI with an ``export`` subcommand beside fit/validate/test/predict.

The one-line change for a LightningCLI user: ``LightningCLI(...)`` becomes
``LightningDeployCLI(...)``. Then ``python train.py export --config config.yaml --ckpt_path
BEST`` rebuilds the model from the same YAML, loads the checkpoint's weights and exports them
with the ``ModelExport`` settings found under ``trainer.callbacks``.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI

from lightning_deploy.errors import ConfigurationError, ExportError
from lightning_deploy.lightning.callback import ModelExport

__all__ = ["LightningDeployCLI"]


class _ExportingTrainer:
    """Adds ``export`` to a Trainer class, so that LightningCLI can offer it as a subcommand."""

    def export(self, model: pl.LightningModule, ckpt_path: str, datamodule: Any = None) -> None:
        """Export a checkpoint with the ModelExport settings of this configuration (no training).

        Args:
            model: the model built from the configuration; the checkpoint's weights are loaded into a copy.
            ckpt_path: the checkpoint to export; artifacts are written beside it.
            datamodule: the configuration's datamodule: its validation batches verify the artifacts
                (``ModelExport(check_batches=...)``).

        Raises:
            ConfigurationError: when the configuration has no ModelExport callback.
            ExportError: when an artifact failed (the manifest says which and why).
        """
        callbacks = [c for c in self.callbacks if isinstance(c, ModelExport)]  # type: ignore[attr-defined]
        if not callbacks:
            raise ConfigurationError(
                "export: the configuration has no ModelExport callback. HINT: add"
                " {class_path: lightning_deploy.ModelExport} under trainer.callbacks in the YAML."
            )
        manifest = callbacks[0].export_checkpoint(model, ckpt_path, datamodule=datamodule)
        if not manifest["ok"]:
            failed = "; ".join(f"{a['format']}: {a['error']}" for a in manifest["artifacts"] if not a["ok"])
            raise ExportError(f"export of {ckpt_path} failed: {failed}")


def _with_export(trainer_class: type[pl.Trainer]) -> type[pl.Trainer]:
    return type(trainer_class.__name__, (_ExportingTrainer, trainer_class), {"__module__": trainer_class.__module__})


class LightningDeployCLI(LightningCLI):
    """``LightningCLI`` plus an ``export`` subcommand driven by the same YAML.

    Pass ``trainer_class`` by keyword, if at all.

    Examples:
        >>> LightningDeployCLI(DigitsModel, DigitsData)  # doctest: +SKIP
    """

    def __init__(self, *args: Any, trainer_class: type[pl.Trainer] = pl.Trainer, **kwargs: Any) -> None:
        super().__init__(*args, trainer_class=_with_export(trainer_class), **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Lightning's subcommands plus ``export`` (which takes the model, not data)."""
        return {**LightningCLI.subcommands(), "export": {"model", "datamodule"}}
