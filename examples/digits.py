"""The examples' model and data: scikit-learn's digits (shipped with scikit-learn, no download)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class DigitsMLP(pl.LightningModule):
    """An 8x8-pixel digit classifier.

    Args:
        hidden: width of the hidden layer.
        lr: SGD learning rate.
    """

    def __init__(self, hidden: int = 64, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
        self.example_input_array = torch.zeros(4, 64)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net(pixels)

    def training_step(self, batch, batch_idx):
        pixels, labels = batch
        return nn.functional.cross_entropy(self(pixels), labels)

    def validation_step(self, batch, batch_idx):
        pixels, labels = batch
        logits = self(pixels)
        self.log("val_loss", nn.functional.cross_entropy(logits, labels))
        self.log("val_acc", (logits.argmax(-1) == labels).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class DigitsData(pl.LightningDataModule):
    """Digits split 1400 / 397.

    Args:
        batch_size: training batch size.
    """

    def __init__(self, batch_size: int = 64) -> None:
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage: str) -> None:
        pixels, labels = load_digits(return_X_y=True)
        pixels = torch.tensor(pixels, dtype=torch.float32) / 16.0
        labels = torch.tensor(labels)
        self.train = TensorDataset(pixels[:1400], labels[:1400])
        self.val = TensorDataset(pixels[1400:], labels[1400:])

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=256)


def loaders() -> tuple[DataLoader, DataLoader]:
    """The train and validation loaders of ``DigitsData``, for plain ``Trainer.fit`` scripts."""
    data = DigitsData()
    data.setup("fit")
    return data.train_dataloader(), data.val_dataloader()
