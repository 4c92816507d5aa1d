"""Run a ``torch.export`` artifact with ``torch.export.load``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lightning_deploy.runtimes import FlatRunner

__all__ = ["ARRAYS", "RUNTIME", "open_runner"]

RUNTIME = "torch.export"
ARRAYS = "torch"


def open_runner(path: str, input_names: Sequence[str], output_names: Sequence[str]) -> FlatRunner:
    """Load ``path``; its module takes and returns flat tensors."""
    module = torch.export.load(path).module()

    def run(inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        with torch.no_grad():
            return list(module(*inputs))

    return run
