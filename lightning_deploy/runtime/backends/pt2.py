"""Run a ``torch.export`` artifact with ``torch.export.load``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.export.passes import move_to_device_pass

from lightning_deploy.runtime.backends import FlatRunner
from lightning_deploy.runtime.backends.torch_device import MISSING_DEVICE_HINT, TorchRunner, has_device, without_grad

__all__ = ["ARRAYS", "MISSING_DEVICE_HINT", "RUNTIME", "has_device", "on_device", "open_runner"]

RUNTIME = "torch.export"
ARRAYS = "torch"
PACKAGE = "torch"  # the pip distribution that runs it (a served model's requirements)


def open_runner(path: str, input_names: Sequence[str], output_names: Sequence[str], device: str = "cpu") -> FlatRunner:
    """Load ``path``; its weights and device constants are moved to ``device`` where they live elsewhere.

    ``torch.export.load`` gives CPU weights even for a program saved from a GPU (measured,
    torch 2.11 on an H200), while its graph still says ``cuda``; ``move_to_device_pass`` is
    torch's own way to re-home an ``ExportedProgram`` (weights, buffers and the ``device=``
    arguments in its graph), so it runs where asked, on the CPU or a GPU.
    """
    return TorchRunner(without_grad(on_device(torch.export.load(path), device).module()))


def on_device(program: torch.export.ExportedProgram, device: str) -> torch.export.ExportedProgram:
    """``program`` with its weights, buffers and constants on ``device`` (itself where they are there already)."""
    target = torch.device(device)
    tensors = [*program.state_dict.values(), *program.constants.values()]
    if any(isinstance(t, torch.Tensor) and t.device != target for t in tensors):
        return move_to_device_pass(program, target)
    return program
