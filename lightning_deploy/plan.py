"""The export plan: everything decided before the first exporter runs.

The sample is bound to ``forward``, flattened and moved to the module's device, dynamic dims
are resolved, the export and check samples are made, and the eager reference is computed at
both (``eager.py``). The plan
also describes the inputs and outputs as the manifest records them, which is what ``load()``
(and so verification) reads.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lightning_deploy.adapters import CallSpec, FlatAdapter, FlatTree, bind_sample, flatten_tree
from lightning_deploy.dynamic import (
    DynamicDims,
    export_and_check_samples,
    list_length_samples,
    longest_list,
    resolve_dynamic_dims,
)
from lightning_deploy.eager import changed_dims, fast_path_agreement, run_eager
from lightning_deploy.errors import ConfigurationError, ExportError
from lightning_deploy.exporters import ExportContext
from lightning_deploy.options import ExportOptions

__all__ = ["Plan", "device_name", "make_plan", "module_device"]


@dataclasses.dataclass
class Plan:
    """The flattened structures, the export context and the eager reference at each check sample.

    ``samples`` are ``{parameter: value}`` (the export sample, then the second sample) and
    ``expected`` the eager model's structured outputs there; ``flat_expected`` their tensor
    leaves. ``device`` is where the module lives and so where everything was captured.
    """

    inputs: FlatTree
    call: CallSpec
    outputs: FlatTree
    ctx: ExportContext
    samples: list[dict[str, Any]]
    expected: list[Any]
    flat_expected: list[tuple[torch.Tensor, ...]]
    device: str = "cpu"
    fast_path: dict[str, Any] | None = None
    _native_checks: tuple[list[dict], list[Any]] | None = None

    def checks(self, native: bool) -> tuple[list[dict], list[Any]]:
        """Samples and eager outputs to verify at; with native I/O, also every list cut to one item and grown by one."""
        if not native:
            return self.samples, self.expected
        if self._native_checks is None:
            extra = list_length_samples(*self.samples)
            module = self.ctx.adapter.module
            outputs = [module(*args, **kwargs) for args, kwargs in map(self.call.split, extra)]
            self._native_checks = ([*self.samples, *extra], [*self.expected, *outputs])
        return self._native_checks

    def io_manifest(self) -> dict[str, Any]:
        """The manifest's ``inputs`` and ``outputs``: schemas, leaf names, shapes, dtypes, dynamic axes."""
        ctx = self.ctx
        return {
            "inputs": {
                "schema": {**self.inputs.schema, "call": self.call.to_json()},
                "names": list(ctx.input_names),
                "shapes": [list(t.shape) for t in ctx.args],
                "dtypes": [dtype_name(t) for t in ctx.args],
                "dynamic_axes": {n: dims for n, dims in zip(ctx.input_names, ctx.input_dims) if dims},
            },
            "outputs": {
                "schema": self.outputs.schema,
                "names": list(ctx.output_names),
                "shapes": [list(t.shape) for t in self.flat_expected[0]],
                "dtypes": [dtype_name(t) for t in self.flat_expected[0]],
                "dynamic_axes": {n: dims for n, dims in zip(ctx.output_names, ctx.output_dims) if dims},
            },
        }


def make_plan(module: nn.Module, input_sample: Any, options: ExportOptions) -> Plan:
    """Flatten the sample, run eager at both shapes, and fix every name and dynamic dim.

    Raises:
        ConfigurationError: for a sample that does not fit ``forward``, holds no tensor, or on
            which (or on whose second shape) the model itself fails.
        ExportError: for an output that holds no tensor or changes rank with the input's shape.

    """
    if input_sample is None:
        raise ConfigurationError("export(input_sample=None): a sample input is needed to export. HINT: pass one.")
    arguments, call = bind_sample(module, input_sample)
    inputs, tensors = flatten_tree(arguments, None, "input_sample", ConfigurationError)
    if not tensors:
        raise ConfigurationError("export(input_sample=...): the sample holds no tensor. HINT: pass tensors.")
    device = module_device(module, tensors)
    tensors = tuple(t.to(device) for t in tensors)
    input_dims = resolve_dynamic_dims(inputs.names, tensors, options.dynamic_batch, options.dynamic_axes)
    export_args, check_args = export_and_check_samples(tensors, input_dims)
    samples = [inputs.unflatten(export_args), inputs.unflatten(check_args)]
    grown = changed_dims(inputs.names, tensors, export_args, input_dims)
    first = run_eager(module, call, samples[0], grown, options)
    outputs, expected = flatten_tree(first, "out", "The model's output", ExportError)
    if not expected:
        raise ExportError(f"{type(module).__name__} returned no tensor; there is nothing to export.")
    changed = changed_dims(inputs.names, export_args, check_args, input_dims)
    second = run_eager(module, call, samples[1], changed, options)
    check_expected = outputs.tensors(second)
    ctx = ExportContext(
        adapter=FlatAdapter(module, inputs, call, outputs),
        args=export_args,
        input_names=inputs.names,
        output_names=outputs.names,
        input_dims=input_dims,
        output_dims=_output_dims(outputs.names, expected, check_expected),
        opset=options.opset,
        native=longest_list(samples[0]) > 0,
    )
    flat_expected = [expected, check_expected]
    fast_path = fast_path_agreement(module, call, samples, outputs, flat_expected, options.atol, options.rtol)
    return Plan(inputs, call, outputs, ctx, samples, [first, second], flat_expected, device_name(device), fast_path)


def module_device(module: nn.Module, tensors: Sequence[torch.Tensor]) -> torch.device:
    """Where ``module`` lives: its first parameter's (or buffer's) device; without either, the sample's.

    The export follows the module, so a CUDA-trained model is captured and verified on CUDA.
    """
    first = next(itertools.chain(module.parameters(), module.buffers(), tensors), None)
    return first.device if first is not None else torch.device("cpu")


def device_name(device: torch.device) -> str:
    """The manifest's word for a device: ``"cpu"``, ``"cuda"`` (GPU 0) or ``"cuda:N"``."""
    if device.type == "cuda" and device.index not in (None, 0):
        return f"cuda:{device.index}"
    return device.type


def _output_dims(names: Sequence[str], first: Sequence[torch.Tensor], second: Sequence[torch.Tensor]) -> DynamicDims:
    """Output dims that changed between the two samples are dynamic."""
    dims: DynamicDims = []
    for name, a, b in zip(names, first, second):
        if a.dim() != b.dim():
            raise ExportError(f"Output '{name}' has {a.dim()} dims at one input shape and {b.dim()} at another.")
        dims.append({d: f"{name}_{d}" for d in range(a.dim()) if a.shape[d] != b.shape[d]})
    return dims


def dtype_name(tensor: torch.Tensor) -> str:
    """A tensor's dtype as the manifest writes it (``float32``)."""
    return str(tensor.dtype).removeprefix("torch.")
