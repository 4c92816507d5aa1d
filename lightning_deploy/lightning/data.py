"""Where the callback finds real data: the validation loader, for the checks and the int8 calibration."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import nn
from torch.utils.data import DataLoader

__all__ = ["validation_loader"]


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
