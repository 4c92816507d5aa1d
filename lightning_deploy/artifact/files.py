"""Crash-safe files: stage in a private folder beside the target, then rename into place.

A crash never leaves a half-written file under a final name: exporters write into a
staging folder in the destination directory (same filesystem, so ``os.replace`` is atomic),
and only finished files are renamed into place. Side files such as ``STEM.onnx.data`` keep
the names that the model file refers to.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "copy_files",
    "install_lock",
    "install_order",
    "move_into_place",
    "sha256_file",
    "staging_dir",
    "write_json_atomic",
]

INSTALL_TIMEOUT_S = 120.0  # installing is renames and one small write: seconds at most


@contextlib.contextmanager
def install_lock(dirpath: Path, timeout: float = INSTALL_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``dirpath`` while a finished export's files and manifest move in.

    Two exports into one folder at once (a rerun, two jobs sharing ``dirpath``) each stage
    their files privately; this makes their installs take turns, so the folder ends with one
    writer's files and that writer's manifest, never a mix: the export that installs last wins.
    The lock is on the directory itself, so nothing is left behind. Where ``fcntl`` is missing
    (Windows) installs are not serialised.

    Raises:
        TimeoutError: when another install holds the folder for longer than ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        with _locked(dirpath, wait=False) as held:
            if held:
                yield
                return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{dirpath}: another export has been installing files here for over {timeout:.0f} s."
                " HINT: check for a stuck process writing into this folder."
            )
        time.sleep(0.02)


@contextlib.contextmanager
def staging_dir(dirpath: Path, stem: str) -> Iterator[Path]:
    """A fresh hidden folder inside ``dirpath``, removed with whatever is left in it.

    Its owner holds an ``flock`` on it for its whole life: the folder is made under another
    name, locked, and only then renamed to ``.STEM.staging-*``. A process killed mid-export
    (SIGKILL, the OOM killer) cannot remove its folder, so the next export of the same stem
    removes every ``.STEM.staging-*`` folder whose lock it can take: their owners are gone.
    """
    _remove_abandoned(dirpath, stem)
    made = Path(tempfile.mkdtemp(prefix=f".{stem}.creating-", dir=dirpath))
    with _locked(made, wait=True):
        path = made.with_name(made.name.replace(".creating-", ".staging-", 1))
        os.rename(made, path)  # the lock is on the inode, so it moves with the folder
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


def _remove_abandoned(dirpath: Path, stem: str) -> None:
    if sys.platform == "win32":  # no locks there, so a folder's owner cannot be told alive
        return
    for folder in dirpath.glob(f".{glob.escape(stem)}.staging-*"):
        with contextlib.suppress(OSError), _locked(folder, wait=False) as free:
            if free:
                shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _locked(path: Path, wait: bool) -> Iterator[bool]:
    """An ``flock`` on the directory ``path`` (``wait=False``: only if free); yields whether it is held.

    Closing the descriptor releases it. Where ``fcntl`` is missing (Windows) nothing is locked:
    installs are not serialised and abandoned staging folders are left.
    """
    if sys.platform == "win32":
        yield True
        return
    import fcntl

    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def install_order(folder: Path) -> list[Path]:
    """The files of ``folder`` in the order they move in: side files (longer names) first, the main file last."""
    return sorted(folder.iterdir(), key=lambda p: (-len(p.name), p.name))


def move_into_place(folder: Path, dirpath: Path) -> list[Path]:
    """Rename every file of ``folder`` into ``dirpath`` in :func:`install_order`."""
    moved = []
    for file in install_order(folder):
        target = dirpath / file.name
        os.replace(file, target)
        moved.append(target)
    return moved


def copy_files(folder: Path, target: Path) -> None:
    """Copy every file of ``folder`` into ``target``.

    Not hard links: ``onnx.checker`` refuses external weights (``STEM.onnx.data``) that have
    more than one link, as a guard against link attacks.
    """
    for file in folder.iterdir():
        shutil.copy2(file, target / file.name)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to a temporary file beside ``path`` and rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, allow_nan=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
