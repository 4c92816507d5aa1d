"""A writer for the race test: exports its own model into a shared folder each time it is told to.

Usage: python race_writer.py FOLDER NAME SEED ROUNDS SIGNALS. For each round i it waits for
``SIGNALS/go-i``, exports an MLP with weights from ``SEED`` into ``FOLDER`` as stem ``model``
(recording ``NAME.ckpt`` as its checkpoint, so the manifest says which writer wrote it), then
writes ``SIGNALS/done-i-NAME``. Importing torch once for all rounds keeps the rounds short,
so the two writers' installs really overlap.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from lightning_deploy import export

FORMATS = ["torchscript", "onnx", "pt2"]


def writer_model(seed: int) -> nn.Module:
    """The MLP a writer exports; the test rebuilds it to tell the writers' outputs apart."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()


def main() -> None:
    """Export once per go signal."""
    warnings.filterwarnings("ignore")
    folder, name, seed, rounds, signals = (
        Path(sys.argv[1]),
        sys.argv[2],
        int(sys.argv[3]),
        int(sys.argv[4]),
        Path(sys.argv[5]),
    )
    model = writer_model(seed)
    for index in range(rounds):
        while not (signals / f"go-{index}").exists():
            time.sleep(0.005)
        export(model, torch.randn(2, 16), folder, "model", formats=FORMATS, checkpoint=folder / f"{name}.ckpt")
        (signals / f"done-{index}-{name}").touch()


if __name__ == "__main__":
    main()
