"""How fast each verified artifact runs on this machine, measured side by side at export.

Two uses. Every verified artifact's call through ``load()`` at the export sample is timed
against the others' (``ms_per_call`` in its entry): ``load(manifest)`` without ``format=``
then runs the fastest (``artifact/resolve.py``), since which runtime wins depends on the
model and the machine (docs/performance.md). And int8 has two passes that can both verify
(static and dynamic), whose files are timed at the two verified shapes to keep the faster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lightning_deploy.runtime.backends import runtime_module
from lightning_deploy.runtime.model import ExportedModel
from lightning_deploy.verification.timing import seconds_per_call

if TYPE_CHECKING:
    from lightning_deploy.exporting.work import Work

__all__ = ["onnx_seconds_per_call", "time_artifacts"]


def onnx_seconds_per_call(
    paths: Sequence[Path],
    input_names: Sequence[str],
    output_names: Sequence[str],
    samples: Sequence[Sequence[np.ndarray]],
) -> list[float]:
    """Seconds per call of each ONNX file (CPU, ONNX Runtime's default threads), summed over ``samples``."""
    runners = [runtime_module("onnx").open_runner(str(path), input_names, output_names, "cpu") for path in paths]
    totals = [0.0] * len(runners)
    for leaves in samples:
        arrays = list(leaves)
        times = seconds_per_call([lambda run=run, arrays=arrays: run(arrays) for run in runners])
        totals = [total + seconds for total, seconds in zip(totals, times)]
    return totals


def time_artifacts(work: Work, entries: Sequence[dict[str, Any]], folders: Sequence[Path | None]) -> None:
    """Record ``ms_per_call`` in every verified entry: its call through ``load()`` at the export sample.

    Each artifact is opened as ``load()`` opens it, on the device it was verified on, and
    called as a user calls it (positional arguments, torch tensors); a GPU call waits for the
    device. An artifact that fails here (it verified, so this is rare) gets no timing, and
    ``load()`` falls back to the formats' fixed preference for that manifest.
    """
    calls, timed = [], []
    for entry, folder in zip(entries, folders):
        if not entry["verified"] or folder is None:
            continue
        try:
            model = ExportedModel(work.io_manifest, entry, folder / entry["path"], device=entry["device"])
        except Exception:  # noqa: BLE001 - verified a moment ago; an untimed entry only loses the ranking
            continue
        args, kwargs = _user_call(work, entry["io"] == "native")
        sync = torch.cuda.synchronize if model.device.startswith("cuda") else _nothing
        calls.append(lambda model=model, args=args, kwargs=kwargs, sync=sync: (model(*args, **kwargs), sync()))
        timed.append(entry)
    if not calls:
        return
    try:
        with work.steps.step(f"{len(calls)} artifact(s) timed"):
            seconds = seconds_per_call(calls, rounds=5)
    except Exception:  # noqa: BLE001 - as above: without timings, load() keeps the fixed preference
        return
    for entry, spent in zip(timed, seconds):
        entry["ms_per_call"] = round(spent * 1e3, 4)


def _user_call(work: Work, native: bool) -> tuple[list[Any], Mapping[str, Any]]:
    """The export sample as a user passes it: positionally where ``forward`` allows, else as the verifier does."""
    call, arguments = work.plan.call, work.plan.checks_for(native)[0].arguments
    if call.var_positional is None and call.var_keyword is None:
        return [arguments[name] for name in call.parameters], {}
    return call.split(arguments)


def _nothing() -> None:
    """No device to wait for (the CPU)."""
