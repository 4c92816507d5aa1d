"""Log a finished export to an MLflow run: its verified files and manifest, its metrics, a registered model.

Files go under ``lightning-deploy/STEM/`` in the run's artifacts (the manifest last, so a
listing that shows it shows a complete export), metrics are :func:`headline_metrics`, and
with ``register_model`` the pyfunc model is logged to the run and registered. With the server
down, MLflow's own retries apply (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``) before an error comes back.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric

from lightning_deploy.artifact.manifest import MANIFEST_SUFFIX, shipped_files
from lightning_deploy.tracking.metrics import headline_metrics
from lightning_deploy.tracking.mlflow_model import log_registered_model

__all__ = ["log_to_mlflow"]


def log_to_mlflow(
    client: mlflow.MlflowClient,
    run_id: str,
    dirpath: Path,
    manifest: Mapping[str, Any],
    stem: str,
    register_model: str | None = None,
    log_files: bool = True,
    log_metrics: bool = True,
) -> dict[str, Any]:
    """Log the export ``dirpath/STEM.*`` to ``run_id``; returns the manifest's record of what was logged.

    ``log_files=False`` registers the model only (the run gets the manifest still);
    ``log_metrics=False`` where a Lightning logger has logged them already (the callback).
    """
    folder = f"lightning-deploy/{stem}"
    files = shipped_files(manifest) if log_files else []
    for file in files:
        client.log_artifact(run_id, str(dirpath / file), artifact_path=folder)
    if log_metrics:
        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, 0) for key, value in headline_metrics(manifest).items()]
        client.log_batch(run_id, metrics=metrics)
    record: dict[str, Any] = {"tracker": "mlflow", "run_id": run_id, "artifact_path": folder, "files": files}
    if register_model is not None:
        record["registered_model"] = log_registered_model(client, run_id, dirpath, manifest, stem, register_model)
    client.log_artifact(run_id, str(dirpath / (stem + MANIFEST_SUFFIX)), artifact_path=folder)
    return record
