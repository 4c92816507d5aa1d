"""LightningModules on scikit-learn's digits, shared by the callback tests and subprocesses."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def digits_loaders(batch_size: int = 64) -> tuple[DataLoader, DataLoader]:
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32) / 16.0
    y = torch.tensor(y)
    train = TensorDataset(x[:1400], y[:1400])
    val = TensorDataset(x[1400:], y[1400:])
    return DataLoader(train, batch_size=batch_size, shuffle=True), DataLoader(val, batch_size=256)


class DigitsClassifier(pl.LightningModule):
    """An MLP; ``val_score`` peaks at ``best_epoch`` by construction, so the best is not the last."""

    def __init__(self, best_epoch: int = 1, lr: float = 0.05) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        self.best_epoch = best_epoch
        self.lr = lr
        self.example_input_array = torch.randn(4, 64)
        self.training_batches = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        self.training_batches += 1
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))
        self.log("val_score", float(self.current_epoch == self.best_epoch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class DictDigits(DigitsClassifier):
    """Takes ``{"pixels", "mask"}`` and returns a dict; no example_input_array."""

    def __init__(self) -> None:
        super().__init__()
        self.example_input_array = None

    def forward(self, pixels: torch.Tensor, mask: torch.Tensor) -> dict:
        logits = self.net(pixels * mask)
        return {"logits": logits, "probs": logits.softmax(-1)}

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x, torch.ones_like(x))["logits"], y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x, torch.ones_like(x))["logits"], y))


class NotExportable(DigitsClassifier):
    """Returns a Python float beside the logits: no exporter can carry it."""

    def forward(self, x: torch.Tensor):
        return {"logits": self.net(x), "temperature": 1.5}

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.training_batches += 1
        return nn.functional.cross_entropy(self(x)["logits"], y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x)["logits"], y))
