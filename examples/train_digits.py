"""Main job: train a small classifier on scikit-learn's digits; ModelExport exports the best checkpoint.

Run: ``.venv/bin/python examples/train_digits.py [--root DIR] [--epochs N]``
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from rich.console import Console
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_deploy import ModelExport


class DigitsMLP(pl.LightningModule):
    """An 8x8-pixel digit classifier; ``example_input_array`` is what ModelExport exports with."""

    def __init__(self, hidden: int = 64, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
        self.example_input_array = torch.zeros(4, 64)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net(pixels)

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        pixels, labels = batch
        return nn.functional.cross_entropy(self(pixels), labels)

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        pixels, labels = batch
        logits = self(pixels)
        self.log("val_loss", nn.functional.cross_entropy(logits, labels))
        self.log("val_acc", (logits.argmax(-1) == labels).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def loaders() -> tuple[DataLoader, DataLoader]:
    pixels, labels = load_digits(return_X_y=True)
    pixels = torch.tensor(pixels, dtype=torch.float32) / 16.0
    labels = torch.tensor(labels)
    train, val = TensorDataset(pixels[:1400], labels[:1400]), TensorDataset(pixels[1400:], labels[1400:])
    return DataLoader(train, batch_size=64, shuffle=True), DataLoader(val, batch_size=256)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=Path("artifacts/digits"), help="the run's folder")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    pl.seed_everything(0)
    exporter = ModelExport(formats=["torchscript", "onnx", "pt2"])
    trainer = pl.Trainer(
        default_root_dir=args.root, max_epochs=args.epochs, accelerator="cpu", devices=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=args.root / "checkpoints", monitor="val_acc", mode="max"), exporter],
    )  # fmt: skip
    trainer.fit(DigitsMLP(), *loaders())
    manifest = exporter.manifest
    console = Console(width=max(110, Console().width))
    best = Path(trainer.checkpoint_callback.best_model_path)
    console.print(f"best checkpoint: {best}")
    console.print(f"files beside it: {sorted(p.name for p in best.parent.iterdir() if p.name.startswith(best.stem))}")
    brief = {k: v for k, v in manifest.items() if k not in ("inputs", "outputs", "artifacts")}
    console.print("manifest (header):")
    console.print_json(json.dumps(brief))


if __name__ == "__main__":
    main()
