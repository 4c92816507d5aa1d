"""Log a finished export to a W&B run: one artifact of type ``model`` with the verified files and the manifest.

The artifact is named after the stem (W&B allows letters, digits, ``-``, ``_`` and ``.``;
anything else becomes ``-``: ``epoch=2-step=30`` is ``epoch-2-step-30``) and carries the
manifest as its metadata, so the W&B UI shows what verified and how closely without a download.
In offline mode W&B stages the files and records the artifact in the run folder for ``wandb sync``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import wandb

from lightning_deploy.artifact.manifest import MANIFEST_SUFFIX, shipped_files

__all__ = ["artifact_name", "log_to_wandb"]


def artifact_name(stem: str) -> str:
    """The W&B artifact name for ``stem``."""
    return re.sub(r"[^\w.-]", "-", stem)


def log_to_wandb(run: Any, dirpath: Path, manifest: Mapping[str, Any], stem: str) -> dict[str, Any]:
    """Log the export ``dirpath/STEM.*`` to the W&B ``run``; returns the manifest's record of what was logged."""
    files = shipped_files(manifest)
    name = artifact_name(stem)
    artifact = wandb.Artifact(name, type="model", metadata=dict(manifest))
    for file in [*files, stem + MANIFEST_SUFFIX]:
        artifact.add_file(str(dirpath / file), name=file)
    run.log_artifact(artifact)
    return {"tracker": "wandb", "run_id": run.id, "artifact": name, "files": files}
