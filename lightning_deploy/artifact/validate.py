"""Check a manifest before ``load()`` trusts it: types, keys, and file names that stay in their folder.

A manifest may come from elsewhere (copied, edited, hostile). Everything ``load()`` reads from
it is checked here first, so that a bad one is a :class:`LoadError` naming the key, never a
``KeyError`` or ``TypeError`` from deep inside the schema code, and no path in it leads out of
the manifest's folder (absolute paths, ``..``, separators, symlinks pointing elsewhere).
Written by hand rather than with a JSON-schema library: ``load()`` of an ONNX artifact needs
only ``onnxruntime`` and ``numpy``, and these few rules read better as code.
"""

from __future__ import annotations

import keyword
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning_deploy.errors import LoadError

__all__ = ["check_entry", "check_io", "contained_file"]

_IO_KINDS = ("flat", "native")
# The dtypes a manifest can name: torch's tensor dtypes as ``runtime.arrays.dtype_name`` writes them (the runtimes
# look each name up in torch or numpy, so an unknown one must stop here, as a LoadError).
DTYPES = frozenset({"bool", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64", "float16",
                    "bfloat16", "float32", "float64", "complex64", "complex128"})  # fmt: skip


def check_entry(entry: Any, manifest_file: Path, formats: Mapping[str, str]) -> None:
    """An artifact entry: its format known, its file names plain, its digests strings."""
    where = f"{manifest_file}: an artifact entry"
    _expect(isinstance(entry, Mapping), where, "is not an object")
    fmt = entry.get("format")
    _expect(isinstance(fmt, str) and fmt in formats, where, f"has format {fmt!r}, not one of {list(formats)}")
    where = f"{manifest_file}: the {fmt} entry"
    contained_file(manifest_file.parent, entry.get("path"), f"{where}'s path")
    _expect(isinstance(entry.get("ok"), bool), where, "has no boolean 'ok'")
    _expect(entry.get("sha256") is None or isinstance(entry["sha256"], str), where, "has a non-string sha256")
    side = entry.get("side_files_sha256", {})
    _expect(isinstance(side, Mapping), where, "has side_files_sha256 that is not an object")
    for name, digest in side.items():
        contained_file(manifest_file.parent, name, f"{where}'s side file")
        _expect(isinstance(digest, str), where, f"has a non-string digest for {name!r}")
    files = entry.get("files", [])  # load() weighs them against the memory available
    _expect(isinstance(files, list), where, "has 'files' that is not a list of file names")
    for name in files:
        contained_file(manifest_file.parent, name, f"{where}'s file")
    requires = entry.get("requires") or []
    _expect(isinstance(requires, list) and all(isinstance(r, str) for r in requires), where, "has bad 'requires'")
    _expect(entry.get("io", "flat") in _IO_KINDS, where, f"has io {entry.get('io')!r}, not one of {_IO_KINDS}")
    _expect(entry.get("device") is None or isinstance(entry["device"], str), where, "has a non-string device")
    timing = entry.get("ms_per_call")
    number = isinstance(timing, (int, float)) and not isinstance(timing, bool) and timing >= 0
    _expect(timing is None or number, where, f"has ms_per_call {timing!r}, not a number of milliseconds")
    _expect(_ranges(entry.get("ranges")), where, "has bad 'ranges' (leaf -> {dim: [min, max or null]})")


def check_io(manifest: Mapping[str, Any], artifact: Path) -> None:
    """``inputs`` and ``outputs``: names, shapes, dtypes and dynamic axes of matching lengths, and schemas."""
    for side in ("inputs", "outputs"):
        where = f"{artifact}: the manifest's {side!r}"
        io = manifest.get(side)
        _expect(isinstance(io, Mapping), where, "is missing (an export that failed before any artifact was made)")
        names = io.get("names")
        _expect(_list_of(names, str), where, "has no list of leaf names")
        schema = io.get("schema")
        _expect(isinstance(schema, Mapping) and isinstance(schema.get("tree"), Mapping), where, "has no schema tree")
        # outputs of older manifests have no dtypes or shapes; where they are, the inputs' rules hold
        if side == "inputs" or io.get("dtypes") is not None:
            dtypes = io.get("dtypes")
            ok = _list_of(dtypes, str) and len(dtypes) == len(names) and set(dtypes) <= DTYPES
            _expect(ok, where, f"has bad dtypes (one per leaf, each one of {sorted(DTYPES)})")
        if side == "inputs" or io.get("shapes") is not None:
            shapes = io.get("shapes")
            ok = _list_of(shapes, list) and len(shapes) == len(names)
            _expect(ok and all(_list_of(s, int) and all(d >= 0 for d in s) for s in shapes), where, "has bad shapes")
        axes = io.get("dynamic_axes") or {}
        _expect(isinstance(axes, Mapping) and all(k in names for k in axes), where, "has bad dynamic_axes")
        for name, dims in axes.items():
            _expect(isinstance(dims, Mapping) and all(_dim(d) for d in dims), where, f"has bad axes for {name!r}")
        found = io.get("data_dependent") or {}
        ok = isinstance(found, Mapping) and all(k in names and _list_of(v, int) for k, v in found.items())
        _expect(ok, where, "has bad data_dependent")
        if side == "inputs":
            call = schema.get("call")
            ok = isinstance(call, Mapping) and _list_of(call.get("parameters"), str)
            special = ("var_positional", "var_keyword")
            ok = ok and all(k in call and (call[k] is None or call[k] in call["parameters"]) for k in special)
            _expect(ok, where, "has no valid 'call' (forward's parameters)")
            root = schema["tree"]  # the bound arguments by parameter name, in forward's order
            named = root.get("kind") == "dict" and root.get("keys") == call["parameters"]
            _expect(named and all(_identifier(p) for p in call["parameters"]), where,
                    "has a 'call' whose parameters are not the schema's arguments")  # fmt: skip


def contained_file(folder: Path, name: Any, what: str) -> Path:
    """``folder / name`` where ``name`` is a plain file name that resolves inside ``folder``.

    Raises:
        LoadError: for anything else (absolute, ``..``, a separator, a symlink leading out).
    """
    plain = isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name
    if not plain or "\x00" in name:
        raise LoadError(f"{what} {name!r} is not a plain file name in the manifest's folder. HINT: re-export.")
    path = folder / name
    if path.is_symlink() and not path.resolve().is_relative_to(folder.resolve()):
        raise LoadError(f"{what} {name!r} is a symlink that leads out of {folder}. HINT: copy the file itself.")
    return path


def _identifier(name: str) -> bool:
    """A name a Python ``def`` can have as a parameter (``forward``'s were)."""
    return name.isidentifier() and not keyword.iskeyword(name)


def _ranges(ranges: Any) -> bool:
    """``None``, or ``{leaf: {dim: [min, max]}}``: whole sizes, ``max`` null or at least ``min``."""
    if ranges is None:
        return True
    if not isinstance(ranges, Mapping) or not all(isinstance(dims, Mapping) for dims in ranges.values()):
        return False
    return all(_dim(dim) and _span(span) for dims in ranges.values() for dim, span in dims.items())


def _span(span: Any) -> bool:
    if not (isinstance(span, list) and len(span) == 2):
        return False
    low, high = span
    return _size(low) and (high is None or (_size(high) and high >= low))


def _size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _dim(key: Any) -> bool:
    if isinstance(key, str):
        return key.isdigit()
    return isinstance(key, int) and not isinstance(key, bool) and key >= 0


def _list_of(value: Any, kind: type) -> bool:
    return isinstance(value, list) and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)


def _expect(condition: bool, where: str, problem: str) -> None:
    if not condition:
        raise LoadError(f"{where} {problem}. HINT: the manifest was edited or is damaged; re-export the model.")
