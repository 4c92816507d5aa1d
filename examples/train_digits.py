"""Main job: train a small classifier on scikit-learn's digits; ModelExport exports the best checkpoint.

Run: ``.venv/bin/python examples/train_digits.py [--root DIR] [--epochs N]``
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from rich.console import Console

from lightning_deploy import ModelExport

sys.path.insert(0, str(Path(__file__).parent))
from digits import DigitsMLP, loaders

__all__ = ["DigitsMLP", "loaders", "main"]


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
