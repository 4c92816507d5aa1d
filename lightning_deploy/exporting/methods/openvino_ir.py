"""The ``openvino`` format: OpenVINO's IR (``STEM.openvino.xml`` + ``STEM.openvino.bin``).

``openvino.convert_model`` takes the ``torch.export`` program (method ``export``), or, where
that capture failed, the ONNX graph of the trace (method ``trace``); the entry's ``derived``
records which. The IR's tensors are renamed to the manifest's leaf names, which is what
Triton's OpenVINO backend matches; ``load()`` feeds them by position. Weights stay float32
(``compress_to_fp16=False``): OpenVINO's default saves them as float16.

``openvino-bf16`` is that IR marked to run in bfloat16: ``runtime_options`` in its ``rt_info``
(OpenVINO's own place for how a model is meant to be compiled) holds
``INFERENCE_PRECISION_HINT=bf16``, which ``load()`` passes to ``compile_model``; OpenVINO
2026.4 does not apply that key by itself (measured: an IR marked f32 still compiled to bf16
on this CPU), so the entry has no Triton form. The weights stay float32 on disk; the CPU
plugin converts them once when compiling.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning_deploy.exporting.methods import torch_export, trace
from lightning_deploy.exporting.methods.base import Capture, ExportContext

__all__ = ["from_onnx", "from_program", "to_bf16", "write_from_program", "write_from_trace"]


def write_from_program(capture: Capture, path: Path, ctx: ExportContext) -> dict[str, Any]:
    """The ``openvino`` writer of method ``export``: the ``torch.export`` program converted (on the CPU)."""
    return from_program(torch_export.on_cpu(capture), path, ctx)


def write_from_trace(capture: Capture, path: Path, ctx: ExportContext) -> dict[str, Any]:
    """The ``openvino`` writer of method ``trace``: the trace's ONNX graph converted."""
    return from_onnx(lambda onnx_file: trace.write_onnx(capture, onnx_file, ctx), path, ctx)


def from_program(program: Any, path: Path, ctx: ExportContext) -> dict[str, Any]:
    """Convert a ``torch.export`` program to the IR at ``path`` (its weights beside it, ``.bin``)."""
    import openvino

    _save(openvino.convert_model(program), path, ctx)
    return {"converted_from": "torch.export program"}


def from_onnx(write_onnx: Callable[[Path], None], path: Path, ctx: ExportContext) -> dict[str, Any]:
    """Convert the ONNX graph that ``write_onnx(file)`` writes (into a folder removed after) to the IR at ``path``."""
    import openvino

    with tempfile.TemporaryDirectory(prefix=".openvino-onnx-", dir=path.parent.parent) as folder:
        onnx_file = Path(folder) / "model.onnx"
        write_onnx(onnx_file)
        _save(openvino.convert_model(str(onnx_file)), path, ctx)
    return {"converted_from": "ONNX graph"}


def _save(model: Any, path: Path, ctx: ExportContext) -> None:
    """Name the IR's inputs and outputs by the manifest's leaves and write it at float32."""
    import openvino

    for port, name in zip(model.inputs, ctx.input_names):
        port.get_tensor().set_names({name})
    for port, name in zip(model.outputs, ctx.output_names):
        port.get_tensor().set_names({name})
    openvino.save_model(model, str(path), compress_to_fp16=False)


def to_bf16(source: Path, target: Path) -> dict[str, Any]:
    """Write the IR at ``source`` to ``target`` marked to run in bfloat16 (the options refused CPUs without it)."""
    import openvino

    from lightning_deploy.runtime.backends.openvino import PRECISION_KEY

    model = openvino.Core().read_model(str(source))
    model.set_rt_info("bf16", PRECISION_KEY)
    openvino.save_model(model, str(target), compress_to_fp16=False)
    return {"pass": "OpenVINO IR with runtime_options INFERENCE_PRECISION_HINT=bf16", "precision": "bfloat16"}
