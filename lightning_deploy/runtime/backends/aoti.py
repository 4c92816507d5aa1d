"""Run an AOTInductor package (``STEM.aoti.pt2``) with ``torch._inductor.aoti_load_package``.

The package holds machine code compiled for one kind of device; ``load()`` refuses another
kind before it gets here (``placement.COMPILED_FORMATS``). The GPU's index is chosen at load.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch._inductor

from lightning_deploy.runtime.backends import FlatRunner
from lightning_deploy.runtime.backends.torch_device import MISSING_DEVICE_HINT, TorchRunner, has_device
from lightning_deploy.runtime.placement import device_index

__all__ = ["ARRAYS", "MISSING_DEVICE_HINT", "RUNTIME", "has_device", "open_runner"]

RUNTIME = "aotinductor"
ARRAYS = "torch"
PACKAGE = "torch"  # the pip distribution that runs it (a served model's requirements)


def open_runner(path: str, input_names: Sequence[str], output_names: Sequence[str], device: str = "cpu") -> FlatRunner:
    """Load the package's compiled model onto ``device``; it takes and returns flat tensors."""
    return TorchRunner(torch._inductor.aoti_load_package(path, device_index=device_index(device)))
