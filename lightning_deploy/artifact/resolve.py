"""Which artifact a path names, checked before anything is opened: the manifest, the entry, the files, the digests.

``load()`` and the serving side (a server checks in its parent process what its workers will
open) resolve a path here. The sha256 of every file is compared with the manifest's, on a
thread while the runtime opens the artifact (``load()``) or at once (:meth:`ResolvedArtifact.check_files`).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_deploy.artifact.contract import IOContract
from lightning_deploy.artifact.entry import ArtifactEntry
from lightning_deploy.artifact.files import sha256_file
from lightning_deploy.artifact.manifest import SUFFIXES, host_timings, manifest_path, read_manifest
from lightning_deploy.artifact.validate import check_entry, contained_file
from lightning_deploy.errors import IntegrityError, LoadError
from lightning_deploy.formats import by_name, preferred_order

__all__ = ["ResolvedArtifact", "check_digests", "default_artifact", "resolve_artifact", "sha256_in_background"]

# A manifest's artifact by default where it records no timings: the formats' fixed preference.
_PREFERENCE = preferred_order()


@dataclasses.dataclass(frozen=True)
class ResolvedArtifact:
    """The manifest entry ``load`` would open, its I/O contract, its file, and the sha256 recorded for its files."""

    manifest: Mapping[str, Any]
    entry: ArtifactEntry
    contract: IOContract
    artifact: Path
    recorded: Mapping[Path, str | None]

    def check_files(self) -> None:
        """Hash the artifact and its side files now; :class:`IntegrityError` where one differs from the manifest."""
        check_digests({p: sha256_file(p) for p in self.recorded}, self.recorded)


def resolve_artifact(
    path: str | Path,
    format: str | None = None,  # noqa: A002 - the manifest's word
    verified_only: bool = True,
    device: str | None = None,
    host: Callable[[], str] | None = None,
) -> ResolvedArtifact:
    """Everything ``load`` checks before it opens a runtime: the manifest, the entry, its files.

    For callers that open the artifact elsewhere (a server's worker) and want its errors early.
    ``device`` (normalised, ``load(device=...)``) decides whether the export's timings apply
    (:func:`default_artifact`); ``host`` gives this machine's fingerprint, asked only where the
    manifest holds ``verify`` records, whose timings taken here then rank the artifacts instead.
    Raises :class:`LoadError` as ``load`` does; the sha256 check is :meth:`ResolvedArtifact.check_files`.
    """
    path = Path(path)
    manifest_file = manifest_path(path)
    manifest = read_manifest(manifest_file)
    entries = manifest.get("artifacts")
    if not isinstance(entries, list):
        raise LoadError(f"{manifest_file}: 'artifacts' is not a list. HINT: the manifest is damaged; re-export.")
    for candidate in entries:
        check_entry(candidate, manifest_file, SUFFIXES)
    here = host_timings(manifest, host(), device) if host is not None and manifest.get("verified_on") else None
    entry = ArtifactEntry.from_json(_select_artifact(manifest, manifest_file, path, format, device, here))
    if verified_only and not entry.ok:
        raise LoadError(
            f"{manifest_file}: the {entry.format} artifact failed at export: {entry.error}."
            " HINT: fix the export, or pass verified_only=False to run it anyway."
        )
    artifact = contained_file(manifest_file.parent, entry.path, f"{manifest_file}: the {entry.format} path")
    if not artifact.is_file():
        raise LoadError(f"Artifact {artifact} is missing. HINT: copy it along with {manifest_file.name}.")
    side_files = {artifact.parent / name: sha for name, sha in entry.side_files_sha256.items()}
    missing = [path for path in side_files if not path.is_file()]
    if missing:
        raise LoadError(f"{missing[0]} is missing. HINT: copy it along with the artifact and its manifest.")
    contract = IOContract.from_manifest(manifest, artifact)
    return ResolvedArtifact(manifest, entry, contract, artifact, {artifact: entry.sha256, **side_files})


def check_digests(digests: Mapping[Path, str], recorded: Mapping[Path, str | None]) -> None:
    """:class:`IntegrityError` where a file's digest differs from the one the manifest records."""
    for path, digest in digests.items():
        if digest != recorded[path]:
            raise IntegrityError(
                f"{path}: sha256 mismatch: the file has {digest}, the manifest records {recorded[path]}."
                " The file was changed or replaced after export. HINT: re-export it, or restore the original."
            ) from None


def sha256_in_background(paths: list[Path]) -> Callable[[], dict[Path, str]]:
    """Hash ``paths`` on a thread while the runtime opens the artifact; the returned call waits for the digests.

    Both hashing and opening a session release the GIL, so on a cold start the check costs
    next to nothing (resnet18: 35 ms of hashing, about as long as ONNX Runtime's session);
    the model is returned, and so first run, only after the digests matched. A bare thread,
    not ``concurrent.futures``: importing that costs 6-9 ms on the path this saves time on.
    """
    outcome: dict[str, Any] = {}

    def hash_all() -> None:
        try:
            outcome["digests"] = {p: sha256_file(p) for p in paths}
        except OSError as err:  # raised in the caller by wait(), not printed by the thread
            outcome["error"] = err

    thread = threading.Thread(target=hash_all, daemon=True)
    thread.start()

    def wait() -> dict[Path, str]:
        thread.join()
        if "error" in outcome:
            raise LoadError(f"Cannot read a file to check its sha256: {outcome['error']}.") from outcome["error"]
        return outcome["digests"]

    return wait


def _select_artifact(
    manifest: Mapping[str, Any],
    manifest_file: Path,
    path: Path,
    fmt: str | None,
    device: str | None,
    here: Mapping[str, float] | None,
) -> dict:
    """The entry of the artifact ``path`` names, or for a manifest the one of ``fmt`` or :func:`default_artifact`."""
    entries = manifest.get("artifacts", [])
    if path != manifest_file:
        found = [e for e in entries if e.get("path") == path.name]
        if not found:
            raise LoadError(f"{manifest_file} lists no artifact named {path.name!r}. HINT: load the manifest instead.")
        if fmt is not None and found[0]["format"] != fmt:
            raise LoadError(f"load(format={fmt!r}) conflicts with {path.name}, a {found[0]['format']} artifact.")
        return found[0]
    if fmt is not None and fmt not in SUFFIXES:
        raise LoadError(f"load(format={fmt!r}): unknown format; valid formats are {list(SUFFIXES)}.")
    if fmt is None:
        found = default_artifact(entries, device, here)
        if found is None:
            raise LoadError(f"{manifest_file} holds no artifact. HINT: export one first.")
        return found
    found = [e for e in entries if e["format"] == fmt]
    if not found:
        raise LoadError(f"{manifest_file} holds no {fmt} artifact. HINT: export that format first.")
    return sorted(found, key=lambda e: not e.get("ok"))[0]


def default_artifact(
    entries: Sequence[Mapping[str, Any]], device: str | None = None, here: Mapping[str, float] | None = None
) -> Mapping[str, Any] | None:
    """The entry ``load(manifest)`` runs without ``format=``: the fastest verified one, where the timings apply.

    ``here`` are the milliseconds per call ``verify`` measured on this machine (by format, on
    the device the call will run on): where it timed any ok artifact at the default
    tolerance, the fastest of those runs, since the export machine's ranking may not hold here.
    The export times every verified artifact through ``load()`` at the export sample
    (``ms_per_call``). Where every ok artifact at the default tolerance has a timing, all taken
    on the device the call will run on (``device``, or the CPU when ``None`` and they were
    timed there), the fastest of them runs. Lower-precision artifacts (int8, bf16) run only
    when named with ``format=``. Otherwise, as before timings existed: the ok artifact of
    least preference (``formats.py``), else the first failed one (to say why).
    """
    entries = [e for e in entries if e.get("format") in _PREFERENCE]  # `show` passes entries nothing checked
    full_precision = [e for e in entries if e.get("ok") and not by_name(e["format"]).lower_precision]
    timed_here = [e for e in full_precision if e["format"] in (here or {})]
    if timed_here:
        return min(timed_here, key=lambda e: (here[e["format"]], _PREFERENCE.index(e["format"])))
    where = device or "cpu"
    timed = [e for e in full_precision if isinstance(e.get("ms_per_call"), (int, float))
             and (e.get("device") or "cpu") == where]  # fmt: skip
    if full_precision and len(timed) == len(full_precision):
        return min(timed, key=lambda e: (e["ms_per_call"], _PREFERENCE.index(e["format"])))
    ranked = sorted(entries, key=lambda e: (not e.get("ok"), _PREFERENCE.index(e["format"])))
    return ranked[0] if ranked else None
