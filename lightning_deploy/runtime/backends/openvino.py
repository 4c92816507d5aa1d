"""Run OpenVINO's IR (``STEM.openvino.xml``, weights in ``STEM.openvino.bin``) with OpenVINO, at float32.

OpenVINO picks its inference precision per CPU: bfloat16 where the CPU has it (measured on
this AMD EPYC: resnet18 0.016 from eager in bf16, 4e-6 in f32). ``INFERENCE_PRECISION_HINT``
pins float32, so that what ran at verification is what ``load()`` runs. Imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lightning_deploy.runtime.backends import FlatRunner

__all__ = ["ARRAYS", "MISSING_DEVICE_HINT", "RUNTIME", "has_device", "open_runner"]

RUNTIME = "openvino"
ARRAYS = "numpy"
MISSING_DEVICE_HINT = (
    "OpenVINO runs on Intel's devices (its CPU plugin on any x86 or ARM CPU), not on CUDA GPUs: pass device='cpu'."
)
# What the verification ran at; OpenVINO's own default may be bf16 or f16 on this CPU.
COMPILE_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


def has_device(device: str) -> bool:
    """The CPU: CUDA GPUs are no OpenVINO device."""
    return device == "cpu"


def open_runner(path: str, input_names: Sequence[str], output_names: Sequence[str], device: str = "cpu") -> FlatRunner:
    """Compile the IR for the CPU once, at float32; the runner maps input arrays to output arrays by position."""
    import openvino  # optional: lightning-deploy[openvino]

    compiled = openvino.Core().compile_model(path, "CPU", COMPILE_CONFIG)
    request = compiled.create_infer_request()
    count = len(compiled.outputs)

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        # Inputs shared, not copied; outputs copied out of the request's buffers, which the next call reuses.
        # A third of the time of request.infer(list), which builds a dict of copies (measured: MLP, 1 row).
        for index, array in enumerate(inputs):
            request.set_input_tensor(index, openvino.Tensor(np.ascontiguousarray(array), shared_memory=True))
        request.infer()
        return [request.get_output_tensor(index).data.copy() for index in range(count)]

    return run
