"""Golden samples: every check's inputs and eager outputs, shipped beside the artifacts in ``STEM.samples.npz``.

They let an artifact be re-checked where it runs (``rerun.verify``), by the export's own rules,
without the model's code, torch or Lightning: a plain ``.npz`` (numpy's zip of ``.npy`` files,
no pickles) holding, for check ``K``, ``K/in/LEAF`` and ``K/out/LEAF`` by the manifest's leaf
names. The manifest's ``samples`` section lists the file, its sha256, the checks kept (source,
leaf names, bytes) and those the size cap dropped, largest first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lightning_deploy.artifact.files import sha256_file
from lightning_deploy.artifact.validate import contained_file
from lightning_deploy.errors import IntegrityError, LoadError

__all__ = ["DEFAULT_MAX_MB", "SAMPLES_SUFFIX", "GoldenCheck", "read_samples", "write_samples"]

SAMPLES_SUFFIX = ".samples.npz"
DEFAULT_MAX_MB = 32.0


@dataclasses.dataclass(frozen=True)
class GoldenCheck:
    """One check as shipped: where its sample came from, the input leaves and eager's output leaves, by name."""

    source: str
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]

    @property
    def nbytes(self) -> int:
        """The bytes of its arrays (what the file holds, give or take the zip's headers)."""
        return sum(a.nbytes for a in (*self.inputs.values(), *self.outputs.values()))


def write_samples(
    path: Path, checks: Sequence[GoldenCheck], max_mb: float, skipped: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """Write the checks that fit in ``max_mb`` megabytes (the largest dropped first); returns the manifest section.

    ``skipped`` are checks that could not be shipped at all (``{"source", "reason"}``), recorded
    with those the cap dropped. Where no check fits, no file is written and ``path`` is ``None``.
    """
    cap = int(max_mb * 2**20)
    sizes = [check.nbytes for check in checks]
    kept, total = set(range(len(checks))), sum(sizes)
    for index in sorted(kept, key=lambda i: -sizes[i]):
        if total <= cap:
            break
        kept.discard(index)
        total -= sizes[index]
    arrays: dict[str, np.ndarray] = {}
    records = []
    for index in sorted(kept):
        check = checks[index]
        arrays.update({f"{index}/in/{name}": np.ascontiguousarray(a) for name, a in check.inputs.items()})
        arrays.update({f"{index}/out/{name}": np.ascontiguousarray(a) for name, a in check.outputs.items()})
        records.append({"key": str(index), "source": check.source, "inputs": list(check.inputs),
                        "outputs": list(check.outputs), "bytes": sizes[index]})  # fmt: skip
    over = f"over the cap of {max_mb:g} MB"
    dropped = [*skipped, *({"source": checks[i].source, "bytes": sizes[i], "reason": over}
                           for i in range(len(checks)) if i not in kept)]  # fmt: skip
    section: dict[str, Any] = {"path": None, "sha256": None, "max_mb": max_mb, "checks": records, "dropped": dropped}
    if records:
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)
        section.update(path=path.name, sha256=sha256_file(path), bytes=path.stat().st_size)
    return section


def read_samples(manifest_file: Path, manifest: Mapping[str, Any]) -> list[GoldenCheck]:
    """The golden checks a manifest ships, after their file's sha256 matched the manifest's.

    Raises:
        LoadError: where the export wrote none (or every check was over the cap), or the file is missing.
        IntegrityError: where the file differs from the one the export wrote.
    """
    section = manifest.get("samples")
    if not isinstance(section, Mapping) or not section.get("path"):
        why = "the export wrote none"
        if isinstance(section, Mapping):
            why = section.get("error") or "every check was over the size cap"
        raise LoadError(
            f"{manifest_file}: no golden samples to verify with ({why}). HINT: re-export with golden_samples=True"
            " (the default), and a larger golden_samples_max_mb where the checks were dropped."
        )
    path = contained_file(manifest_file.parent, section["path"], f"{manifest_file}: the samples' path")
    if not path.is_file():
        raise LoadError(f"{path} is missing. HINT: copy it along with {manifest_file.name} and the artifacts.")
    digest = sha256_file(path)
    if digest != section.get("sha256"):
        raise IntegrityError(
            f"{path}: sha256 mismatch: the file has {digest}, the manifest records {section.get('sha256')}."
            " The golden samples were changed after export. HINT: restore them, or re-export."
        )
    with np.load(path, allow_pickle=False) as stored:
        return [GoldenCheck(r["source"], _arrays(stored, f"{r['key']}/in/"), _arrays(stored, f"{r['key']}/out/"))
                for r in section["checks"]]  # fmt: skip


def _arrays(stored: Any, prefix: str) -> dict[str, np.ndarray]:
    """The arrays stored under ``prefix`` (``K/in/``), by leaf name, in the order they were written."""
    return {key[len(prefix) :]: stored[key] for key in stored.files if key.startswith(prefix)}
