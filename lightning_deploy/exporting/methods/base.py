"""The one small interface every exporter implements.

An exporter *captures* the flat adapter once (a trace, a scripted module, an
``ExportedProgram``) and *saves* that capture in each format it can make. The engine caches
captures per method, so tracing once serves both TorchScript and ONNX.
"""

from __future__ import annotations

import abc
import dataclasses
import io
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, ClassVar

import torch

from lightning_deploy.exporting.adapters import FlatAdapter
from lightning_deploy.exporting.dynamic import DynamicDims

__all__ = ["Capture", "ExportContext", "Exporter", "save_to_file", "save_torchscript"]


def save_torchscript(module: Any, path: Path) -> None:
    """``torch.jit.save`` through :func:`save_to_file`, without torch's deprecation warning on every save.

    The user asked for TorchScript; the format's ``notice`` (``formats.py``) says once, in the
    manifest and the report, what the deprecation means for them.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.save.* is deprecated", category=FutureWarning)
        save_to_file(path, lambda handle: torch.jit.save(module, handle))


def save_to_file(path: Path, save: Callable[[IO[bytes]], None], buffered: bool = False) -> None:
    """Run ``save`` on a Python file object (``buffered``: on memory first, then written to ``path``).

    torch's zip writer, given a path, writes with C++ streams: when the disk fills up (or a file
    size limit is hit) it throws once, then again from its destructor, and the process aborts
    (SIGABRT). Through a Python file object the write error is an ``OSError`` that fails the
    format. ``torch.export.save`` still aborts on a failing file object, so its archive is
    built in memory (``buffered``, about the artifact's size for a moment) and written here.
    """
    with open(path, "wb") as handle:
        if not buffered:
            save(handle)
            return
        buffer = io.BytesIO()
        save(buffer)
        handle.write(buffer.getbuffer())


@dataclasses.dataclass(frozen=True)
class ExportContext:
    """What every exporter needs: the adapter, the flat sample, names and dynamic dims."""

    adapter: FlatAdapter
    args: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    input_dims: DynamicDims
    output_dims: DynamicDims
    opset: int | None = None
    native: bool = False  # a scripted TorchScript artifact keeps forward's own arguments (inputs hold lists)
    bounds: dict[str, int] = dataclasses.field(default_factory=dict)  # axis -> largest size (bounded formats)

    def leaf_bounds(self) -> dict[str, dict[str, int]]:
        """Per input leaf with dynamic dims, each dim's bound, as the manifest entry records it."""
        return {
            name: {str(dim): self.bounds[axis] for dim, axis in dims.items()}
            for name, dims in zip(self.input_names, self.input_dims)
            if dims
        }


@dataclasses.dataclass
class Capture:
    """A captured program and what the capture noticed (e.g. tracer warnings).

    ``native`` is a module that takes and returns the model's own structure, where the
    method makes one (a scripted module); ``program`` always has the flat interface.
    """

    program: Any
    warnings: list[str] = dataclasses.field(default_factory=list)
    native: Any = None


class Exporter(abc.ABC):
    """Captures a flat adapter with one method; the formats' declared writers save the capture (``formats.py``).

    A writer is ``write(capture, path, ctx) -> dict | None``: it writes ``path`` (plus side files
    in its folder) and returns what a conversion did where that says more than the method (the
    entry's ``derived``: which graph OpenVINO converted, what ExecuTorch delegated).
    """

    method: ClassVar[str]

    @abc.abstractmethod
    def capture(self, ctx: ExportContext) -> Capture:
        """Capture ``ctx.adapter`` at ``ctx.args``."""
