"""What the torch runtimes share about devices: which exist here, and what to do when one does not."""

from __future__ import annotations

from lightning_deploy.runtime.placement import torch_has_device

__all__ = ["MISSING_DEVICE_HINT", "has_device"]

has_device = torch_has_device
MISSING_DEVICE_HINT = (
    "run on a machine whose torch sees that GPU (torch.cuda.is_available(), torch.cuda.device_count()),"
    " or pass device='cpu'."
)
