"""JSON (or ``.npz``) in and out of a served artifact, and which requests can share one run.

A request is a JSON object keyed by ``forward``'s argument names, its values nested as the
model's inputs are (dicts, lists, tensors as nested lists of numbers); an answer is the output
structure in JSON (dicts stay dicts, tuples and lists become lists, named tuples, dataclasses
and other records become objects by field name, tensors nested lists, ``None`` null). The
binary form is an ``.npz`` keyed by leaf names, both ways. Both are
walked by the manifest's schema, so they need neither the model's code nor torch. Every check
here concerns one request alone: a server batches requests *after* decoding them, and one bad
request must not fail the others.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from lightning_deploy.artifact.contract import IOContract
from lightning_deploy.artifact.schema import kind_of, walk
from lightning_deploy.artifact.structure import Structure
from lightning_deploy.errors import ConfigurationError, StructureError

__all__ = ["RequestCodec", "batch_axis"]

# Which JSON numbers an input of each numpy kind takes: integers make floats, fractions never make integers.
_ACCEPTED_KINDS = {"f": "fiu", "c": "fiuc", "i": "iu", "u": "iu", "b": "b"}
_KIND_WORDS = {"b": "true/false", "i": "integer", "u": "integer", "f": "fractional", "U": "string", "O": "mixed"}


class RequestCodec:
    """The manifest's input and output schemas, compiled once for JSON requests and answers.

    Args:
        contract: the artifact's I/O contract (``ResolvedArtifact.contract``).

    Raises:
        ConfigurationError: where an input's dtype has no JSON form here (bfloat16).
    """

    def __init__(self, contract: IOContract) -> None:
        self.contract = contract
        self.parameters: list[str] = list(contract.call.parameters)
        self.input_names: list[str] = contract.inputs.names
        self.output_names: list[str] = contract.outputs.names
        self._dtypes = {leaf.name: _numpy_dtype(leaf.name, leaf.dtype) for leaf in contract.inputs.leaves}
        self._inputs = Structure(contract.inputs.tree, root="input", leaf=self._array)
        self._answer = _json_builder(contract.outputs.tree)

    def __reduce__(self) -> tuple[type, tuple[IOContract]]:
        """Pickled as the contract it was made from (a server sends it to its worker processes)."""
        return type(self), (self.contract,)

    def leaves(self, request: Any) -> list[np.ndarray]:
        """The input leaves of one request, as arrays of the exported dtypes.

        Raises:
            StructureError: naming the argument or leaf that is missing, extra, wrongly nested,
                ragged, or of numbers the input's dtype cannot hold.
        """
        if not isinstance(request, Mapping):
            raise StructureError(
                f"the request must be a JSON object keyed by forward's arguments {self.parameters},"
                f" got a JSON {_json_type(request)}."
            )
        return self._inputs.flatten(request)

    def leaves_from_npz(self, body: bytes) -> list[np.ndarray]:
        """The input leaves of an ``.npz`` body keyed by input leaf names (``batch.x``), as the exported dtypes.

        The binary form of a request, for large tensors: decoding it costs a copy where JSON's
        text costs a parse per number (resnet18's 224x224 image: 3.1 MB of JSON, 50 ms to parse).
        """
        if not body.startswith(b"PK"):  # a zip archive's magic; np.load would read anything else as a pickle
            raise StructureError(
                "the body is neither JSON (content-type: application/json) nor an .npz archive."
                " HINT: send JSON, or numpy.savez's bytes keyed by input leaf names."
            )
        try:
            with np.load(io.BytesIO(body), allow_pickle=False) as archive:
                named = {name: archive[name] for name in archive.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise StructureError(
                f"the body is not an .npz archive of arrays ({err}). HINT: write it with numpy.savez."
            ) from None
        missing = [n for n in self.input_names if n not in named]
        extra = [k for k in named if k not in self._dtypes]
        if missing or extra:
            raise StructureError(
                f"the .npz holds missing {missing}, extra {extra}; the model takes {self.input_names}."
            )
        return [self._array(name, named[name]) for name in self.input_names]

    def answer(self, leaves: Sequence[np.ndarray]) -> Any:
        """The output structure as JSON-ready Python values, from the output leaves in manifest order."""
        return self._answer(iter(leaves))

    def npz_answer(self, leaves: Sequence[np.ndarray]) -> bytes:
        """The output leaves as an ``.npz`` keyed by output leaf names (``out.logits``)."""
        buffer = io.BytesIO()
        np.savez(buffer, **dict(zip(self.output_names, leaves)))
        return buffer.getvalue()

    def _array(self, name: str, value: Any) -> np.ndarray:
        dtype = self._dtypes[name]
        if value is None or isinstance(value, (str, Mapping)):
            raise StructureError(
                f"input '{name}': expected {dtype.name} numbers in nested lists, got a JSON {_json_type(value)}."
            )
        try:
            array = np.asarray(value)
        except ValueError:
            raise StructureError(
                f"input '{name}': nested lists of unequal lengths. HINT: every row of a tensor has the same shape."
            ) from None
        if array.dtype.kind not in _ACCEPTED_KINDS[dtype.kind]:
            got = _KIND_WORDS.get(array.dtype.kind, array.dtype.name)
            raise StructureError(
                f"input '{name}': {got} values, the model takes {dtype.name}."
                + (" HINT: send whole numbers." if dtype.kind in "iu" else " HINT: send numbers.")
            )
        return array.astype(dtype, copy=False)


def batch_axis(contract: IOContract) -> tuple[str | None, str]:
    """The dynamic axis that dim 0 of every input shares, if requests can be stacked along it.

    Returns ``(axis, "")`` when every input leaf's dim 0 is that one dynamic axis and every
    output leaf's dim 0 is dynamic too; else ``(None, reason)``. Whether each output row
    belongs to the input row of the same index is checked on every batched run (a server
    answers the requests one by one where the rows do not add up).
    """
    axes = set()
    for leaf in contract.inputs.leaves:
        axis = leaf.dynamic.get(0)
        if axis is None:
            return None, f"dim 0 of input '{leaf.name}' is fixed"
        axes.add(axis)
    if len(axes) > 1:
        return None, f"the inputs' dim 0 are different dynamic axes {sorted(axes)}, not one batch"
    for leaf in contract.outputs.leaves:
        if 0 not in leaf.dynamic:
            return None, f"dim 0 of output '{leaf.name}' is fixed"
    if not contract.inputs.leaves:
        return None, "the model takes no tensors"
    return axes.pop(), ""


def _json_builder(tree: Mapping[str, Any]) -> Callable[[Iterator[np.ndarray]], Any]:
    """The function that turns the output leaves into JSON values: sequences as arrays, keyed nodes as objects.

    Compiled once per manifest, as ``Structure`` is, so that a request runs no walk over the schema.
    """

    def visit(node: Mapping[str, Any], path: str, folded: list[tuple[Any, Any]]) -> Callable[[Iterator], Any]:
        layout = kind_of(node).layout
        if layout == "leaf":
            return lambda leaves: next(leaves).tolist()  # children are built in order: the leaves are taken in order
        if layout == "none":
            return lambda leaves: None
        children = [child for _, child in folded]
        if layout == "sequence":
            return lambda leaves: [build(leaves) for build in children]
        keys = [str(label) for label, _ in folded]
        return lambda leaves: {key: build(leaves) for key, build in zip(keys, children)}

    return walk(tree, visit)


def _numpy_dtype(name: str, dtype: str) -> np.dtype:
    try:
        return np.dtype(dtype)
    except TypeError:
        raise ConfigurationError(
            f"input '{name}' is {dtype}, which JSON requests cannot carry here (numpy has no {dtype})."
            " HINT: export the model with a float32 input and cast inside forward."
        ) from None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {str: "string", dict: "object", list: "array", bool: "boolean"}.get(type(value), "number")
