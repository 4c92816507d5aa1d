"""Wall time that ModelExport adds to ``fit``, and the share of it spent verifying.

Run: ``.venv/bin/python benchmarks/callback_cost.py`` (prints a table; asserts nothing).
For each model the same fit runs without the callback, with it (preflight off) and with it
(preflight on, the default), side by side in one process.
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import torch
import torchvision
from lightning.pytorch.callbacks import ModelCheckpoint
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
from train_digits import DigitsMLP, loaders

from lightning_deploy import ModelExport

FORMATS = ["torchscript", "onnx", "pt2"]


class ResNetClassifier(pl.LightningModule):
    """torchvision's resnet18 (weights=None) on synthetic 112x112 images."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torchvision.models.resnet18(weights=None, num_classes=10)
        self.example_input_array = torch.randn(2, 3, 224, 224)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.net(images)

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        """Cross-entropy on one batch."""
        images, labels = batch
        return nn.functional.cross_entropy(self(images), labels)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Plain SGD."""
        return torch.optim.SGD(self.parameters(), lr=0.01)


def resnet_loaders() -> tuple[DataLoader]:
    """Four batches of 8 random images."""
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.randn(32, 3, 112, 112, generator=generator), torch.randint(0, 10, (32,), generator=generator)
    return (DataLoader(TensorDataset(images, labels), batch_size=8),)


def timed_fit(make_model: Callable, make_loaders: Callable, epochs: int, export: ModelExport | None) -> float:
    """Seconds of one ``fit`` in a fresh folder."""
    with tempfile.TemporaryDirectory() as root:
        callbacks = [ModelCheckpoint(dirpath=root), *([export] if export else [])]
        trainer = pl.Trainer(default_root_dir=root, max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                             enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks)  # fmt: skip
        pl.seed_everything(0, verbose=False)
        start = time.perf_counter()
        trainer.fit(make_model(), *make_loaders())
        return time.perf_counter() - start


def main() -> None:
    """Measure both models and print one table."""
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    table = Table(title="ModelExport's cost at fit end (formats: torchscript, onnx, pt2; verified)")
    for column in ("model", "fit alone s", "+ export s", "added s", "verify s (share)", "+ preflight s", "added s"):
        table.add_column(column)
    for name, make_model, make_loaders, epochs in (
        ("digits MLP", DigitsMLP, loaders, 5),
        ("resnet18 224x224", ResNetClassifier, resnet_loaders, 1),
    ):
        alone = timed_fit(make_model, make_loaders, epochs, None)
        callback = ModelExport(formats=FORMATS, preflight=False)
        with_export = timed_fit(make_model, make_loaders, epochs, callback)
        attempts = [a for artifact in callback.manifest["artifacts"] for a in artifact["attempts"]]
        verify = sum(a["seconds"].get("verify", 0.0) for a in attempts)
        with_preflight = timed_fit(make_model, make_loaders, epochs, ModelExport(formats=FORMATS))
        added = with_export - alone
        share = f"{verify:.2f} ({verify / added:.0%})"
        table.add_row(name, f"{alone:.2f}", f"{with_export:.2f}", f"{added:.2f}", share,
                      f"{with_preflight:.2f}", f"{with_preflight - alone:.2f}")  # fmt: skip
    Console(width=120).print(table)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
