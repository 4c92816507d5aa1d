"""An export's results handed to the trainer's loggers: headline metrics to all, files to MLflow and W&B.

Metrics (``tracking.metrics.headline_metrics``: per format ok, max abs difference, ms per call,
accuracy delta) go to every logger, so a run's dashboard shows whether its artifacts verified
beside its training curves. With ``log_artifacts`` the verified files and the manifest go to
an ``MLFlowLogger``'s or ``WandbLogger``'s run, and with ``register_model`` MLflow registers
the model; ``tracking.publish`` turns any failure there into a warning and a manifest record.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import MLFlowLogger, WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from lightning_deploy.errors import ConfigurationError
from lightning_deploy.tracking.metrics import headline_metrics
from lightning_deploy.tracking.publish import publish

__all__ = ["check_trackers", "log_headlines", "log_to_trackers"]


def log_headlines(trainer: pl.Trainer, manifest: dict[str, Any]) -> None:
    """Log ``export/<format>_ok`` and the format's figures to every logger of ``trainer``.

    A logger that fails (its tracking server gone) costs a warning, not the end of ``fit``.
    """
    metrics = headline_metrics(manifest)
    for logger in trainer.loggers:
        try:
            logger.log_metrics(metrics, step=trainer.global_step)
        except Exception as err:  # noqa: BLE001 - the export is done and on disk; a logger's failure is reported
            rank_zero_warn(f"ModelExport: {type(logger).__name__} could not log the export's metrics: {err}")


def check_trackers(trainer: pl.Trainer, register_model: str | None) -> None:
    """Before training: ``register_model`` needs an ``MLFlowLogger`` on the trainer."""
    if register_model is not None and not any(isinstance(logger, MLFlowLogger) for logger in trainer.loggers):
        raise ConfigurationError(
            f"ModelExport(register_model={register_model!r}) registers in the MLflow run of an MLFlowLogger, and"
            " the Trainer has none. HINT: pass logger=MLFlowLogger(tracking_uri=...) to the Trainer, or"
            " register_model=None."
        )


def log_to_trackers(
    trainer: pl.Trainer, dirpath: Path, stem: str, manifest: dict[str, Any], log_artifacts: bool,
    register_model: str | None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Log the export to the trainer's MLflow and W&B runs; returns the records written into the manifest."""
    loggings = []
    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger) and (log_artifacts or register_model):
            loggings.append(("mlflow", functools.partial(_to_mlflow, logger, dirpath, stem, manifest, log_artifacts,
                                                         register_model)))  # fmt: skip
        elif isinstance(logger, WandbLogger) and log_artifacts:
            loggings.append(("wandb", functools.partial(_to_wandb, logger, dirpath, stem, manifest)))
    return publish(loggings, dirpath, stem, "ModelExport") if loggings else []


def _to_mlflow(logger: MLFlowLogger, dirpath: Path, stem: str, manifest: dict[str, Any], log_files: bool,
               register_model: str | None) -> dict[str, Any]:  # fmt: skip
    from lightning_deploy.tracking.mlflow_run import log_to_mlflow

    return log_to_mlflow(
        logger.experiment,
        logger.run_id,
        dirpath,
        manifest,
        stem,
        register_model,
        log_files=log_files,
        log_metrics=False,
    )  # fmt: skip (log_headlines has logged them through the logger)


def _to_wandb(logger: WandbLogger, dirpath: Path, stem: str, manifest: dict[str, Any]) -> dict[str, Any]:
    from lightning_deploy.tracking.wandb_run import log_to_wandb

    return log_to_wandb(logger.experiment, dirpath, manifest, stem)
