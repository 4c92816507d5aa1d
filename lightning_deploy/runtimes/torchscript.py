"""Run a TorchScript artifact with ``torch.jit.load``."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from lightning_deploy.runtimes import FlatRunner

__all__ = ["ARRAYS", "RUNTIME", "open_native", "open_runner"]

RUNTIME = "torch.jit"
ARRAYS = "torch"


def open_runner(path: str, input_names: Sequence[str], output_names: Sequence[str]) -> FlatRunner:
    """Load ``path`` on the CPU; the module takes and returns flat tensors."""
    module = _load(path)

    def run(inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        with torch.no_grad():
            return list(module(*inputs))

    return run


def open_native(path: str) -> Callable[..., Any]:
    """Load ``path`` on the CPU; the module takes ``forward``'s own (keyword) arguments."""
    module = _load(path)

    def run(**arguments: Any) -> Any:
        with torch.no_grad():
            return module(**arguments)

    return run


def _load(path: str) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated", category=FutureWarning)  # supported on purpose
        return torch.jit.load(path, map_location="cpu")
