"""Run an ONNX artifact in ONNX Runtime; imports neither torch nor onnx."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from lightning_deploy.errors import LoadError
from lightning_deploy.runtime.placement import device_index

__all__ = ["ARRAYS", "CHECKS_INPUTS", "MISSING_DEVICE_HINT", "RUNTIME", "has_device", "open_runner", "providers_for"]

RUNTIME = "onnxruntime"
ARRAYS = "numpy"
PACKAGE = "onnxruntime"  # the pip distribution that runs it (a served model's requirements)
CHECKS_INPUTS = True  # refuses a wrong dtype, rank or static dim itself (ExportedModel checks only then)
SESSION_OPTIONS = True  # open_runner takes threads= and providers= (load()'s, passed on)

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
MISSING_DEVICE_HINT = (
    f"ONNX Runtime needs its {_CUDA} for a GPU: pip uninstall onnxruntime && pip install onnxruntime-gpu"
    " (with a CUDA driver), or pass device='cpu'."
)


def has_device(device: str) -> bool:
    """Whether this ONNX Runtime can run on ``device``: the CPU always, a GPU with its CUDA provider.

    Which GPUs exist is only known once a session starts on one (``OnnxRunner`` checks it).
    """
    return device == "cpu" or _CUDA in ort.get_available_providers()


def providers_for(device: str) -> list:
    """The providers for ``device``: CUDA on that GPU (the CPU takes nodes CUDA lacks), or the CPU alone."""
    if device == "cpu":
        return [_CPU]
    return [(_CUDA, {"device_id": device_index(device)}), _CPU]


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Options chosen on purpose: every graph optimisation, ``threads`` for one operator's work.

    ``threads=None`` keeps ONNX Runtime's default (one per physical core). Operators run one
    after another (``inter_op_num_threads=1``), which is what a single-stream model needs.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    return options


def check_providers(requested: Sequence[str]) -> list[str]:
    """``requested`` if all are available here, else a ``LoadError`` listing what is."""
    available = ort.get_available_providers()
    missing = [p for p in requested if p not in available]
    if missing:
        raise LoadError(f"providers={list(requested)}: {missing} not available here; available: {available}.")
    return list(requested)


class OnnxRunner:
    """A session opened once; each call feeds the inputs the graph kept, by name.

    The session uses :func:`session_options` and the providers of ``device`` (or
    ``providers``, given explicitly). ONNX Runtime starts on the CPU alone, with a warning,
    where the CUDA provider fails to start; that is refused here, since a GPU was asked for.
    Exporters drop graph inputs the model never reads, so only those present are fed.
    """

    def __init__(
        self,
        path: str,
        input_names: Sequence[str],
        output_names: Sequence[str],
        device: str = "cpu",
        threads: int | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        chosen = check_providers(providers) if providers is not None else providers_for(device)
        self.session = ort.InferenceSession(path, session_options(threads), providers=chosen)
        if providers is None and device != "cpu" and self.session.get_providers()[0] != _CUDA:
            raise LoadError(
                f"{path}: ONNX Runtime could not start {_CUDA} on {device} and would run on the CPU."
                f" HINT: check the GPU and the CUDA/cuDNN libraries onnxruntime-gpu needs, or pass device='cpu'."
            )
        graph_inputs = {i.name for i in self.session.get_inputs()}
        graph_outputs = {o.name for o in self.session.get_outputs()}
        missing = [n for n in output_names if n not in graph_outputs]
        unknown = graph_inputs.difference(input_names)
        if missing or unknown:
            raise LoadError(
                f"{path}: the graph's inputs/outputs do not match its manifest (outputs missing {missing},"
                f" inputs unknown {sorted(unknown)}). HINT: re-export; the manifest belongs to another model."
            )
        self.fed = [(i, n) for i, n in enumerate(input_names) if n in graph_inputs]
        self.output_names = list(output_names)
        # InferenceSession.run is a Python wrapper that checks the feed's names on every call and
        # passes None run options, which the binding turns into new ones per call: 1.9 µs of a
        # 7.2 µs call of a small MLP, measured here. The names were checked above, once, so the
        # session's own binding is called directly with options made once; where a future
        # onnxruntime lacks it, the public wrapper (same arguments) is used.
        self.run_options = ort.RunOptions()
        bound = getattr(self.session, "_sess", None)
        self.run_feed = bound.run if bound is not None and hasattr(bound, "run") else self.session.run

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run the graph on the flat inputs; returns the flat outputs.

        Arrays are passed as they are: ONNX Runtime makes a contiguous copy itself where an
        array is not (a strided view), so a copy here would only cost time.
        """
        return self.run_feed(self.output_names, {name: inputs[i] for i, name in self.fed}, self.run_options)


open_runner = OnnxRunner  # the runtime interface's name: opens ``path`` in a session
