"""Run a TorchScript artifact with ``torch.jit.load``."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from lightning_deploy.runtimes import FlatRunner

__all__ = ["ARRAYS", "RUNTIME", "open_runner"]

RUNTIME = "torch.jit"
ARRAYS = "torch"


def open_runner(path: str, input_names: Sequence[str], output_names: Sequence[str]) -> FlatRunner:
    """Load ``path`` on the CPU; the module takes and returns flat tensors."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated", category=FutureWarning)  # supported on purpose
        module = torch.jit.load(path, map_location="cpu")

    def run(inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        with torch.no_grad():
            return list(module(*inputs))

    return run
