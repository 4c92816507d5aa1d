"""The golden samples of an export: every check's inputs and eager outputs as numpy leaves, by name.

Written beside the artifacts (``verification/golden.py``) so that ``verify`` can re-run them
wherever the artifacts go. A check whose inputs are not the export sample's structure (a data
sample with lists of another length) or hold bfloat16 (numpy has none) cannot be fed back
through ``load()`` as it is, and is recorded as skipped instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lightning_deploy.errors import ExportError
from lightning_deploy.exporting.plan import Plan
from lightning_deploy.exporting.verifying.verify import eager_leaves
from lightning_deploy.runtime.arrays import to_numpy
from lightning_deploy.verification.golden import SAMPLES_SUFFIX, GoldenCheck, write_samples

__all__ = ["write_golden_samples"]


def write_golden_samples(plan: Plan, folder: Path, stem: str, max_mb: float) -> dict[str, Any]:
    """Write ``folder/STEM.samples.npz`` from the plan's checks; returns the manifest's ``samples`` section."""
    shipped, skipped = [], []
    for check in [*plan.checks, *plan.ranged_checks]:  # and those made inside an artifact's narrower ranges
        try:
            leaves = plan.inputs.tensors(check.arguments)
        except ExportError:
            skipped.append({"source": check.source, "reason": "its inputs' structure differs from the export sample's"})
            continue
        if any(leaf.dtype == torch.bfloat16 for leaf in leaves):
            skipped.append({"source": check.source, "reason": "a bfloat16 input, which numpy cannot hold"})
            continue
        inputs = {name: to_numpy(leaf) for name, leaf in zip(plan.inputs.names, leaves)}
        shipped.append(GoldenCheck(check.source, inputs, eager_leaves(check.expected)))
    return write_samples(folder / (stem + SAMPLES_SUFFIX), shipped, max_mb, skipped)
