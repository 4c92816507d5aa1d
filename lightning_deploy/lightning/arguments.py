"""``ModelExport``'s own arguments (those the engine's ``ExportOptions`` do not hold), checked at construction.

And what they choose once the Trainer is known: the checkpoint, the module to export, its sample.
Each mistake is a :class:`ConfigurationError` naming the argument and the fix, raised before
training starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import nn

from lightning_deploy.errors import ConfigurationError
from lightning_deploy.exporting.plan import module_device

__all__ = [
    "CHECKPOINTS",
    "check_choices",
    "checkpoint_callback",
    "chosen_checkpoint",
    "count",
    "sample_of",
    "target_of",
]

CHECKPOINTS = ("best", "last", "final")


def count(name: str, value: Any, least: int, other: str) -> int:
    """``value`` where it is a whole number of at least ``least``; ``other`` says the alternative."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigurationError(
            f"ModelExport({name}={value!r}): must be a whole number >= {least}. HINT: pass e.g. {name}=2, or {other}."
        )
    return value


def check_choices(
    sample: Any, spec: Any, submodule: Any, checkpoint: Any, dirpath: Any, flags: Mapping[str, Any]
) -> None:
    """The sample or its spec (not both), the checkpoint, the submodule path, the folder and the on/off ``flags``."""
    if sample is not None and spec is not None:
        raise ConfigurationError(
            "ModelExport(input_sample=..., input_spec=...): give one of them, not both."
            " HINT: input_sample is for Python, input_spec its YAML form."
        )
    if checkpoint not in CHECKPOINTS:
        raise ConfigurationError(f"ModelExport(checkpoint={checkpoint!r}): must be one of {CHECKPOINTS}.")
    if checkpoint == "final" and dirpath is None:
        raise ConfigurationError(
            "ModelExport(checkpoint='final', dirpath=None): the in-memory weights have no checkpoint folder"
            " to write beside. HINT: pass dirpath='exports' (or use checkpoint='best')."
        )
    if submodule is not None and (not isinstance(submodule, str) or not submodule):
        raise ConfigurationError(f"ModelExport(submodule={submodule!r}): must be a dotted attribute path or None.")
    if dirpath is not None and not isinstance(dirpath, (str, Path)):
        raise ConfigurationError(f"ModelExport(dirpath={dirpath!r}): must be a folder path or None.")
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ConfigurationError(f"ModelExport({name}={value!r}): must be True or False.")


def checkpoint_callback(trainer: pl.Trainer, which: str) -> pl.callbacks.ModelCheckpoint:
    """The Trainer's ``ModelCheckpoint``, able to give the ``which`` checkpoint."""
    callback = trainer.checkpoint_callback
    if callback is None:
        raise ConfigurationError(
            f"ModelExport(checkpoint={which!r}) needs a ModelCheckpoint callback, and the Trainer has"
            " none. HINT: add ModelCheckpoint(monitor=...) to callbacks, or use checkpoint='final' with dirpath."
        )
    if which == "last" and not callback.save_last:
        raise ConfigurationError(
            "ModelExport(checkpoint='last') needs ModelCheckpoint(save_last=True). HINT: set it, or use 'best'."
        )
    return callback


def chosen_checkpoint(trainer: pl.Trainer, which: str) -> str:
    """The path of the ``which`` checkpoint (``best``: the monitored best, else the last saved); empty if none."""
    callback = checkpoint_callback(trainer, which)
    if which == "last":
        return callback.last_model_path
    return callback.best_model_path or callback.last_model_path


def target_of(model: nn.Module, submodule: str | None) -> nn.Module:
    """The module to export: ``model`` or its ``submodule`` (a dotted path)."""
    if submodule is None:
        return model
    try:
        return model.get_submodule(submodule)
    except AttributeError as err:
        children = [name for name, _ in model.named_children()]
        raise ConfigurationError(
            f"ModelExport(submodule={submodule!r}): {err}. HINT: {type(model).__name__} has the"
            f" children {children}; use a dotted path through them."
        ) from None


def sample_of(pl_module: nn.Module, sample: Any) -> Any:
    """``sample``, else the module's ``example_input_array``, on the module's device."""
    if sample is None:
        sample = getattr(pl_module, "example_input_array", None)
    if sample is None:
        raise ConfigurationError(
            "ModelExport(input_sample=None, input_spec=None): no sample to export with, and"
            f" {type(pl_module).__name__}.example_input_array is not set. HINT: set example_input_array in"
            " the LightningModule, or pass input_sample (Python) or input_spec (YAML)."
        )
    return move_data_to_device(sample, module_device(pl_module, ()))
