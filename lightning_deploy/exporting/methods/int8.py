"""The int8 policy: calibration feeds, which variants to make, the faster of two that verify, the accuracy delta.

A format declared ``lower_precision`` with ``variants`` (``onnx-int8``: static and dynamic,
``formats.py``) is made in each variant from one method's capture. Static int8 needs
activation ranges, calibrated on the first batches of ``accuracy_data``; where both variants
verify, the one faster on this machine is kept (``latency.py``); its top-1 accuracy on the
same data is measured beside the eager model's.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lightning_deploy.artifact.manifest import artifact_name
from lightning_deploy.errors import ConfigurationError
from lightning_deploy.exporting.plan import Plan
from lightning_deploy.exporting.verifying.accuracy import accuracy_delta, input_leaves
from lightning_deploy.exporting.verifying.latency import onnx_seconds_per_call
from lightning_deploy.formats import by_name
from lightning_deploy.runtime.arrays import to_numpy
from lightning_deploy.runtime.backends import runtime_module

if TYPE_CHECKING:
    from lightning_deploy.exporting.work import Attempt, Work

__all__ = ["CALIBRATION_BATCHES", "accuracy", "calibration", "calibration_feeds", "fastest", "pass_options", "variants"]

# Batches of accuracy_data that calibrate static int8's activation ranges (ONNX Runtime's MinMax).
CALIBRATION_BATCHES = 8


def calibration(work: Work) -> list[dict[str, np.ndarray]] | None:
    """This export's static int8 feeds (:func:`calibration_feeds`), made once and kept with the export's work.

    The first batches of ``accuracy_data`` (the data the model will see), and the samples
    the artifact is verified at: static ranges clip what calibration never saw, and an
    export sample unlike the data (``torch.randn`` where pixels are in [0, 1]) or the
    synthetic sample would otherwise fail verification on values the deployed model never gets.
    Without ``accuracy_data``, or with batches of another form than ``(input_sample, labels)``
    (the accuracy entry records why), ``None``: dynamic int8.
    """
    if "calibration" not in work.cache:
        work.cache["calibration"] = calibration_feeds(work.plan, work.accuracy_data)
    return work.cache["calibration"]


def calibration_feeds(plan: Plan, accuracy_data: Iterable[Any] | None) -> list[dict[str, np.ndarray]] | None:
    """Feeds (input leaf name -> array) of the first ``accuracy_data`` batches and of every check's sample.

    The checks (the export sample, the second shape, the synthetic sample of new values, the
    user's data) are what every artifact is verified at: ranges that never saw the synthetic
    sample's values (uniform over each input's range) clipped it, and static int8 failed there
    (resnet18 at 0.6 of its output's scale), leaving the 2.3x slower dynamic file.

    ``None`` without ``accuracy_data`` or with batches of another form than ``(input_sample, labels)``.
    """
    if accuracy_data is None:
        return None
    try:
        found = input_leaves(plan.ctx.adapter.module, accuracy_data, CALIBRATION_BATCHES)
    except ConfigurationError:
        return None
    if not found:
        return None
    verified = [plan.inputs.tensors(check.arguments) for check in plan.checks]
    names = plan.ctx.input_names
    return [{n: to_numpy(leaf) for n, leaf in zip(names, leaves)} for leaves in [*found, *verified]]


def variants(fmt: str, work: Work) -> tuple[str | None, ...]:
    """The ways to make ``fmt`` from one method's capture, in the order to try them.

    int8 with calibration data: static and dynamic, both made and verified, and where both
    verify the faster on this machine is kept (static quantises convolutions, dynamic is
    faster on attention); dynamic alone is what remains where static does not verify (ranges
    calibrated on the data clip a sample unlike it, e.g. an all-zeros ``example_input_array``).
    Other formats: one.
    """
    declared = by_name(fmt).variants
    if not declared:
        return (None,)
    return declared if calibration(work) else tuple(v for v in declared if v != "static")


def pass_options(attempt: Attempt, work: Work) -> dict[str, Any]:
    """The derivation pass's keyword arguments for this attempt (static int8: its calibration feeds)."""
    if attempt.variant is None:
        return {}
    return {"calibration": calibration(work) if attempt.variant == "static" else None}


def fastest(fmt: str, attempts: list[Attempt], work: Work) -> Attempt:
    """The attempt whose file runs fastest here at the two verified samples (each attempt records its time)."""
    ctx = work.plan.ctx
    samples = [[to_numpy(leaf) for leaf in work.plan.inputs.tensors(s)] for s in work.plan.samples]
    paths = [a.folder / artifact_name(work.stem, fmt) for a in attempts]
    try:
        with work.steps.step(f"{fmt} variants timed"):
            times = onnx_seconds_per_call(paths, ctx.input_names, ctx.output_names, samples)
    except Exception as err:  # noqa: BLE001 - both verified; a failed timing keeps the first, saying why
        attempts[0].derived = {**(attempts[0].derived or {}), "chosen": f"first verified (timing failed: {err})"}
        return attempts[0]
    for attempt, seconds in zip(attempts, times):
        attempt.ms_per_call = round(seconds * 1e3, 4)
    chosen = min(zip(times, range(len(attempts))))[1]
    others = ", ".join(f"{a.variant} {a.ms_per_call} ms" for i, a in enumerate(attempts) if i != chosen)
    winner = attempts[chosen]
    winner.derived = {**(winner.derived or {}), "chosen": f"faster here: {winner.ms_per_call} ms for a call at"
                      f" each verified shape, against {others}"}  # fmt: skip
    return winner


def accuracy(fmt: str, path: Path, work: Work) -> dict[str, Any]:
    """The artifact's top-1 accuracy on ``accuracy_data`` beside the eager model's (on the CPU)."""
    ctx = work.plan.ctx
    runner = runtime_module(fmt).open_runner(str(path), ctx.input_names, ctx.output_names, "cpu")
    device = work.plan.device
    return accuracy_delta(ctx.adapter.module, lambda leaves: ctx.adapter(*(t.to(device) for t in leaves)),
                          lambda leaves: runner([to_numpy(t) for t in leaves]), work.accuracy_data)  # fmt: skip
