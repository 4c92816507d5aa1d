"""How fast each verified artifact runs on this machine, measured side by side at export.

Two uses. Every verified artifact's call through ``load()`` at the export sample is timed
against the others' (``ms_per_call`` in its entry): ``load(manifest)`` without ``format=``
then runs the fastest (``artifact/resolve.py``), since which runtime wins depends on the
model and the machine (docs/performance.md). And int8 has two passes that can both verify
(static and dynamic), whose files are timed at the two verified shapes to keep the faster.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lightning_deploy.exporting.methods.base import STREAMED_BYTES, tensor_bytes
from lightning_deploy.formats import by_name
from lightning_deploy.runtime.backends import runtime_module
from lightning_deploy.runtime.model import ExportedModel
from lightning_deploy.verification.timing import SLOWER, seconds_per_call

if TYPE_CHECKING:
    from lightning_deploy.exporting.work import Work

__all__ = ["TIMED_ALONE_BYTES", "onnx_seconds_per_call", "time_artifacts"]

# Above this many bytes of weights, artifacts are timed one at a time (each runtime holds its own copy).
TIMED_ALONE_BYTES = STREAMED_BYTES

OpenCall = Callable[[], "Callable[[], Any] | None"]  # opens an artifact; returns its call, or None


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
    device. The eager module and, for a derived format, the file it was made from are timed
    in the same turns, so that the entry's ``speed`` says how the artifact compares with both
    (a "faster" format slower than its source here is marked ``slower_than_source``). A model
    whose weights pass :data:`TIMED_ALONE_BYTES` has each artifact opened, timed and closed
    in turn instead: side by side, every runtime would hold its own copy of the weights at
    once. An artifact that fails here (it verified, so this is rare) gets no timing, and
    ``load()`` falls back to the formats' fixed preference for that manifest.
    """
    verified = [(e, folder / e["path"]) for e, folder in zip(entries, folders) if e["verified"] and folder is not None]
    timed = [entry for entry, _ in verified]
    opens = [partial(_artifact_call, work, entry, path) for entry, path in verified]
    sources = _source_calls(work, timed)
    if not opens:
        return
    args, kwargs = work.plan.call.split(work.plan.checks[0].arguments)
    module = work.plan.ctx.adapter.module
    sync = torch.cuda.synchronize if work.plan.device.startswith("cuda") else _nothing
    alone = tensor_bytes(module.state_dict()) > TIMED_ALONE_BYTES
    try:
        with work.steps.step(f"{len(opens)} artifact(s) timed{' one at a time' if alone else ''}, and eager"):
            # eager in turns of its own, first: ONNX Runtime's threads spin for a while after each call, and
            # a torch call taking turns with them waits for the cores (measured here: a small MLP's 0.03 ms
            # became 13 ms beside two ONNX sessions on 2 cores), which says nothing of eager's speed
            (eager_seconds,) = seconds_per_call([lambda: (module(*args, **kwargs), sync())], rounds=5)
            seconds = (_one_at_a_time if alone else _side_by_side)([*opens, *sources.values()])
    except Exception:  # noqa: BLE001 - as above: without timings, load() keeps the fixed preference
        return
    eager_ms = eager_seconds * 1e3
    source_ms = {key: s * 1e3 for key, s in zip(sources, seconds[len(opens) :]) if s is not None}
    ms_of = {(e["format"], e["method"]): s * 1e3 for e, s in zip(timed, seconds) if s is not None} | source_ms
    for entry, spent in zip(timed, seconds):
        if spent is None:
            continue
        entry["ms_per_call"] = round(spent * 1e3, 4)
        speed = {"eager_ms_per_call": round(eager_ms, 4), "vs_eager": round(eager_ms / (spent * 1e3), 3)}
        source = by_name(entry["format"]).derived_from
        if (source, entry["method"]) in ms_of:
            vs_source = round(ms_of[(source, entry["method"])] / (spent * 1e3), 3)  # the flag says what the figure says
            speed.update(source=source, source_ms_per_call=round(ms_of[(source, entry["method"])], 4),
                         vs_source=vs_source, slower_than_source=vs_source < SLOWER)  # fmt: skip
        entry["speed"] = speed


def _side_by_side(opens: Sequence[OpenCall]) -> list[float | None]:
    """Seconds per call of every artifact that opens, all open at once and taking turns (the fairest comparison)."""
    calls = [open_call() for open_call in opens]
    seconds = iter(seconds_per_call([call for call in calls if call is not None], rounds=5))
    return [None if call is None else next(seconds) for call in calls]


def _one_at_a_time(opens: Sequence[OpenCall]) -> list[float | None]:
    """Seconds per call of each artifact, opened, timed and released before the next opens (big weights).

    The collector runs after each: a ``.pt2``'s unlifted module sits in a reference cycle
    that would keep its weights (``verify.py`` says the same).
    """
    seconds: list[float | None] = []
    for open_call in opens:
        call = open_call()
        seconds.append(None if call is None else seconds_per_call([call], rounds=5)[0])
        del call
        gc.collect()
    return seconds


def _artifact_call(work: Work, entry: Mapping[str, Any], path: Path) -> Callable[[], Any] | None:
    """A user's call of the artifact at ``path`` as ``load()`` opens it; ``None`` where it cannot be opened."""
    try:
        model = ExportedModel(work.contract, entry, path, device=entry["device"])
    except Exception:  # noqa: BLE001 - verified a moment ago; an untimed entry only loses the ranking
        return None
    args, kwargs = _user_call(work, entry["io"] == "native")
    sync = torch.cuda.synchronize if model.device.startswith("cuda") else _nothing
    return lambda: (model(*args, **kwargs), sync())


def _source_calls(work: Work, timed: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], OpenCall]:
    """How to open the files derived formats were made from, where they are not artifacts of this export themselves."""
    exported = {(e["format"], e["method"]) for e in timed}
    opens = {}
    for entry in timed:
        key = (by_name(entry["format"]).derived_from, entry["method"])
        source = work.sources.get(key)
        if key[0] is None or key in exported or key in opens or not isinstance(source, Path):
            continue
        opens[key] = partial(_artifact_call, work, {"format": key[0], "io": "flat", "device": entry["device"]}, source)
    return opens


def _user_call(work: Work, native: bool) -> tuple[list[Any], Mapping[str, Any]]:
    """The export sample as a user passes it: positionally where ``forward`` allows, else as the verifier does."""
    call, arguments = work.plan.call, work.plan.checks_for(native)[0].arguments
    if call.var_positional is None and call.var_keyword is None:
        return [arguments[name] for name in call.parameters], {}
    return call.split(arguments)


def _nothing() -> None:
    """No device to wait for (the CPU)."""
