"""Run the logging of an export to its trackers; a failure is a warning and a record, never an exception.

A tracker that fails (a server down, a full artifact store, a registry that refuses) must not
cost the run its end or its local files: each tracker's logging runs on its own, what it
logged or why it failed becomes a record, and the records are written into the local
manifest's ``tracking`` list (atomically, under the folder's install lock) and returned.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_deploy.artifact.files import install_lock, write_json_atomic
from lightning_deploy.artifact.manifest import MANIFEST_SUFFIX

__all__ = ["publish"]


def publish(
    loggings: Sequence[tuple[str, Callable[[], Mapping[str, Any]]]], dirpath: Path, stem: str, owner: str
) -> list[dict[str, Any]]:
    """Run each ``(tracker, logging)``; returns the records, also written into ``dirpath/STEM.export.json``.

    ``owner`` begins the warnings (``ModelExport``, ``lightning-deploy export``).
    """
    records: list[dict[str, Any]] = []
    for tracker, logging in loggings:
        try:
            records.append({**logging(), "error": None})
        except Exception as err:  # noqa: BLE001 - any failure of a tracker is reported, never raised
            error = f"{type(err).__name__}: {' '.join(str(err).split())[:500]}"
            warnings.warn(
                f"{owner}: logging the export to {tracker} failed ({error}). The artifacts and the manifest in"
                f" {dirpath} are intact. HINT: check the {tracker} server, then log them again with"
                " 'lightning-deploy export --ckpt_path ... --mlflow_run_id ...' (MLflow) or by hand.",
                stacklevel=2,
            )
            records.append({"tracker": tracker, "error": error})
    if records:
        path = dirpath / (stem + MANIFEST_SUFFIX)
        with install_lock(dirpath):
            manifest = json.loads(path.read_text(encoding="utf-8"))
            manifest["tracking"] = records
            write_json_atomic(path, manifest)
    return records
