"""One artifact's entry in the manifest, typed: what was made, how, and how well it matched.

The engine fills one per format it was asked for; an export that fails before any artifact
(``manifest.failure_manifest``) writes the same entry with only the error. ``to_json`` is the
one place the entry's keys and their order are written; ``from_json`` is how ``load()`` and the
serving side read one back, once ``validate.check_entry`` has checked it. Standard library only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["ArtifactEntry"]


@dataclasses.dataclass
class ArtifactEntry:
    """An artifact entry of ``STEM.export.json`` (``docs/files.md`` says what each key means)."""

    format: str
    path: str
    method: str | None = None
    io: str = "flat"  # "native": takes forward's own arguments (scripted TorchScript with lists)
    bounds: dict[str, dict[str, int]] | None = None  # bounded formats: input leaf -> {dim: largest size}
    ranges: dict[str, dict[str, list[int | None]]] | None = None  # input leaf -> {dim: [min, max]}: ranges.py
    requires: list[str] = dataclasses.field(default_factory=list)
    device: str | None = None
    ok: bool = False
    verified: bool = False
    sha256: str | None = None
    files: list[str] = dataclasses.field(default_factory=list)
    side_files_sha256: dict[str, str] = dataclasses.field(default_factory=dict)
    runtime: str | None = None
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    checked_shapes: list[Any] = dataclasses.field(default_factory=list)
    checks: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    checks_passed: int = 0
    detections: dict[str, Any] | None = None
    vacuous: bool = False
    vacuous_leaves: list[str] = dataclasses.field(default_factory=list)
    tolerance: dict[str, float] | None = None
    derived: dict[str, Any] | None = None
    accuracy: dict[str, Any] | None = None
    ms_per_call: float | None = None  # verified: a call through load() at the export sample, timed beside the others
    speed: dict[str, Any] | None = None  # against eager and, for a derived format, the file it came from
    error: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    attempts: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The entry as the manifest holds it (a plain dict, keys in declaration order)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> ArtifactEntry:
        """The typed view of a manifest entry.

        Keys it lacks (older manifests) take their defaults, unknown ones are left out. Their
        types are ``validate.check_entry``'s to check; this only reads.
        """
        known = {field.name for field in dataclasses.fields(cls)}
        values = {key: value for key, value in entry.items() if key in known and value is not None}
        return cls(**{"path": "", **values, "format": entry["format"], "ok": bool(entry.get("ok"))})
