"""Run an ONNX artifact in ONNX Runtime; imports neither torch nor onnx."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from lightning_deploy.errors import LoadError

__all__ = ["ARRAYS", "RUNTIME", "open_runner"]

RUNTIME = "onnxruntime"
ARRAYS = "numpy"


class OnnxRunner:
    """A session opened once; each call feeds the inputs the graph kept, by name.

    Exporters drop graph inputs the model never reads, so only those present are fed.
    """

    def __init__(self, path: str, input_names: Sequence[str], output_names: Sequence[str]) -> None:
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
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

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run the graph on the flat inputs; returns the flat outputs."""
        feed = {name: np.ascontiguousarray(inputs[i]) for i, name in self.fed}
        return self.session.run(self.output_names, feed)


def open_runner(path: str, input_names: Sequence[str], output_names: Sequence[str]) -> OnnxRunner:
    """Open ``path`` in an ONNX Runtime CPU session."""
    return OnnxRunner(path, input_names, output_names)
