"""The manifest ``STEM.export.json``: what was made, how, and how well it matched.

Reading it needs neither torch nor Lightning. Paths in it are relative to it.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_deploy.artifact.entry import ArtifactEntry
from lightning_deploy.artifact.files import write_json_atomic
from lightning_deploy.errors import LoadError
from lightning_deploy.formats import suffixes

__all__ = [
    "MANIFEST_SUFFIX",
    "MANIFEST_VERSION",
    "SUFFIXES",
    "artifact_name",
    "failure_manifest",
    "header",
    "host_timings",
    "json_safe",
    "manifest_path",
    "read_manifest",
    "shipped_files",
    "verified_files",
    "versions",
]

MANIFEST_VERSION = 1
MANIFEST_SUFFIX = ".export.json"
SUFFIXES = suffixes()
_PACKAGES = ("lightning-deploy", "torch", "lightning", "onnx", "onnxruntime", "onnxscript", "numpy")


def artifact_name(stem: str, fmt: str) -> str:
    """The file name of ``fmt`` for ``stem`` (``STEM.onnx``, ``STEM.torchscript.pt``, ``STEM.pt2``)."""
    return stem + SUFFIXES[fmt]


def verified_files(manifest: Mapping[str, Any]) -> list[str]:
    """The files of every ok artifact (model files and their side files), in the manifest's order, once each."""
    return list(dict.fromkeys(file for entry in manifest["artifacts"] if entry["ok"] for file in entry["files"]))


def shipped_files(manifest: Mapping[str, Any]) -> list[str]:
    """What travels with the manifest: the ok artifacts' files, then the golden samples where there are some."""
    samples = (manifest.get("samples") or {}).get("path")
    return [*verified_files(manifest), *([samples] if samples else [])]


def manifest_path(path: str | Path) -> Path:
    """The manifest that belongs to an artifact (or the manifest itself)."""
    path = Path(path)
    if path.name.endswith(MANIFEST_SUFFIX):
        return path
    for suffix in sorted(SUFFIXES.values(), key=len, reverse=True):
        if path.name.endswith(suffix):
            return path.with_name(path.name[: -len(suffix)] + MANIFEST_SUFFIX)
    raise LoadError(
        f"{path}: not an artifact of lightning-deploy (expected a name ending in"
        f" {sorted(SUFFIXES.values())} or {MANIFEST_SUFFIX!r})."
    )


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and check a manifest; raises :class:`LoadError` naming the problem and the fix."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LoadError(
            f"No manifest at {path}. HINT: load() needs the {MANIFEST_SUFFIX} file that export() wrote"
            " beside the artifact; copy it along with the artifact."
        ) from None
    except (OSError, ValueError) as err:
        raise LoadError(f"Cannot read the manifest {path}: {err}.") from None
    if not isinstance(data, dict):
        raise LoadError(f"{path}: a manifest is a JSON object, this is a {type(data).__name__}. HINT: re-export.")
    if data.get("manifest_version") != MANIFEST_VERSION:
        raise LoadError(
            f"{path}: manifest_version {data.get('manifest_version')!r} is not one this package reads"
            f" ({MANIFEST_VERSION}). HINT: use the lightning-deploy version that wrote it."
        )
    return data


def versions() -> dict[str, str | None]:
    """Installed versions of the packages that made the artifacts.

    ``importlib.metadata`` is imported here, not at the top: it takes about 35 ms, and
    ``load()`` imports this module on its way to a cold-started session.
    """
    from importlib import metadata

    found: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def host_timings(manifest: Mapping[str, Any], fingerprint: str, device: str | None) -> dict[str, float]:
    """Milliseconds per call by format that ``verify`` measured on the host ``fingerprint``, on ``device``.

    From the manifest's ``verified_on`` record of that host (one per host); only artifacts that
    reproduced there. Empty where the host has no record.
    """
    where = device or "cpu"
    for record in manifest.get("verified_on") or []:
        if isinstance(record, Mapping) and record.get("fingerprint") == fingerprint:
            return {
                row["format"]: float(row["ms_per_call"])
                for row in record.get("artifacts") or []
                if isinstance(row, Mapping) and row.get("ok") and isinstance(row.get("ms_per_call"), (int, float))
                and (row.get("device") or "cpu") == where
            }  # fmt: skip
    return {}


def json_safe(value: float | None) -> float | None:
    """A float JSON can hold: NaN and infinities become ``None`` (the error text has them)."""
    return value if value is None or math.isfinite(value) else None


def header(dirpath: Path, checkpoint: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The fields every manifest starts with; the checkpoint path is made relative to ``dirpath``."""
    return {
        "manifest_version": MANIFEST_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": os.path.relpath(checkpoint, dirpath) if checkpoint is not None else None,
    }


def failure_manifest(
    dirpath: Path, stem: str, checkpoint: str | None, formats: Sequence[str], error: BaseException
) -> dict[str, Any]:
    """Write and return the manifest of an export that failed before any artifact was made."""
    text = f"{type(error).__name__}: {error}"
    manifest = {
        **header(dirpath, checkpoint),
        "ok": False,
        "error": text,
        "inputs": None,
        "outputs": None,
        "artifacts": [ArtifactEntry(f, artifact_name(stem, f), error=text).to_json() for f in formats],
        "versions": versions(),
    }
    dirpath.mkdir(parents=True, exist_ok=True)
    write_json_atomic(dirpath / (stem + MANIFEST_SUFFIX), manifest)
    return manifest
