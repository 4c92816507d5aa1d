"""Structured values to and from the flat tensor files that C++ programs read and write.

``examples/cpp``'s ``infer`` takes the artifact's input leaves as one ``torch.save([t0, t1,
...])`` file (in the order of the manifest's ``inputs.names``) and writes the output leaves
the same way, as a tuple (``outputs.names`` order). These two functions go between that flat
form and the model's own structure, by the manifest's schema, so a user never flattens by hand.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning_deploy.artifact.contract import IOContract
from lightning_deploy.artifact.manifest import manifest_path, read_manifest
from lightning_deploy.artifact.structure import Structure
from lightning_deploy.errors import LoadError

__all__ = ["load_outputs", "save_inputs"]


def save_inputs(manifest: str | os.PathLike[str], path: str | os.PathLike[str], *args: Any, **kwargs: Any) -> list[str]:
    """Write ``forward(*args, **kwargs)``'s tensor leaves to ``path`` as ``torch.save([t0, t1, ...])``.

    Args:
        manifest: the manifest (or one of its artifacts) the inputs are for.
        path: the file to write (``INPUTS.pt``).
        *args: the model's arguments, as for the eager model or ``load()``.
        **kwargs: keyword arguments, likewise.

    Returns:
        The leaves' names, in the order written.
    """
    import torch

    contract = _read(manifest)
    inputs = Structure(contract.inputs.tree, root="input")
    leaves = inputs.flatten(contract.call.bind(args, kwargs))
    torch.save([torch.as_tensor(leaf).detach().cpu().contiguous() for leaf in leaves], Path(path))
    return inputs.names


def load_outputs(manifest: str | os.PathLike[str], path: str | os.PathLike[str]) -> Any:
    """Read the flat outputs a C++ program wrote to ``path`` and rebuild the model's output structure.

    Read with ``torch.load(weights_only=True)``: the file holds a tuple of tensors.

    Raises:
        LoadError: when the file does not hold as many tensors as the manifest has output leaves.
    """
    import torch

    outputs = Structure(_read(manifest).outputs.tree, root="output")
    flat = torch.load(Path(path), map_location="cpu", weights_only=True)
    flat = [flat] if isinstance(flat, torch.Tensor) else list(flat)
    if len(flat) != len(outputs.names):
        raise LoadError(f"{path}: {len(flat)} tensors, the manifest has {len(outputs.names)} outputs {outputs.names}.")
    return outputs.unflatten(flat)


def _read(manifest: str | os.PathLike[str]) -> IOContract:
    """The I/O contract of ``manifest`` (or of the artifact it names), checked."""
    file = manifest_path(manifest)
    return IOContract.from_manifest(read_manifest(file), file)
