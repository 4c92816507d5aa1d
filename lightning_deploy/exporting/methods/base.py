"""The one small interface every exporter implements.

An exporter *captures* the flat adapter once (a trace, a scripted module, an
``ExportedProgram``) and *saves* that capture in each format it can make. The engine caches
captures per method, so tracing once serves both TorchScript and ONNX.
"""

from __future__ import annotations

import abc
import dataclasses
import errno
import io
import os
import shutil
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, ClassVar

import torch

from lightning_deploy.exporting.adapters import FlatAdapter
from lightning_deploy.exporting.dynamic import DynamicDims

__all__ = ["Capture", "ExportContext", "Exporter", "save_to_file", "save_torchscript", "tensor_bytes"]


# Above this many bytes of weights an archive is written by torch's C++ writer straight to the file,
# after the room for it is checked (``_check_room``); below it, through a Python file object.
STREAMED_BYTES = 256 * 2**20


def save_torchscript(module: Any, path: Path) -> None:
    """``torch.jit.save`` through :func:`save_to_file`, without torch's deprecation warning on every save.

    The user asked for TorchScript; the format's ``notice`` (``formats.py``) says once, in the
    manifest and the report, what the deprecation means for them.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.save.* is deprecated", category=FutureWarning)
        save_to_file(path, lambda target: torch.jit.save(module, target), size=tensor_bytes(module.state_dict()))


def save_to_file(path: Path, save: Callable[[IO[bytes] | str], None], buffered: bool = False, size: int = 0) -> None:
    """Run ``save`` on ``path``: by name for ``size`` bytes above :data:`STREAMED_BYTES`, else on a file object.

    torch's zip writer, given a path, writes with C++ streams: when the disk fills up (or a file
    size limit is hit) it throws once, then again from its destructor, and the process aborts
    (SIGABRT). Through a Python file object the write error is an ``OSError`` that fails the
    format; but ``torch.jit.save`` on a file object builds the whole archive in memory first (a
    second copy of the weights: 2.0x of 2.15 GB measured), and ``torch.export.save`` still
    aborts on a failing file object, so its archive is built in memory (``buffered``) and
    written here. Big weights are therefore written by name, after checking that the disk and
    the process's file size limit leave room for them (an ``OSError`` here, not an abort).
    """
    if size > STREAMED_BYTES:
        _check_room(path, size)
        save(str(path))
        return
    with open(path, "wb") as handle:
        if not buffered:
            save(handle)
            return
        buffer = io.BytesIO()
        save(buffer)
        handle.write(buffer.getbuffer())


def tensor_bytes(tensors: Mapping[str, Any]) -> int:
    """The bytes of the tensors among ``tensors``' values (a state dict's weights)."""
    return sum(t.numel() * t.element_size() for t in tensors.values() if isinstance(t, torch.Tensor))


def _check_room(path: Path, size: int) -> None:
    """Raise ``OSError`` (ENOSPC, EFBIG) where ``path`` cannot take an archive of about ``size`` bytes."""
    needed = size + size // 20 + 64 * 2**20  # the archive's own records, and room to spare
    free = shutil.disk_usage(path.parent).free
    if needed > free:
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: {path.name} needs about {needed / 2**30:.2f} GiB,"
                                    f" {path.parent} has {free / 2**30:.2f} GiB free")  # fmt: skip
    try:
        import resource  # POSIX only
    except ImportError:
        return
    limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if limit != resource.RLIM_INFINITY and needed > limit:
        raise OSError(errno.EFBIG, f"{os.strerror(errno.EFBIG)}: {path.name} needs about {needed} bytes, past this"
                                   f" process's file size limit ({limit} bytes)")  # fmt: skip


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
