"""An export's headline figures as flat metrics: per format, ok, max abs difference, ms per call, accuracy delta.

One definition for every place they go: the trainer's loggers at fit end, and an MLflow run
that the command line logs a finished export to.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["headline_metrics"]


def headline_metrics(manifest: Mapping[str, Any]) -> dict[str, float]:
    """Per format ``export/<format>_ok`` (1.0 or 0.0) and, where recorded, its figures.

    The figures: ``_max_abs_diff``, ``_ms_per_call``, ``_accuracy_delta``, and the model's own
    validation metrics per artifact and eager (``export/onnx_val_acc``, ``export/eager_val_acc``);
    keys as every Lightning logger's ``log_metrics`` and MLflow take them.
    """
    metrics: dict[str, float] = {}
    for entry in manifest["artifacts"]:
        prefix = f"export/{entry['format']}"
        metrics[f"{prefix}_ok"] = float(entry["ok"])
        for key in ("max_abs_diff", "ms_per_call"):
            if entry.get(key) is not None:
                metrics[f"{prefix}_{key}"] = float(entry[key])
        if "delta" in (entry.get("accuracy") or {}):
            metrics[f"{prefix}_accuracy_delta"] = float(entry["accuracy"]["delta"])
    for name, values in (manifest.get("metrics") or {}).items():  # the model's own, per artifact (validate=True)
        for fmt, value in values.items():
            if value is not None:
                metrics[f"export/{fmt}_{name}"] = float(value)
    return metrics
