"""Run an ExecuTorch program (``STEM.pte``) with ExecuTorch's Python runtime, on the CPU.

The program's memory is planned for the largest input its dynamic dims allow (the entry's
``bounds``); the method's metadata holds those largest sizes. A bigger input is refused here
with :class:`StructureError` naming the leaf and the bound, before the runtime would fail
with its own "error 0x10" and a line on stderr.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lightning_deploy.errors import StructureError
from lightning_deploy.runtime.backends import FlatRunner

__all__ = ["ARRAYS", "MISSING_DEVICE_HINT", "RUNTIME", "has_device", "open_runner"]

RUNTIME = "executorch"
ARRAYS = "torch"
PACKAGE = "executorch"  # the pip distribution that runs it (a served model's requirements)
MISSING_DEVICE_HINT = "ExecuTorch's Python runtime runs on the CPU (XNNPACK): pass device='cpu'."


def has_device(device: str) -> bool:
    """The CPU only: the GPU delegates of ExecuTorch are for phones, not CUDA."""
    return device == "cpu"


def open_runner(path: str, input_names: Sequence[str], output_names: Sequence[str], device: str = "cpu") -> FlatRunner:
    """Load the program's ``forward`` once; the runner takes and returns flat CPU tensors."""
    from executorch.runtime import Runtime  # optional: lightning-deploy[executorch]

    method = Runtime.get().load_program(path).load_method("forward")
    meta = method.metadata
    largest = [tuple(meta.input_tensor_meta(i).sizes()) for i in range(meta.num_inputs())]

    def run(inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        for name, tensor, bound in zip(input_names, inputs, largest):
            for dim, (size, most) in enumerate(zip(tensor.shape, bound)):
                if size > most:
                    raise StructureError(
                        f"input '{name}': dim {dim} is {size}, past this ExecuTorch program's bound of {most}"
                        " (its memory is planned for at most that). HINT: split the input into parts of at most"
                        f" {most}, or re-export with a larger executorch_bounds."
                    )
        return list(method.execute([tensor.contiguous() for tensor in inputs]))

    return run
