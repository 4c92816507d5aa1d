"""Where the callback finds real data: the validation loader, for the checks, the int8 calibration and the metrics."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities.model_helpers import is_overridden
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import nn
from torch.utils.data import DataLoader

from lightning_deploy.errors import ConfigurationError
from lightning_deploy.exporting.adapters import bind_sample
from lightning_deploy.exporting.verifying.checks import samples_from_batches

__all__ = ["samples_to_check", "validation_loader"]


def validation_loader(
    trainer: pl.Trainer | None, model: nn.Module, datamodule: pl.LightningDataModule | None = None
) -> DataLoader | None:
    """The validation loader: the trainer's (after fit), else the datamodule's or the model's own (one loader only)."""
    if trainer is not None:
        loaders = trainer.val_dataloaders
    elif datamodule is not None and is_overridden("val_dataloader", datamodule):
        datamodule.setup("validate")
        loaders = datamodule.val_dataloader()
    elif isinstance(model, pl.LightningModule) and is_overridden("val_dataloader", model):
        loaders = model.val_dataloader()
    else:
        return None
    return loaders if isinstance(loaders, DataLoader) else None


def samples_to_check(
    model: nn.Module, target: nn.Module, loader: DataLoader | None, limit: int, submodule: str | None
) -> dict[str, Any] | None:
    """Forward's inputs from the first ``limit`` validation batches, by source (``ModelExport(check_batches=...)``).

    Batches that give no inputs for the exported module (``target``) are skipped with a warning,
    so that data of another form never costs the export.
    """
    if loader is None or limit == 0:
        return None
    if submodule is not None and not callable(getattr(model, "export_sample", None)):
        reason = (
            f"a batch holds the inputs of {type(model).__name__}, not of its submodule {submodule!r}."
            " HINT: define export_sample(batch) returning the submodule's inputs, or pass check_batches=0."
        )
        found: list[tuple[str, Any]] = []
    else:
        found, reason = samples_from_batches(model, loader, limit)
    for source, sample in found:
        try:
            bind_sample(target, sample, source)
        except ConfigurationError as err:
            found, reason = [], f"{err} Or define export_sample(batch) returning forward's inputs."
            break
    if reason:
        rank_zero_warn(f"ModelExport(check_batches={limit}): not verified on data: {reason}")
    return dict(found) or None
