"""Trackers: an export's files, metrics and a registered model in the team's MLflow or W&B run.

Sits beside the Lightning layer, on the manifest and ``load()``: ``mlflow_run`` and ``wandb_run``
log a finished export to a run, ``pyfunc_model`` is the MLflow model that serves it through
``load()``. Nothing here imports Lightning; the callback and the command line find the run.
"""
