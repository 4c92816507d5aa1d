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

from lightning_deploy.artifact.contract import Call, IOContract, Tensors
from lightning_deploy.artifact.ranges import Ranges, fits
from lightning_deploy.errors import ConfigurationError, ExportError
from lightning_deploy.exporting.adapters import FlatAdapter, FlatTree, bind_sample, flatten_tree
from lightning_deploy.exporting.dynamic import (
    DynamicDims,
    export_and_check_samples,
    list_length_samples,
    longest_list,
    resolve_bounds,
    resolve_dynamic_dims,
)
from lightning_deploy.exporting.methods import ExportContext
from lightning_deploy.exporting.options import ExportOptions
from lightning_deploy.exporting.ranges import axis_minimums, axis_sizes, leaf_ranges, probe_axis
from lightning_deploy.exporting.verifying.checks import (
    EXPORT_SOURCE,
    GENERATED_CHECKS,
    SECOND_SOURCE,
    Check,
    GeneratedCheck,
    output_dims,
    smaller_size,
)
from lightning_deploy.exporting.verifying.eager import changed_dims, fast_path_agreement, run_eager
from lightning_deploy.runtime.arrays import dtype_name

__all__ = ["Plan", "device_name", "make_plan", "module_device"]


@dataclasses.dataclass
class Plan:
    """The flattened structures, the export context and the eager reference at each check.

    ``checks`` are the samples every artifact is verified at (``checks.py``): the export sample,
    the second sample, the synthetic one where the model runs on it, then the user's data.
    ``samples`` are the first two's ``{parameter: value}`` (what int8 calibrates on and the
    timing runs), ``flat_expected`` the eager outputs' tensor leaves there. ``skipped`` says which
    checks were left out and why. ``device`` is where the module lives and so where everything
    was captured. ``ranges`` are the sizes the model itself runs at, where a check found a limit
    (every artifact's entry records them); ``ranged_checks`` the checks made again inside an
    artifact's narrower ranges (:meth:`checks_within`), shipped with the golden samples.
    """

    inputs: FlatTree
    call: Call
    outputs: FlatTree
    ctx: ExportContext
    checks: list[Check]
    flat_expected: list[tuple[torch.Tensor, ...]]
    device: str = "cpu"
    fast_path: dict[str, Any] | None = None
    data_dependent: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)
    ranges: Ranges = dataclasses.field(default_factory=dict)
    ranged_checks: list[Check] = dataclasses.field(default_factory=list)
    _native_checks: list[Check] | None = None
    _within: dict[tuple, Check | None] = dataclasses.field(default_factory=dict)

    @property
    def samples(self) -> list[dict[str, Any]]:
        """The export sample and the second sample, as ``{parameter: value}``."""
        return [check.arguments for check in self.checks[:2]]

    def checks_for(self, native: bool) -> list[Check]:
        """The checks to verify at; with native I/O, also every list cut to one item and grown by one."""
        if not native:
            return self.checks
        if self._native_checks is None:
            extra = list_length_samples(*self.samples)
            sources = ["lists cut to one item", "lists grown by one item"][-len(extra) :]
            module = self.ctx.adapter.module
            self._native_checks = [*self.checks, *(
                Check(source, arguments, module(*args, **kwargs))
                for source, arguments, (args, kwargs) in zip(sources, extra, map(self.call.split, extra))
            )]  # fmt: skip
        return self._native_checks

    def checks_within(self, native: bool, ranges: Ranges) -> list[Check]:
        """The checks of an artifact that accepts only ``ranges``: those made by rule moved inside them.

        A check made by rule (the synthetic sample) whose sizes fall outside is made again with
        no axis below the ranges' minimums, and eager run there (once per set of minimums). The
        export sample, the second one and the user's data stay as they are: an artifact that
        refuses the user's data is not ok.
        """
        checks = self.checks_for(native)
        if not ranges:
            return checks
        generated = {made.source: made for made in GENERATED_CHECKS}
        within = []
        for check in checks:
            shapes = _input_shapes(self.inputs, [check])  # none: another structure, which fails on its own
            if check.source not in generated or not shapes or fits(ranges, self.ctx.input_names, shapes[0]):
                within.append(check)
                continue
            least = axis_minimums(ranges, self.ctx.input_names, self.ctx.input_dims)
            key = (check.source, tuple(sorted(least.items())))
            if key not in self._within:
                self._within[key] = self._made(generated[check.source], least)
            within += [self._within[key]] if self._within[key] is not None else []
        return within

    def _made(self, generated: GeneratedCheck, least: dict[str, int]) -> Check | None:
        """A check made by rule with no axis below ``least``; ``None`` (and said in ``skipped``) where eager fails."""
        sizes = ", ".join(f"{axis} >= {size}" for axis, size in least.items())
        source = f"{generated.source}, at the artifact's smallest sizes ({sizes})"
        arguments = self.inputs.unflatten(generated.make(self.ctx.args, self.ctx.input_dims, least))
        made = _eager_check(self.ctx.adapter.module, self.call, source, arguments)
        if isinstance(made, str):
            self.skipped.append({"source": source, "skipped": made})
            return None
        self.ranged_checks.append(made)
        return made

    def contract(self) -> IOContract:
        """The manifest's ``inputs`` and ``outputs`` (what ``load()`` reads): names, shapes, dtypes, dynamic axes.

        Its ``call`` is the module's own, positional-only parameters included (which JSON does not keep).
        """
        ctx = self.ctx
        inputs = {
            "schema": self.inputs.schema,
            "names": list(ctx.input_names),
            "shapes": [list(t.shape) for t in ctx.args],
            "dtypes": [dtype_name(t) for t in ctx.args],
            "dynamic_axes": {n: dims for n, dims in zip(ctx.input_names, ctx.input_dims) if dims},
        }
        outputs = {
            "schema": self.outputs.schema,
            "names": list(ctx.output_names),
            "shapes": [list(t.shape) for t in self.flat_expected[0]],
            "dtypes": [dtype_name(t) for t in self.flat_expected[0]],
            "dynamic_axes": {n: dims for n, dims in zip(ctx.output_names, ctx.output_dims) if dims},
            "data_dependent": self.data_dependent,
        }
        return IOContract(Tensors.from_json(inputs), Tensors.from_json(outputs), self.call)


def make_plan(
    module: nn.Module, input_sample: Any, options: ExportOptions, data: Sequence[tuple[str, Any]] = ()
) -> Plan:
    """Flatten the sample, run eager at every check, and fix every name and dynamic dim.

    ``data`` are the user's check samples as ``(source, sample)``, in ``input_sample``'s convention.

    Raises:
        ConfigurationError: for a sample (or a data sample) that does not fit ``forward``, holds
            no tensor, or on which (or on whose second shape) the model itself fails.
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
    checks = [Check(EXPORT_SOURCE, samples[0], first), Check(SECOND_SOURCE, samples[1], second)]
    skipped, least = [], {}
    for generated in GENERATED_CHECKS:
        made, needed = _generated_check(module, call, inputs, generated, export_args, input_dims)
        checks += [made] if isinstance(made, Check) else []
        skipped += [] if isinstance(made, Check) else [{"source": generated.source, "skipped": made}]
        least.update({axis: max(size, least.get(axis, 1)) for axis, size in needed.items()})
    checks += [_data_check(module, call, source, sample, device, options) for source, sample in data]
    flat_expected = [expected, outputs.tensors(second)]
    output_dynamic, data_dependent = _output_dims(inputs, outputs, checks)
    own = len(checks) - len(data)
    bounds = resolve_bounds(input_dims, _input_shapes(inputs, checks[:own]), _input_shapes(inputs, checks[own:]),
                            options.executorch_bounds, options.owner)  # fmt: skip
    ctx = ExportContext(
        adapter=FlatAdapter(module, inputs, call, outputs),
        args=export_args,
        input_names=inputs.names,
        output_names=outputs.names,
        input_dims=input_dims,
        output_dims=output_dynamic,
        opset=options.opset,
        native=longest_list(samples[0]) > 0,
        bounds=bounds,
    )
    fast_path = fast_path_agreement(module, call, samples, outputs, flat_expected, options.atol, options.rtol)
    ranges = leaf_ranges({axis: (size, None) for axis, size in least.items()}, inputs.names, input_dims)
    return Plan(inputs, call, outputs, ctx, checks, flat_expected, device_name(device), fast_path,
                data_dependent, skipped, ranges)  # fmt: skip


def _generated_check(
    module: nn.Module,
    call: Call,
    inputs: FlatTree,
    generated: GeneratedCheck,
    args: tuple[torch.Tensor, ...],
    dims: DynamicDims,
) -> tuple[Check | str, dict[str, int]]:
    """A check made by rule (``GENERATED_CHECKS``) where the model runs on it, and the axes' smallest sizes it needed.

    It is ours, not the user's: a model that needs a minimum size (inception_v3: 75 pixels)
    fails on the synthetic sample, and that is no fault of the export. Then each axis alone is
    shrunk (the others at the export sample's sizes) and, where the model fails, its smallest
    size is found by bisection (``ranges.py``); the check is made with no axis below those, which
    are the sizes every artifact accepts. Where that fails too, the check is skipped and why said.
    """

    def attempt(least: dict[str, int]) -> Check | str:
        return _eager_check(module, call, generated.source, inputs.unflatten(generated.make(args, dims, least)))

    made = attempt({})
    if isinstance(made, Check):
        return made, {}
    sample = axis_sizes([t.shape for t in args], dims)
    needed = {}
    for axis, size in sample.items():

        def runs(trial: int, axis: str = axis) -> bool:
            return isinstance(attempt({**sample, axis: trial}), Check)

        smallest = smaller_size(size)
        if not runs(smallest) and runs(size):
            needed[axis] = probe_axis(runs, size, largest=None, smallest=smallest)[0]
    raised = attempt(needed) if needed else made
    return (raised, needed) if isinstance(raised, Check) else (made, {})


def _eager_check(module: nn.Module, call: Call, source: str, arguments: dict[str, Any]) -> Check | str:
    """The check where the model itself runs on ``arguments``; else why it cannot (the model's own limit)."""
    args, kwargs = call.split(arguments)
    try:
        return Check(source, arguments, module(*args, **kwargs))
    except Exception as err:  # noqa: BLE001 - the model's own limit; recorded, the other checks go on
        return f"the model itself fails on it: {type(err).__name__}: {str(err)[:300]}"


def _data_check(
    module: nn.Module, call: Call, source: str, sample: Any, device: torch.device, options: ExportOptions
) -> Check:
    """A check at the user's data: bound to ``forward``, moved to the module's device, run eagerly."""
    arguments, _ = bind_sample(module, sample, f"{options.owner}: {source}")
    tree, tensors = flatten_tree(arguments, None, source, ConfigurationError)
    arguments = tree.unflatten(tuple(t.to(device) for t in tensors))
    args, kwargs = call.split(arguments)
    try:
        return Check(source, arguments, module(*args, **kwargs))
    except Exception as err:
        raise ConfigurationError(
            f"{options.owner}: {type(module).__name__}.forward fails on {source}: {type(err).__name__}: {err}."
            " HINT: check samples follow input_sample's convention (a tuple holds positional arguments)."
        ) from err


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


def _output_dims(inputs: FlatTree, outputs: FlatTree, checks: Sequence[Check]) -> tuple[DynamicDims, dict]:
    """Dynamic and data-dependent output dims, from the checks whose input and output structures are the export's.

    A data sample of another structure (a list of another length) or output rank is still a
    check, which the artifacts fail; it just says nothing about sizes.
    """
    flat_outputs: list[tuple[torch.Tensor, ...]] = []
    input_shapes = []
    for index, check in enumerate(checks):
        try:
            got, leaves = outputs.tensors(check.expected), inputs.tensors(check.arguments)
        except ExportError:
            continue
        if index >= 2 and [t.dim() for t in got] != [t.dim() for t in flat_outputs[0]]:
            continue  # another rank is a mismatch its verification names; the first two must agree
        flat_outputs.append(got)
        input_shapes.append([list(t.shape) for t in leaves])
    return output_dims(outputs.names, flat_outputs, input_shapes)


def _input_shapes(inputs: FlatTree, checks: Sequence[Check]) -> list[list[list[int]]]:
    """The input leaves' shapes at each check whose inputs have the export's structure."""
    shapes = []
    for check in checks:
        try:
            shapes.append([list(t.shape) for t in inputs.tensors(check.arguments)])
        except ExportError:
            continue
    return shapes
