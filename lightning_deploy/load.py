"""``load(path)``: run an exported artifact with the model's own structured inputs and outputs.

Needs neither the training code nor Lightning; an ONNX artifact needs only ``onnxruntime``
and ``numpy``. Everything that can be done once (reading the manifest, the sha256 check,
compiling the schema, opening the runtime) is done here, not per call.
"""

from __future__ import annotations

import dataclasses
import importlib
import operator
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lightning_deploy.errors import IntegrityError, LoadError, StructureError
from lightning_deploy.fast_call import Miss, bind_torch, compile_call
from lightning_deploy.files import sha256_file
from lightning_deploy.manifest import ONNX_FORMATS, SUFFIXES, manifest_path, read_manifest
from lightning_deploy.manifest_check import check_entry, check_io, contained_file
from lightning_deploy.placement import choose_device
from lightning_deploy.runtimes import runtime_module
from lightning_deploy.schema import Structure, check_schema_version

__all__ = ["ExportedModel", "ResolvedArtifact", "bind_arguments", "load", "resolve_artifact"]

# A manifest's artifact by default: the plain formats first. The derived ONNX files run only when
# named: int8 changes the numbers, and fusion is not always faster (docs/performance.md).
_PREFERENCE = ("onnx", "torchscript", "pt2", "aoti", "onnx-optimized", "onnx-int8")


def load(
    path: str | Path,
    format: str | None = None,  # noqa: A002 - the manifest's word
    verified_only: bool = True,
    threads: int | None = None,
    providers: Sequence[str] | None = None,
    device: str | None = None,
) -> ExportedModel:
    """Open an artifact (or the best one a manifest lists) as a callable with structured I/O.

    Args:
        path: ``STEM.onnx``, ``STEM.torchscript.pt``, ``STEM.pt2``, ``STEM.aoti.pt2`` or
            ``STEM.export.json``.
        format: with a manifest path, which artifact to run (default: the first ``ok`` of
            onnx, torchscript, pt2, aoti).
        verified_only: refuse an artifact that the manifest records as failed.
        threads: ONNX Runtime's intra-op threads (default: its own, one per physical core).
            torch runtimes follow ``torch.set_num_threads``, which is the process's to set.
        providers: ONNX Runtime execution providers, for what ``device`` does not cover
            (TensorRT, OpenVINO); not together with ``device``.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``: the artifact runs there, inputs are
            moved there and torch outputs come back there. Default: the device the manifest
            records for the artifact when this machine has it, else the CPU. Never another
            device than asked: a missing GPU (or ONNX Runtime without CUDA) raises.

    Returns:
        An :class:`ExportedModel`, called like the original ``forward``.

    Raises:
        LoadError: for a missing manifest or artifact, one recorded as failed, or a device
            this machine or runtime lacks (the error names the fix).
        IntegrityError: when the sha256 of the artifact (or of a side file such as
            ``STEM.onnx.data``) differs from the manifest's.

    Examples:
        >>> model = load("checkpoints/best.onnx")  # doctest: +SKIP
        >>> out = model({"x": x, "mask": mask})  # doctest: +SKIP

    """
    resolved = resolve_artifact(path, format, verified_only)
    digests = _sha256_in_background(list(resolved.recorded))
    try:
        model = ExportedModel(resolved.manifest, resolved.entry, resolved.artifact, threads, providers, device)
    except Exception:
        _check_digests(digests(), resolved.recorded)  # a changed file explains a failure to open it: say so instead
        raise
    _check_digests(digests(), resolved.recorded)
    return model


@dataclasses.dataclass(frozen=True)
class ResolvedArtifact:
    """The manifest entry ``load`` would open, its file, and the sha256 recorded for each of its files."""

    manifest: Mapping[str, Any]
    entry: Mapping[str, Any]
    artifact: Path
    recorded: Mapping[Path, str | None]

    def check_files(self) -> None:
        """Hash the artifact and its side files now; :class:`IntegrityError` where one differs from the manifest."""
        _check_digests({p: sha256_file(p) for p in self.recorded}, self.recorded)


def resolve_artifact(path: str | Path, format: str | None = None, verified_only: bool = True) -> ResolvedArtifact:  # noqa: A002
    """Everything ``load`` checks before it opens a runtime: the manifest, the entry, its files.

    For callers that open the artifact elsewhere (a server's worker) and want its errors early.
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
    entry = _select_artifact(manifest, manifest_file, path, format)
    if verified_only and not entry.get("ok"):
        raise LoadError(
            f"{manifest_file}: the {entry['format']} artifact failed at export: {entry.get('error')}."
            " HINT: fix the export, or pass verified_only=False to run it anyway."
        )
    artifact = contained_file(manifest_file.parent, entry["path"], f"{manifest_file}: the {entry['format']} path")
    if not artifact.is_file():
        raise LoadError(f"Artifact {artifact} is missing. HINT: copy it along with {manifest_file.name}.")
    side_files = {artifact.parent / name: sha for name, sha in entry.get("side_files_sha256", {}).items()}
    missing = [path for path in side_files if not path.is_file()]
    if missing:
        raise LoadError(f"{missing[0]} is missing. HINT: copy it along with the artifact and its manifest.")
    return ResolvedArtifact(manifest, entry, artifact, {artifact: entry.get("sha256"), **side_files})


def _check_digests(digests: Mapping[Path, str], recorded: Mapping[Path, str | None]) -> None:
    for path, digest in digests.items():
        if digest != recorded[path]:
            raise IntegrityError(
                f"{path}: sha256 mismatch: the file has {digest}, the manifest records {recorded[path]}."
                " The file was changed or replaced after export. HINT: re-export it, or restore the original."
            ) from None


def _sha256_in_background(paths: list[Path]) -> Callable[[], dict[Path, str]]:
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


def _select_artifact(manifest: Mapping[str, Any], manifest_file: Path, path: Path, fmt: str | None) -> dict:
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
    ranked = sorted(entries, key=lambda e: (not e.get("ok"), _PREFERENCE.index(e["format"])))
    found = [e for e in ranked if fmt is None or e["format"] == fmt]
    if not found:
        raise LoadError(f"{manifest_file} holds no {fmt or ''} artifact. HINT: export that format first.")
    return found[0]


class ExportedModel:
    """An artifact opened in its runtime, called with the same structure as ``forward``.

    Outputs come back as the array type of the inputs: torch tensors in, torch tensors out;
    numpy arrays in, numpy arrays out.

    Torch outputs come back on :attr:`device`, numpy outputs on the host.

    A scripted TorchScript artifact whose inputs hold lists has native I/O (``"io": "native"``
    in the manifest): it takes ``forward``'s own arguments, lists of any length, and returns
    what the scripted module returns (lists, dicts and tuples of tensors).
    """

    def __init__(
        self,
        manifest: Mapping[str, Any],
        entry: Mapping[str, Any],
        artifact: Path,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        device: str | None = None,
    ) -> None:
        check_io(manifest, artifact)
        inputs, outputs = manifest["inputs"], manifest["outputs"]
        check_schema_version(inputs["schema"])
        check_schema_version(outputs["schema"])
        self.manifest = manifest
        self.format = entry["format"]
        self.path = artifact
        self._call = inputs["schema"]["call"]
        # forward(a, b, ...) without *args/**kwargs, called positionally: the common case, bound by one zip
        plain = self._call["var_positional"] is None and self._call["var_keyword"] is None
        self._positional = tuple(self._call["parameters"]) if plain else None
        try:
            self._inputs = Structure(inputs["schema"]["tree"], root="input")
            self._outputs = Structure(outputs["schema"]["tree"], root="output")
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:  # a schema tree edited by hand
            raise LoadError(f"{artifact}: the manifest's schema is malformed ({type(err).__name__}: {err}).") from None
        if self._inputs.names != inputs["names"] or self._outputs.names != outputs["names"]:
            raise LoadError(f"{artifact}: the manifest's schema and leaf names disagree. HINT: re-export.")
        self._checks = _leaf_checks(inputs)
        self._shared_axes = _shared_axes(inputs)
        try:
            runtime = runtime_module(self.format)
        except ImportError as err:
            raise LoadError(
                f"Running a {self.format} artifact needs {err.name}. HINT: pip install {err.name}."
            ) from None
        _import_requirements(entry.get("requires") or [], artifact)
        self.runtime: str = runtime.RUNTIME
        self.device: str = self._choose_device(entry, runtime, device, providers)
        self._arrays = runtime.ARRAYS
        self._native = entry.get("io") == "native"
        try:
            if self._native:
                self._run_native = runtime.open_native(str(artifact), self.device)
            else:
                options = {"threads": threads, "providers": providers} if self.format in ONNX_FORMATS else {}
                names = inputs["names"], outputs["names"]
                self._run = runtime.open_runner(str(artifact), *names, self.device, **options)
        except LoadError:
            raise
        except Exception as err:  # the runtime's own error, said as ours with the file named
            text = " ".join(str(err).split())[:500]
            raise LoadError(f"{artifact}: {runtime.RUNTIME} cannot open it as {self.format}: {text}") from err
        self._fast = self._compile_fast_call(inputs, outputs)

    def _compile_fast_call(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> Callable[..., Any] | None:
        """The straight-line call (``fast_call``) where it applies: an ONNX artifact on the CPU, positional calls."""
        runner = getattr(self, "_run", None)
        if self._positional is None or self.device != "cpu" or not hasattr(runner, "run_feed") or not self.input_names:
            return None
        try:
            return compile_call(
                self._positional, inputs["schema"]["tree"], outputs["schema"]["tree"], runner.fed,
                runner.output_names, runner.run_feed, runner.run_options, self._shared_axes, self._outputs.class_of,
            )  # fmt: skip
        except Miss:  # a record field that is no attribute name: the general path only
            return None

    def _choose_device(self, entry: Mapping[str, Any], runtime: Any, device: str | None, providers: Any) -> str:
        """Where the artifact runs (``placement.choose_device``); explicit ONNX providers decide it themselves."""
        if providers is not None:
            if self.format not in ONNX_FORMATS:
                raise LoadError(f"load(providers=...) is for ONNX artifacts; this is {self.format}. HINT: use device=.")
            if device is not None:
                raise LoadError("load(device=..., providers=...): pass one of them. HINT: device= for CPU or CUDA.")
            return "cuda" if providers and providers[0] == "CUDAExecutionProvider" else "cpu"
        return choose_device(device, entry.get("device"), self.format, runtime.has_device, runtime.MISSING_DEVICE_HINT)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the artifact on structured inputs; returns the structured outputs."""
        if self._fast is not None and not kwargs:
            try:
                return self._fast(*args)
            except Exception:  # noqa: BLE001 - not the common case: the general path gives the answer or the error
                bind_torch(self._fast)  # torch may have been imported since load()
        if self._native:
            return self._call_native(self._bind(args, kwargs))
        return self._outputs.unflatten(self._run_flat(self._inputs.flatten(self._bind(args, kwargs))))

    def _call_native(self, arguments: dict[str, Any]) -> Any:
        """Pass the arguments as they are (arrays made torch tensors); outputs in the inputs' array type."""
        import torch.utils._pytree as pytree

        leaves = pytree.tree_leaves(arguments)
        wanted = "torch" if leaves and _is_torch(leaves[0]) else "numpy"
        outputs = self._run_native(**pytree.tree_map(lambda leaf: _convert(leaf, "torch", self.device), arguments))
        return outputs if wanted == "torch" else pytree.tree_map(lambda leaf: _convert(leaf, "numpy"), outputs)

    def _run_flat(self, leaves: list[Any]) -> list[Any]:
        """Check and run the input leaves; outputs come back in the inputs' array type (torch: on the device)."""
        numpy_in = not leaves or type(leaves[0]) is np.ndarray or not _is_torch(leaves[0])
        if self._arrays == "numpy":
            if numpy_in:  # arrays as they are, no call per numpy leaf
                arrays = [x if type(x) is np.ndarray else _convert(x, "numpy") for x in leaves]
                return self._run_onnx(arrays)
            # torch tensors into ONNX Runtime and back, sharing memory on the CPU (a few hundred ns a leaf)
            outputs = self._run_onnx([_convert(x, "numpy") for x in leaves])
            if self.device == "cpu":
                from_numpy = sys.modules["torch"].from_numpy
                return [from_numpy(o) for o in outputs]
            return [_convert(o, "torch", self.device) for o in outputs]
        arrays = [_convert(x, "torch", self.device) for x in leaves]
        self.check_leaves(arrays)
        outputs = self._run(arrays)
        return [_convert(o, "numpy") for o in outputs] if numpy_in else outputs

    def _run_onnx(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Run ONNX Runtime; the leaves are checked up front only where ONNX Runtime would not check them.

        ONNX Runtime refuses any input whose dtype, rank or static dims differ from the graph's
        (which are the exported ones), so the per-leaf checks run only when it refuses, to say
        which leaf and what to do instead of its own message; a microsecond a call on a small
        model. Leaves that share a dynamic axis (the batch) are checked first: the graph
        names no such rule, and broadcasting could run with sizes that disagree.
        """
        try:
            for axis, places in self._shared_axes:
                _check_shared(axis, places, arrays, self._inputs.names)
        except StructureError:
            self.check_leaves(arrays)  # a wrong rank or dtype is the first thing to say
            raise
        try:
            return self._run(arrays)
        except Exception:
            self.check_leaves(arrays)  # raises StructureError naming the leaf, where that is the cause
            raise

    def check_leaves(self, leaves: Sequence[Any]) -> None:
        """Check flat input arrays (in :attr:`input_names` order) as a call would, without running the artifact.

        Raises :class:`StructureError` naming the leaf: a dtype other than the exported one, a
        static dim that differs, or leaves that disagree on a shared dynamic axis (the batch).
        """
        for array, check in zip(leaves, self._checks):
            check(array)
        for axis, places in self._shared_axes:
            _check_shared(axis, places, leaves, self._inputs.names)

    @property
    def session(self) -> Any:
        """The ONNX Runtime ``InferenceSession`` of an ONNX artifact (``None`` for the torch runtimes).

        For what ``load()`` does not wrap: profiling, I/O binding, the session's metadata.
        """
        return getattr(getattr(self, "_run", None), "session", None)

    @property
    def input_names(self) -> list[str]:
        """The input leaves' names, in the artifact's order."""
        return self._inputs.names

    @property
    def output_names(self) -> list[str]:
        """The output leaves' names, in the artifact's order."""
        return self._outputs.names

    def outputs_by_name(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Like calling the model, but the outputs come back flat, keyed by leaf name."""
        if self._native:
            return _by_name(self._call_native(self._bind(args, kwargs)))
        return dict(zip(self._outputs.names, self._run_flat(self._inputs.flatten(self._bind(args, kwargs)))))

    def run_leaves(self, named: Mapping[str, Any]) -> dict[str, Any]:
        """Run on flat inputs keyed by leaf name (``batch.x``); returns outputs keyed by leaf name.

        The flat form of the structured call, for files of named arrays (``.npz``).
        """
        names = self._inputs.names
        missing, extra = [n for n in names if n not in named], [k for k in named if k not in names]
        if missing or extra:
            raise StructureError(f"Inputs by name: missing {missing}, extra {extra}; the model takes {names}.")
        leaves = [named[n] for n in names]
        if self._native:
            return _by_name(self._call_native(self._inputs.unflatten(leaves)))
        return dict(zip(self._outputs.names, self._run_flat(leaves)))

    def __repr__(self) -> str:
        return f"ExportedModel(path={str(self.path)!r}, format={self.format!r}, device={self.device!r})"

    def _bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Map ``args``/``kwargs`` onto the exported parameters (plain positional calls by one zip)."""
        if not kwargs and self._positional is not None and len(args) == len(self._positional):
            return dict(zip(self._positional, args))
        return bind_arguments(self._call, args, kwargs)


def bind_arguments(call: Mapping[str, Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Map ``args``/``kwargs`` onto the manifest's ``call`` (forward's parameters), like ``inspect.Signature.bind``.

    Written by hand because the signature is known only from the manifest's JSON.
    """
    params, var_pos, var_kw = call["parameters"], call["var_positional"], call["var_keyword"]
    arguments: dict[str, Any] = {}
    remaining = list(args)
    for name in params:
        if name == var_pos:
            arguments[name], remaining = tuple(remaining), []
        elif name != var_kw and remaining:
            arguments[name] = remaining.pop(0)
    if remaining:
        raise StructureError(f"Too many positional arguments: the model takes {params}.")
    for name, value in kwargs.items():
        if name in arguments:
            raise StructureError(f"Argument {name!r} given twice.")
        if name in params and name not in (var_pos, var_kw):
            arguments[name] = value
        elif var_kw is not None:
            arguments.setdefault(var_kw, {})[name] = value
        else:
            raise StructureError(f"Unknown argument {name!r}: the model was exported with {params}.")
    missing = [p for p in params if p not in arguments]
    if missing:
        raise StructureError(f"Missing argument(s) {missing}: the model was exported with {params}.")
    return arguments


def _import_requirements(packages: Sequence[str], artifact: Path) -> None:
    """Import the operator libraries the artifact calls (``torchvision`` for ``torchvision::nms``).

    Importing registers their operators with torch; without it TorchScript fails with "Unknown
    builtin op". ``onnx-domain:`` entries name custom ONNX domains: nothing to import.
    """
    for package in packages:
        if package.startswith("onnx-domain:"):
            continue
        if not package.isidentifier():
            raise LoadError(f"{artifact.name}: the manifest's requires lists {package!r}, not a package name.")
        try:
            importlib.import_module(package)
        except ImportError as err:
            raise LoadError(
                f"{artifact.name} calls operators of {package!r}, which cannot be imported here ({err})."
                f" HINT: pip install {package}."
            ) from None


def _by_name(outputs: Any) -> dict[str, Any]:
    """Native outputs flat, keyed like the manifest's leaf names (``out.0.boxes``)."""
    import torch.utils._pytree as pytree

    pairs, _ = pytree.tree_flatten_with_path(outputs)
    return {".".join(["out", *(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)]): v for path, v in pairs}


def _leaf_checks(inputs: Mapping[str, Any]) -> list[_LeafCheck]:
    """Per input leaf, its dtype and static dims, compiled once."""
    dynamic = inputs.get("dynamic_axes", {})
    return [
        _LeafCheck(name, dtype, shape, {int(d) for d in dynamic.get(name, {})})
        for name, dtype, shape in zip(inputs["names"], inputs["dtypes"], inputs["shapes"])
    ]


def _shared_axes(inputs: Mapping[str, Any]) -> list[tuple[str, list[tuple[int, int]]]]:
    """Dynamic axes that several input dims share (a batch): ``(axis, [(leaf index, dim), ...])``."""
    places: dict[str, list[tuple[int, int]]] = {}
    for index, name in enumerate(inputs["names"]):
        for dim, axis in inputs.get("dynamic_axes", {}).get(name, {}).items():
            places.setdefault(str(axis), []).append((index, int(dim)))
    return [(axis, where) for axis, where in places.items() if len(where) > 1]


def _check_shared(axis: str, places: list[tuple[int, int]], arrays: Sequence[Any], names: Sequence[str]) -> None:
    """Leaves that share a dynamic axis must agree on its size: the graph assumes it (a runtime's guard fails)."""
    first_index, first_dim = places[0]
    size = arrays[first_index].shape[first_dim]
    for index, dim in places[1:]:
        if arrays[index].shape[dim] != size:
            raise StructureError(
                f"inputs disagree on dim {axis!r}: it is {size} in input '{names[first_index]}' and"
                f" {arrays[index].shape[dim]} in input '{names[index]}'. HINT: give every input the same {axis} size."
            )


class _LeafCheck:
    """One input leaf's dtype and static dims; calling it checks an array (a few hundred ns)."""

    __slots__ = ("dtype", "dynamic", "name", "ndim", "numpy_dtype", "pick_static", "shape", "static_sizes")

    def __init__(self, name: str, dtype: str, shape: list[int], dynamic: set[int]) -> None:
        self.name, self.dtype, self.shape, self.dynamic, self.ndim = name, dtype, shape, dynamic, len(shape)
        self.numpy_dtype = _numpy_dtype(dtype)
        static = [d for d in range(len(shape)) if d not in dynamic]
        # itemgetter picks the static dims in C; comparing what it picks of the exported shape
        # with what it picks of an array's shape is the whole check.
        self.pick_static = operator.itemgetter(*static) if static else (lambda shape: ())
        self.static_sizes = self.pick_static(tuple(shape))

    def __call__(self, array: Any) -> None:
        dtype = array.dtype
        if dtype is not self.numpy_dtype and dtype != self.numpy_dtype and (got := _dtype_name(array)) != self.dtype:
            raise StructureError(
                f"input '{self.name}': dtype {got}, the model was exported with {self.dtype}. HINT: cast it."
            )
        got = array.shape
        if len(got) != self.ndim or self.pick_static(tuple(got)) != self.static_sizes:
            wanted = ", ".join("*" if d in self.dynamic else str(s) for d, s in enumerate(self.shape))
            raise StructureError(
                f"input '{self.name}': shape {list(got)} does not fit the exported shape [{wanted}] (* = dynamic)."
                " HINT: only the dims marked * may change; export with dynamic_axes to free others."
            )


def _numpy_dtype(name: str) -> np.dtype | None:
    """The numpy dtype of a manifest dtype name, where numpy has one (not bfloat16)."""
    try:
        return np.dtype(name)
    except TypeError:
        return None


def _dtype_name(array: Any) -> str:
    return array.dtype.name if isinstance(array, np.ndarray) else str(array.dtype).removeprefix("torch.")


def _is_torch(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _convert(value: Any, kind: str, device: str = "cpu") -> Any:
    """``value`` as a numpy array or a torch tensor on ``device``, sharing memory where it can.

    The per-call path of a torch user of an ONNX artifact, so the cheap calls come first: a
    CPU tensor without autograd *is* a numpy array (``Tensor.numpy``, 0.3 µs against 1.2 µs
    through ``detach().cpu()``), and an array *is* a CPU tensor (``torch.from_numpy``, 0.4 µs
    against 2.5 µs through ``torch.as_tensor(device=...)``).
    """
    if kind == "numpy":
        if isinstance(value, np.ndarray):
            return value
        if not _is_torch(value):
            return np.asarray(value)
        try:
            return value.numpy()  # refuses tensors that need grad, live on a GPU, or carry conj/neg bits
        except (RuntimeError, TypeError):
            return value.detach().cpu().numpy()
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().to(device)
    if device == "cpu" and isinstance(value, np.ndarray) and value.dtype.isnative and value.flags.writeable:
        return torch.from_numpy(value)
    return torch.as_tensor(value, device=device)
