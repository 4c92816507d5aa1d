"""The call side of an artifact: forward's arguments bound by the manifest, input leaves checked, requirements.

``bind_arguments`` is forward's calling convention read from the manifest's ``call`` (the
export side binds samples with ``inspect.Signature.bind`` on the module itself). The leaf
guards (:class:`LeafGuard`) say which input leaf is wrong and how, where a runtime's own message would not.
"""

from __future__ import annotations

import importlib
import operator
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_deploy.artifact.contract import Call, Tensors
from lightning_deploy.artifact.ranges import leaf_spans, span_text
from lightning_deploy.errors import LoadError, StructureError
from lightning_deploy.runtime.arrays import dtype_name, numpy_dtype

__all__ = ["LeafGuard", "bind_arguments", "check_shared", "import_requirements", "leaf_guards"]


def bind_arguments(call: Mapping[str, Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Map ``args``/``kwargs`` onto a manifest's ``call``: :meth:`Call.bind` of :meth:`Call.from_json`."""
    return Call.from_json(call).bind(args, kwargs)


def import_requirements(packages: Sequence[str], artifact: Path) -> None:
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


def leaf_guards(inputs: Tensors, ranges: Mapping[str, Any] | None = None) -> list[LeafGuard]:
    """Per input leaf, its dtype, static dims and the sizes its dynamic dims accept (the entry's ``ranges``)."""
    return [LeafGuard(leaf.name, leaf.dtype, list(leaf.shape), set(leaf.dynamic), leaf_spans(ranges, leaf.name))
            for leaf in inputs.leaves]  # fmt: skip


def check_shared(axis: str, places: list[tuple[int, int]], arrays: Sequence[Any], names: Sequence[str]) -> None:
    """Leaves that share a dynamic axis must agree on its size: the graph assumes it (a runtime's guard fails)."""
    first_index, first_dim = places[0]
    size = arrays[first_index].shape[first_dim]
    for index, dim in places[1:]:
        if arrays[index].shape[dim] != size:
            raise StructureError(
                f"inputs disagree on dim {axis!r}: it is {size} in input '{names[first_index]}' and"
                f" {arrays[index].shape[dim]} in input '{names[index]}'. HINT: give every input the same {axis} size."
            )


class LeafGuard:
    """One input leaf's dtype, static dims and dynamic dims' ranges; calling it checks an array (a few hundred ns)."""

    __slots__ = ("dtype", "dynamic", "name", "ndim", "numpy_dtype", "pick_static", "shape", "spans", "static_sizes")

    def __init__(self, name: str, dtype: str, shape: list[int], dynamic: set[int],
                 spans: Sequence[tuple[int, int, int | None]] = ()) -> None:  # fmt: skip
        self.name, self.dtype, self.shape, self.dynamic, self.ndim = name, dtype, shape, dynamic, len(shape)
        self.spans = spans  # (dim, min, max) of the dynamic dims whose sizes are limited
        self.numpy_dtype = numpy_dtype(dtype)
        static = [d for d in range(len(shape)) if d not in dynamic]
        # itemgetter picks the static dims in C; comparing what it picks of the exported shape
        # with what it picks of an array's shape is the whole check.
        self.pick_static = operator.itemgetter(*static) if static else (lambda shape: ())
        self.static_sizes = self.pick_static(tuple(shape))

    def __call__(self, array: Any) -> None:
        """Raise :class:`StructureError` naming the leaf where ``array`` has another dtype or static dims."""
        dtype = array.dtype
        if dtype is not self.numpy_dtype and dtype != self.numpy_dtype and (got := dtype_name(array)) != self.dtype:
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
        for dim, low, high in self.spans:
            if got[dim] < low or (high is not None and got[dim] > high):
                raise StructureError(
                    f"input '{self.name}': dim {dim} is {got[dim]}, outside the sizes this artifact accepts there"
                    f" ({span_text(low, high)}; the manifest's ranges). HINT: resize or split the input to fit,"
                    " or load another format (lightning-deploy show lists each one's ranges)."
                )
