"""Checks of the tracker options that run before any work: the value, and the package it needs."""

from __future__ import annotations

import importlib.util
from typing import Any

from lightning_deploy.errors import ConfigurationError

__all__ = ["check_register_model", "require_extra"]


def require_extra(package: str, what: str) -> None:
    """Raise naming ``lightning-deploy[package]`` when ``package`` is not installed."""
    if importlib.util.find_spec(package) is None:
        raise ConfigurationError(
            f"{what} needs the {package} package, not installed here. HINT: pip install 'lightning-deploy[{package}]'."
        )


def check_register_model(name: Any, owner: str) -> None:
    """``register_model`` is ``None`` or a registered model's name, and then MLflow is installed."""
    if name is None:
        return
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise ConfigurationError(
            f"{owner}(register_model={name!r}): must be a model name for MLflow's registry (no '/'), or None."
            " HINT: e.g. register_model='digits-classifier'."
        )
    require_extra("mlflow", f"{owner}(register_model={name!r})")
