"""Run OpenVINO's IR (``STEM.openvino.xml``, weights in ``STEM.openvino.bin``) with OpenVINO, at its precision.

OpenVINO picks its inference precision per CPU: bfloat16 where the CPU has it (measured on
this AMD EPYC: resnet18 0.016 from eager in bf16, 4e-6 in f32). ``INFERENCE_PRECISION_HINT``
pins the precision the IR says (``openvino-bf16``: bf16, in its ``runtime_options``), else
float32, so that what ran at verification is what ``load()`` runs. Imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lightning_deploy.runtime.backends import FlatRunner

__all__ = [
    "ARRAYS",
    "MISSING_DEVICE_HINT",
    "PRECISION_KEY",
    "RUNTIME",
    "cpu_capabilities",
    "has_bf16",
    "has_device",
    "open_runner",
    "require_bf16",
]

RUNTIME = "openvino"
ARRAYS = "numpy"
PACKAGE = "openvino"  # the pip distribution that runs it (a served model's requirements)
MISSING_DEVICE_HINT = (
    "OpenVINO runs on Intel's devices (its CPU plugin on any x86 or ARM CPU), not on CUDA GPUs: pass device='cpu'."
)
# Where an IR says the precision it was verified at (openvino_ir.to_bf16 writes it; load() applies it).
PRECISION_KEY = ["runtime_options", "INFERENCE_PRECISION_HINT"]


def cpu_capabilities() -> list[str]:
    """OpenVINO's CPU plugin's ``OPTIMIZATION_CAPABILITIES`` here (``FP32``, ``INT8``, ``BF16`` where it has it)."""
    import openvino

    return list(openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes in bfloat16 here (``avx512_bf16`` or AMX): its own capability list."""
    return "BF16" in cpu_capabilities()


def require_bf16(what: str) -> None:
    """Refuse ``what`` on a CPU without bfloat16 arithmetic, where OpenVINO would emulate it or run float32."""
    if not has_bf16():
        from lightning_deploy.errors import LoadError

        raise LoadError(
            f"{what}: this CPU has no bfloat16 arithmetic (OpenVINO's CPU capabilities here are"
            f" {', '.join(cpu_capabilities())}, without BF16; it needs avx512_bf16 or AMX), so a bf16 artifact would"
            " not run as verified. HINT: use the float32 'openvino' artifact here, or make and run the bf16 one on a"
            " CPU that has it."
        )


def has_device(device: str) -> bool:
    """The CPU: CUDA GPUs are no OpenVINO device."""
    return device == "cpu"


def open_runner(path: str, input_names: Sequence[str], output_names: Sequence[str], device: str = "cpu") -> FlatRunner:
    """Compile the IR for the CPU once, at its precision; the runner maps input arrays to output arrays by position."""
    import openvino  # optional: lightning-deploy[openvino]

    core = openvino.Core()
    model = core.read_model(path)
    precision = model.get_rt_info(PRECISION_KEY).astype(str) if model.has_rt_info(PRECISION_KEY) else "f32"
    if precision == "bf16":
        require_bf16(path)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision})
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
