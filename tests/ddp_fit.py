"""Run a 2-process DDP fit on CPU (gloo) with ModelExport; used by test_ddp.py as a subprocess.

Usage: python ddp_fit.py ROOT {good,broken,preflight}

``preflight``: an unexportable model with ``ModelExport(preflight=True, strict=True)``: the
preflight on rank zero fails and every rank must stop before training.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch.distributed as dist
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning_models import DigitsClassifier, NotExportable, digits_loaders

from lightning_deploy import ModelExport

if __name__ == "__main__":
    warnings.simplefilter("ignore")
    root, kind = Path(sys.argv[1]), sys.argv[2]
    pl.seed_everything(0)
    model = DigitsClassifier() if kind == "good" else NotExportable()
    preflight = kind in ("good", "preflight")  # the good run also exercises the preflight's broadcast in setup
    trainer = pl.Trainer(
        default_root_dir=root, max_epochs=2, accelerator="cpu", devices=2, strategy="ddp", logger=False,
        enable_progress_bar=False, enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=root / "ckpt", monitor="val_loss"),
                   ModelExport(formats=["onnx", "torchscript"], preflight=preflight, strict=kind == "preflight")],
    )  # fmt: skip
    try:
        trainer.fit(model, *digits_loaders())
    finally:
        print(f"rank {trainer.global_rank} trained {model.training_batches} batches", flush=True)
    print(f"rank {trainer.global_rank} finished", flush=True)
    # PyTorch's documented shutdown: without it, gloo's worker threads can still hold work at
    # interpreter exit and abort the process (SIGABRT, "terminate called without an active
    # exception"; pytorch/pytorch#190489), after everything, export included, has finished.
    if dist.is_initialized():
        dist.destroy_process_group()
