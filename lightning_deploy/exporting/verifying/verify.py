"""Smoke-test an artifact through ``load()``'s own path and compare with eager, leaf by leaf.

Each artifact is opened as an :class:`~lightning_deploy.runtime.loading.ExportedModel` from the manifest
that will be written beside it, called with the model's structured arguments, and its
structured output (rebuilt by the saved schema) compared with the eager output: the same leaf
paths, and every leaf within tolerance. So "ok" means what a user of ``load()`` will get. It
runs at every check (``checks.py``: the export sample, the second shape, a synthetic sample
unlike the first, the user's data), records each (source, shapes, differences) and is ``ok``
only if every output leaf matches at all of them.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree

from lightning_deploy.artifact.contract import IOContract
from lightning_deploy.errors import ExportError
from lightning_deploy.exporting.adapters import flatten_tree
from lightning_deploy.exporting.methods import declared
from lightning_deploy.exporting.verifying.checks import Check
from lightning_deploy.formats import by_name
from lightning_deploy.runtime.arrays import to_numpy
from lightning_deploy.runtime.model import ExportedModel
from lightning_deploy.verification.compare import named_leaves
from lightning_deploy.verification.outcome import Verification

__all__ = ["Verification", "eager_leaves", "verify_artifact"]


def verify_artifact(
    entry: Mapping[str, Any],
    path: Path,
    contract: IOContract,
    checks: Sequence[Check],
    atol: float,
    rtol: float,
    device: str = "cpu",
) -> Verification:
    """Open ``path`` as ``load()`` does, on ``device``, and compare its outputs with eager at each check.

    Args:
        entry: the artifact's manifest entry as far as it is known (``format``, ``io``, ``requires``).
        path: the artifact.
        contract: the manifest's ``inputs`` and ``outputs`` and ``forward``'s call; read back from their JSON
            as ``load()`` reads them.
        checks: where each sample came from, its ``{parameter: value}`` and eager's output; the export sample first.
        atol: absolute tolerance.
        rtol: tolerance relative to each output leaf's largest magnitude.
        device: where the artifact runs (``load(device=...)``); inputs are moved there.

    Returns:
        The verification; failures to load or run are reported in ``error``, not raised. A call
        that fails at one check fails that check; the others still run and are recorded.

    """
    checker = by_name(entry["format"]).checker
    if checker is not None:
        declared(checker)(path)
    written = json.loads(json.dumps(contract.to_json()))  # the manifest's I/O as it will be written and read back
    model = ExportedModel(IOContract.from_manifest(written, path), entry, path, device=device)
    result = Verification(ok=True, runtime=model.runtime)
    for check in checks:
        shapes = [list(t.shape) for t in pytree.tree_leaves(check.arguments) if isinstance(t, torch.Tensor)]
        args, kwargs = contract.call.split(check.arguments)
        try:
            got = model(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - the artifact failed on this input: the check fails, named
            result.failed(check.source, shapes, f"{type(err).__name__}: {err}")
            continue
        got_by_name = {name: to_numpy(leaf) for name, leaf in named_leaves(got, "out").items()}
        result.compared(check.source, shapes, got_by_name, eager_leaves(check.expected), atol, rtol)
    # A loaded module may sit in a reference cycle (torch.export's unlifted module does): its weights
    # go now, not when the collector next runs while the next artifact is open (a 1 GiB .pt2 export
    # peaked at 2.18x the weights above the model's baseline, 1.17x with this).
    del model
    gc.collect()
    return result


def eager_leaves(expected: Any) -> dict[str, Any]:
    """Eager's output as numpy leaves by path (``out.logits``), by the pytree rules the export flattened with."""
    tree, leaves = flatten_tree(expected, "out", "The model's output", ExportError)
    return {name: to_numpy(leaf) for name, leaf in zip(tree.names, leaves)}
