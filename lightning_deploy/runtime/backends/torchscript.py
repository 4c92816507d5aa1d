"""Run a TorchScript artifact with ``torch.jit.load``."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from lightning_deploy.runtime.backends import FlatRunner
from lightning_deploy.runtime.backends.torch_device import MISSING_DEVICE_HINT, TorchRunner, has_device, without_grad

__all__ = ["ARRAYS", "MISSING_DEVICE_HINT", "RUNTIME", "has_device", "open_native", "open_runner"]

RUNTIME = "torch.jit"
ARRAYS = "torch"
PACKAGE = "torch"  # the pip distribution that runs it (a served model's requirements)


def open_runner(path: str, input_names: Sequence[str], output_names: Sequence[str], device: str = "cpu") -> FlatRunner:
    """Load ``path`` onto ``device`` (``map_location``); the module takes and returns flat tensors."""
    return TorchRunner(without_grad(_load(path, device)))


def open_native(path: str, device: str = "cpu") -> Callable[..., Any]:
    """Load ``path`` onto ``device``; the module takes ``forward``'s own (keyword) arguments."""
    module = _load(path, device)

    def run(**arguments: Any) -> Any:
        with torch.no_grad():
            return module(**arguments)

    return run


def _load(path: str, device: str) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated", category=FutureWarning)  # supported on purpose
        return torch.jit.load(path, map_location=device)
