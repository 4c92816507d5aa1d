"""A LightningModule of N x Linear(8192, 8192) (256 MiB of float32 weights each), for the big-model tests.

Only the last layer trains (SGD, no momentum), so that a training step of an 8 GB model adds
one layer's gradients and no optimizer state: the test measures the export, not Adam. Every
weight is scaled by 1.7 so that outputs keep their size through the layers (with torch's
default init each Linear shrinks them by about 1.7), and a comparison of 30 layers' outputs
compares numbers, not zeros.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

WIDTH = 8192


class BigMLP(pl.LightningModule):
    def __init__(self, layers: int = 2, width: int = WIDTH) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(*(nn.Linear(width, width) for _ in range(layers)))
        with torch.no_grad():
            for layer in self.net:
                layer.weight.mul_(1.7)
                layer.requires_grad_(False)
        self.net[-1].requires_grad_(True)
        self.example_input_array = torch.randn(2, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self(x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=1e-4)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.randn(4, self.hparams.width)), batch_size=2)
