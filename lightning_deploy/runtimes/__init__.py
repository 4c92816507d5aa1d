"""Runtimes by artifact format, imported lazily so that ONNX needs neither torch nor onnx.

Every runtime module defines ``RUNTIME`` (its name), ``ARRAYS`` (``"numpy"`` or
``"torch"``, the array type it takes and returns) and ``open_runner(path, input_names,
output_names)``, which loads the artifact from disk once and returns a callable taking and
returning flat lists of arrays. ``load`` and the verifiers both run artifacts through these.
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
    "onnx-optimized": "lightning_deploy.runtimes.onnxruntime",
    "onnx-int8": "lightning_deploy.runtimes.onnxruntime",
}


def runtime_module(fmt: str) -> ModuleType:
    """The runtime module that runs artifacts of ``fmt``."""
    return importlib.import_module(RUNTIME_MODULES[fmt])
