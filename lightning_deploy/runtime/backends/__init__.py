"""Runtimes by artifact format, imported lazily so that ONNX needs neither torch nor onnx.

Every backend module satisfies :class:`Backend`: it loads an artifact from disk once, onto a
device, and returns a runner taking and returning flat lists of arrays. Which module runs a
format is that format's declaration (``formats.py``); ``load()`` and the verifier both run
artifacts through these modules, so the verifier cannot differ from ``load()``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

from lightning_deploy.formats import FORMATS

__all__ = ["RUNTIME_MODULES", "Backend", "FlatRunner", "runtime_module"]

FlatRunner = Callable[[Sequence[Any]], list[Any]]


class Backend(Protocol):
    """What a runtime module defines (``runtime/backends/<runtime>.py``); docs/design.md, "Adding a runtime".

    Attributes:
        RUNTIME: the runtime's name, recorded in the manifest (``onnxruntime``).
        ARRAYS: the array type its runner takes and returns, ``"numpy"`` or ``"torch"``.
        PACKAGE: the pip distribution that runs it (``onnxruntime``), pinned in a served model's requirements.
        MISSING_DEVICE_HINT: what to install where ``has_device`` says no.

    A runtime that itself refuses inputs of the wrong dtype or static shape may say so with
    ``CHECKS_INPUTS = True``: ``load()`` then checks the leaves only to explain a refusal. One
    whose ``open_runner`` takes ``load()``'s ``threads=`` and ``providers=`` says
    ``SESSION_OPTIONS = True`` (ONNX Runtime's session options).
    """

    RUNTIME: str
    ARRAYS: str
    PACKAGE: str
    MISSING_DEVICE_HINT: str

    def has_device(self, device: str) -> bool:
        """Whether this machine can run the runtime on ``device`` (``"cuda:1"``)."""

    def open_runner(
        self, path: str, input_names: Sequence[str], output_names: Sequence[str], device: str, **options: Any
    ) -> FlatRunner:
        """Load the artifact at ``path`` onto ``device`` once; the runner maps input arrays to output arrays."""


# Format -> the module that runs it, from each format's declaration.
RUNTIME_MODULES = {fmt.name: f"{__name__}.{fmt.runtime}" for fmt in FORMATS}


def runtime_module(fmt: str) -> Backend:
    """The backend module that runs artifacts of ``fmt`` (imported now, not before)."""
    return cast(Backend, importlib.import_module(RUNTIME_MODULES[fmt]))
