"""``ExportedModel``: an artifact opened in its runtime, called with the structure of ``forward``.

Three call paths, one answer: the straight-line call written once per manifest for ONNX on
the CPU (``fast_call``), the general path (bind, flatten by the schema, check, run, rebuild),
and native I/O for scripted TorchScript that takes ``forward``'s own lists.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lightning_deploy.artifact.contract import IOContract
from lightning_deploy.artifact.entry import ArtifactEntry
from lightning_deploy.artifact.schema import key_label, leaf_path
from lightning_deploy.artifact.structure import Structure
from lightning_deploy.errors import LoadError, StructureError
from lightning_deploy.runtime.arrays import convert, is_torch, torch_dtype
from lightning_deploy.runtime.backends import runtime_module
from lightning_deploy.runtime.calling import check_shared, import_requirements, leaf_guards
from lightning_deploy.runtime.fast_call import Miss, bind_torch, compile_call, compile_torch_call
from lightning_deploy.runtime.placement import check_memory, choose_device

__all__ = ["ExportedModel"]


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
        contract: IOContract,
        entry: ArtifactEntry | Mapping[str, Any],
        artifact: Path,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        device: str | None = None,
    ) -> None:
        self.contract = contract
        entry = entry if isinstance(entry, ArtifactEntry) else ArtifactEntry.from_json(entry)
        self.format = entry.format
        self.path = artifact
        self._convention = contract.call
        # forward(a, b, ...) without *args/**kwargs, called positionally: the common case, bound by one zip
        self._positional = contract.call.parameters if contract.call.plain else None
        self._inputs = Structure(contract.inputs.tree, root="input")
        self._outputs = Structure(contract.outputs.tree, root="output")
        self.ranges: dict[str, dict[str, list[int | None]]] = entry.ranges or {}  # the sizes it accepts
        self._guards = leaf_guards(contract.inputs, self.ranges)
        # (leaf index, dim, min, max) of the dims whose sizes are limited: no runtime checks them itself
        self._spans = [(index, *span) for index, guard in enumerate(self._guards) for span in guard.spans]
        self._shared_axes = contract.inputs.shared_axes()
        try:
            runtime = runtime_module(self.format)
        except ImportError as err:
            raise LoadError(
                f"Running a {self.format} artifact needs {err.name}. HINT: pip install {err.name}."
            ) from None
        import_requirements(entry.requires, artifact)
        self.runtime: str = runtime.RUNTIME
        self._takes_session_options = getattr(runtime, "SESSION_OPTIONS", False)  # threads=, providers=
        self.device: str = self._choose_device(entry, runtime, device, providers)
        self._arrays = runtime.ARRAYS
        self._runtime_checks_inputs = getattr(runtime, "CHECKS_INPUTS", False) and not self._spans
        self._native = entry.io == "native"
        if self.device == "cpu":
            check_memory([artifact, *(artifact.parent / name for name in entry.files if name != artifact.name)],
                         runtime.RUNTIME)  # fmt: skip
        try:
            if self._native:
                self._run_native = runtime.open_native(str(artifact), self.device)
            else:
                options = {"threads": threads, "providers": providers} if self._takes_session_options else {}
                names = contract.inputs.names, contract.outputs.names
                self._run = runtime.open_runner(str(artifact), *names, self.device, **options)
        except LoadError:
            raise
        except Exception as err:  # the runtime's own error, said as ours with the file named
            text = " ".join(str(err).split())[:500]
            raise LoadError(f"{artifact}: {runtime.RUNTIME} cannot open it as {self.format}: {text}") from err
        self._fast = self._compile_fast_call()

    def _compile_fast_call(self) -> Callable[..., Any] | None:
        """The straight-line call (``fast_call``) where it applies: on the CPU, positional calls, ONNX or torch.

        ONNX Runtime's session, or a torch runtime's module (TorchScript, ``.pt2``, AOTInductor),
        called with the flat leaves. ExecuTorch and OpenVINO take the general path: it checks
        the leaves (and bounds) they would not check themselves.
        """
        runner = getattr(self, "_run", None)
        if self._positional is None or self.device != "cpu" or not self.input_names:
            return None
        common = self._positional, self.contract.inputs.tree, self.contract.outputs.tree
        try:
            if hasattr(runner, "run_feed"):
                return compile_call(*common, runner.fed, runner.output_names, runner.run_feed, runner.run_options,
                                    self._shared_axes, self._spans, self._outputs.class_of)  # fmt: skip
            if callable(getattr(runner, "module", None)) and self._arrays == "torch":
                leaves = [(torch_dtype(c.dtype), c.ndim, [(d, c.shape[d]) for d in range(c.ndim) if d not in c.dynamic])
                          for c in self._guards]  # fmt: skip
                return compile_torch_call(*common, runner.module, leaves, len(self.output_names), self._shared_axes,
                                          self._spans, self._outputs.class_of)  # fmt: skip
        except Miss:  # a record field that is no attribute name: the general path only
            return None
        return None

    def _choose_device(self, entry: ArtifactEntry, runtime: Any, device: str | None, providers: Any) -> str:
        """Where the artifact runs (``placement.choose_device``); explicit ONNX providers decide it themselves."""
        if providers is not None:
            if not self._takes_session_options:
                raise LoadError(f"load(providers=...) is for ONNX artifacts; this is {self.format}. HINT: use device=.")
            if device is not None:
                raise LoadError("load(device=..., providers=...): pass one of them. HINT: device= for CPU or CUDA.")
            return "cuda" if providers and providers[0] == "CUDAExecutionProvider" else "cpu"
        return choose_device(device, entry.device, self.format, runtime.has_device, runtime.MISSING_DEVICE_HINT)

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
        wanted = "torch" if leaves and is_torch(leaves[0]) else "numpy"
        outputs = self._run_native(**pytree.tree_map(lambda leaf: convert(leaf, "torch", self.device), arguments))
        return outputs if wanted == "torch" else pytree.tree_map(lambda leaf: convert(leaf, "numpy"), outputs)

    def _run_flat(self, leaves: list[Any]) -> list[Any]:
        """Check and run the input leaves; outputs come back in the inputs' array type (torch: on the device)."""
        numpy_in = not leaves or type(leaves[0]) is np.ndarray or not is_torch(leaves[0])
        if self._arrays == "numpy":
            if numpy_in:  # arrays as they are, no call per numpy leaf
                arrays = [x if type(x) is np.ndarray else convert(x, "numpy") for x in leaves]
                return self._run_numpy(arrays)
            # torch tensors into ONNX Runtime and back, sharing memory on the CPU (a few hundred ns a leaf)
            outputs = self._run_numpy([convert(x, "numpy") for x in leaves])
            if self.device == "cpu":
                from_numpy = sys.modules["torch"].from_numpy
                return [from_numpy(o) for o in outputs]
            return [convert(o, "torch", self.device) for o in outputs]
        arrays = [convert(x, "torch", self.device) for x in leaves]
        self.check_leaves(arrays)
        outputs = self._run(arrays)
        return [convert(o, "numpy") for o in outputs] if numpy_in else outputs

    def _run_numpy(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Run a numpy runtime; the leaves are checked up front only where the runtime would not check them.

        ONNX Runtime (``CHECKS_INPUTS``) refuses any input whose dtype, rank or static dims
        differ from the graph's (which are the exported ones), so the leaf guards run only
        when it refuses, to say which leaf and what to do instead of its own message; a
        microsecond a call on a small model. Leaves that share a dynamic axis (the batch) are
        checked first: the graph names no such rule, and broadcasting could run with sizes that
        disagree. Other runtimes are checked first: OpenVINO casts a float64 array silently and
        ran a [3, 9] array through a graph made for [*, 8] (measured, 2026.4).
        """
        if not self._runtime_checks_inputs:
            self.check_leaves(arrays)
            return self._run(arrays)
        try:
            for axis, places in self._shared_axes:
                check_shared(axis, places, arrays, self._inputs.names)
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
        for array, guard in zip(leaves, self._guards):
            guard(array)
        for axis, places in self._shared_axes:
            check_shared(axis, places, leaves, self._inputs.names)

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
            return _native_outputs_by_name(self._call_native(self._bind(args, kwargs)))
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
            return _native_outputs_by_name(self._call_native(self._inputs.unflatten(leaves)))
        return dict(zip(self._outputs.names, self._run_flat(leaves)))

    def __repr__(self) -> str:
        return f"ExportedModel(path={str(self.path)!r}, format={self.format!r}, device={self.device!r})"

    def _bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Map ``args``/``kwargs`` onto the exported parameters (plain positional calls by one zip)."""
        if not kwargs and self._positional is not None and len(args) == len(self._positional):
            return dict(zip(self._positional, args))
        return self._convention.bind(args, kwargs)


def _native_outputs_by_name(outputs: Any) -> dict[str, Any]:
    """Native outputs flat, keyed like the manifest's leaf names (``out.0.boxes``)."""
    import torch.utils._pytree as pytree

    pairs, _ = pytree.tree_flatten_with_path(outputs)
    return {functools.reduce(leaf_path, map(key_label, path), "out"): v for path, v in pairs}
