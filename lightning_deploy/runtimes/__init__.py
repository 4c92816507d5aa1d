"""Runtimes by artifact format, imported lazily so that ONNX needs neither torch nor onnx.

Every runtime module defines ``RUNTIME`` (its name), ``ARRAYS`` (``"numpy"`` or
``"torch"``, the array type it takes and returns), ``has_device(device)`` (whether this
machine can run it on ``"cuda:N"``), ``MISSING_DEVICE_HINT`` (what to install when it
cannot) and ``open_runner(path, input_names, output_names, device)``, which loads the
artifact from disk once, onto ``device``, and returns a callable taking and returning flat
lists of arrays. ``load`` and the verifiers both run artifacts through these.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

__all__ = ["RUNTIME_MODULES", "FlatRunner", "runtime_module"]

FlatRunner = Callable[[Sequence[Any]], list[Any]]

RUNTIME_MODULES = {
    "onnx": "lightning_deploy.runtimes.onnxruntime",
    "torchscript": "lightning_deploy.runtimes.torchscript",
    "pt2": "lightning_deploy.runtimes.pt2",
    "aoti": "lightning_deploy.runtimes.aoti",
    "onnx-optimized": "lightning_deploy.runtimes.onnxruntime",
    "onnx-int8": "lightning_deploy.runtimes.onnxruntime",
}


def runtime_module(fmt: str) -> ModuleType:
    """The runtime module that runs artifacts of ``fmt``."""
    return importlib.import_module(RUNTIME_MODULES[fmt])
