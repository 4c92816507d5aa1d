"""Golden samples changed after export, as a copy gone wrong or an edit would change them: for the refusal tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np


def change_golden_output(folder: Path, stem: str, leaf: str, update_sha: bool, by: float = 0.5) -> str:
    """Add ``by`` to output ``leaf`` of the last golden check (and record the file's new sha256, or not).

    Returns the check's source, which a failure must name.
    """
    manifest_file = folder / f"{stem}.export.json"
    manifest = json.loads(manifest_file.read_text())
    path = folder / manifest["samples"]["path"]
    check = manifest["samples"]["checks"][-1]
    with np.load(path) as stored:
        arrays = dict(stored)
    arrays[f"{check['key']}/out/{leaf}"] = arrays[f"{check['key']}/out/{leaf}"] + by
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    if update_sha:
        manifest["samples"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        manifest_file.write_text(json.dumps(manifest))
    return check["source"]
