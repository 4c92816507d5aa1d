"""What an artifact needs at run time beyond its runtime: operator libraries (``requires``).

A TorchScript or ``.pt2`` artifact that calls ``torchvision::nms`` loads only where those
operators are registered (``import torchvision``); ``load()`` in a fresh process otherwise fails
with "Unknown builtin op". The artifact's own code names its operator namespaces
(``ops.torchvision.nms`` in TorchScript's code files, ``torch.ops.torchvision.nms.default`` in a
``.pt2``'s graph), so they are read from the saved file. An ONNX model names custom operator
domains in its ``opset_import``; those are recorded as ``onnx-domain:NAME`` (ONNX Runtime needs
their library registered; nothing to import).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

__all__ = ["required_packages"]

# Operator namespaces that torch itself registers.
_TORCH_NAMESPACES = frozenset({
    "aten", "prim", "prims", "higher_order", "quantized", "_quantized", "quantized_decomposed", "profiler",
    "c10d", "_c10d_functional", "_c10d_functional_autograd", "_dtensor", "inductor", "mkldnn", "onednn",
    "debugprims", "rngprims", "cuda", "fbgemm", "_nested", "_prims", "attr", "symm_mem", "_test", "torch",
})  # fmt: skip
# Domains ONNX Runtime implements itself (the standard ones and its contrib operators).
_ONNXRUNTIME_DOMAINS = frozenset({
    "", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training", "ai.onnx.training", "com.microsoft",
    "com.microsoft.nchwc", "com.microsoft.experimental", "com.ms.internal.nhwc",
})  # fmt: skip
_OP_CALL = re.compile(rb"(?<![\w.])(?:torch\.)?ops\.([A-Za-z_]\w*)\.[A-Za-z_]")
_CODE_SUFFIXES = (".py", ".json")


def required_packages(fmt: str, path: Path) -> list[str]:
    """The packages (or ``onnx-domain:NAME``) that the artifact at ``path`` needs besides its runtime."""
    if path.suffix == ".onnx":
        return _onnx_domains(path)
    if not zipfile.is_zipfile(path):
        return []
    found: set[str] = set()
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if member.endswith(_CODE_SUFFIXES):
                found.update(m.decode() for m in _OP_CALL.findall(archive.read(member)))
    return sorted(found - _TORCH_NAMESPACES)


def _onnx_domains(path: Path) -> list[str]:
    import onnx  # the export side only

    model = onnx.load(str(path), load_external_data=False)
    local = {f.domain for f in model.functions}
    used = {node.domain for node in model.graph.node}
    return [f"onnx-domain:{d}" for d in sorted(used - local - _ONNXRUNTIME_DOMAINS)]
