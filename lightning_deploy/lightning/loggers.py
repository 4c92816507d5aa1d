"""An export's headline metrics, logged to the trainer's loggers (TensorBoard, CSV, MLflow, W&B).

Per format: ``export/<format>_ok``, its max abs difference and, for int8, the accuracy delta,
so that a run's dashboard shows whether its artifacts verified beside its training curves.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

__all__ = ["log_headlines"]


def log_headlines(trainer: pl.Trainer, manifest: dict[str, Any]) -> None:
    """Log ``export/<format>_ok``, ``export/<format>_max_abs_diff`` (and ``_accuracy_delta``) to the loggers."""
    metrics: dict[str, float] = {}
    for a in manifest["artifacts"]:
        metrics[f"export/{a['format']}_ok"] = float(a["ok"])
        if a.get("max_abs_diff") is not None:
            metrics[f"export/{a['format']}_max_abs_diff"] = float(a["max_abs_diff"])
        if "delta" in (a.get("accuracy") or {}):
            metrics[f"export/{a['format']}_accuracy_delta"] = float(a["accuracy"]["delta"])
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)
