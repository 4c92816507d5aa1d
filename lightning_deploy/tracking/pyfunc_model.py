"""The MLflow ``pyfunc`` model of an export: ``predict`` runs one verified artifact through ``load()``.

Logged by :mod:`lightning_deploy.tracking.mlflow_model` with the artifact, its manifest and
this package's code, so ``mlflow.pyfunc.load_model("models:/NAME/N")`` and ``mlflow models
serve`` run it without the training code. Inputs and outputs are the manifest's flat leaves
by name (``batch.x``), as the model's tensor signature says; ``load()`` checks them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

__all__ = ["EXPORT_ARTIFACT", "ExportedPyfunc"]

EXPORT_ARTIFACT = "export"  # the key of the folder (manifest + artifact files) in the model's artifacts


class ExportedPyfunc(mlflow.pyfunc.PythonModel):
    """Runs ``load(manifest, format=model_config["format"])`` on the named input leaves."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Open the artifact once per loaded model, on the device of ``model_config["device"]`` (CPU).

        First the artifact is run on the golden samples the model carries: where it does not
        reproduce them here, loading fails (``VerificationError``) unless ``LIGHTNING_DEPLOY_NO_VERIFY=1``.
        """
        from lightning_deploy.runtime.loading import load
        from lightning_deploy.verification.rerun import SKIP_VARIABLE, check_at_start

        folder = Path(context.artifacts[EXPORT_ARTIFACT])
        config = context.model_config
        manifest, device = folder / config["manifest"], config.get("device", "cpu")
        if os.environ.get(SKIP_VARIABLE) != "1":
            check_at_start(manifest, config["format"], device, "lightning-deploy's MLflow model")
        self._model = load(manifest, format=config["format"], device=device)

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input,  # noqa: ANN001 - MLflow reads this hint as a schema; the manifest's signature is the schema
        params: dict[str, Any] | None = None,
    ) -> dict[str, np.ndarray]:
        """Outputs by leaf name for inputs by leaf name (a dict of arrays; one array where there is one input)."""
        names = self._model.input_names
        if isinstance(model_input, np.ndarray) and len(names) == 1:
            model_input = {names[0]: model_input}
        if not isinstance(model_input, Mapping):
            raise TypeError(
                f"predict() takes a dict of arrays keyed by input leaf {names}, not {type(model_input).__name__}."
                " HINT: send {'inputs': {name: nested list, ...}} to a served model."
            )
        outputs = self._model.run_leaves({name: np.asarray(value) for name, value in model_input.items()})
        return {name: np.asarray(value) for name, value in outputs.items()}
