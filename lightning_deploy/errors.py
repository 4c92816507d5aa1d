"""The package's own error types.

User mistakes raise :class:`ConfigurationError` (a ``ValueError``) before any export work
starts; failures of the torch/ONNX stack raise :class:`ExportError` (a ``RuntimeError``);
the runtime side raises :class:`LoadError` and its subclasses.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CommandError",
    "ConfigurationError",
    "ExportError",
    "IntegrityError",
    "LightningDeployError",
    "LoadError",
    "StructureError",
    "VerificationError",
]


class LightningDeployError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigurationError(LightningDeployError, ValueError):
    """An argument is wrong; the message names it, the rule and the fix."""


class CheckpointError(LightningDeployError, ValueError):
    """A checkpoint (file or sharded directory) cannot be read; the message names the path and what is missing."""


class ExportError(LightningDeployError, RuntimeError):
    """The model could not be exported or verified."""


class LoadError(LightningDeployError, RuntimeError):
    """An artifact or its manifest cannot be loaded."""


class IntegrityError(LoadError):
    """An artifact's bytes do not match the sha256 recorded in its manifest."""


class VerificationError(LoadError):
    """An artifact does not reproduce its golden samples on this machine; the message names the check and the leaf."""


class StructureError(LightningDeployError, ValueError):
    """A value does not have the structure (keys, lengths, dtypes, ranks) the schema expects."""


class CommandError(LightningDeployError):
    """A mistake on the command line (``lightning-deploy ...``); printed as one line naming the option and the fix."""
