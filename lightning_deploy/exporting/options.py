"""Validated export options, shared by ``export()``, the callback and the command line.

Every check runs at construction so that a mistake is reported before any export (or
training) work starts, with the argument, the rule and the fix in the message.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from collections.abc import Mapping, Sequence
from typing import Any

from lightning_deploy.errors import ConfigurationError
from lightning_deploy.exporting.dynamic import BATCH_AXIS
from lightning_deploy.formats import METHODS, NAMES, by_name
from lightning_deploy.runtime.backends.openvino import cpu_capabilities, has_bf16
from lightning_deploy.verification.golden import DEFAULT_MAX_MB

__all__ = ["FORMATS", "METHODS", "ExportOptions", "methods_for"]

FORMATS = NAMES


def methods_for(fmt: str, method: str) -> tuple[str, ...]:
    """The methods to try, in order, for ``fmt`` under ``method``."""
    return by_name(fmt).methods if method == "auto" else (method,)


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """The engine's settings; see ``lightning_deploy.export`` for their meaning.

    Args:
        formats: any of :data:`FORMATS`.
        method: ``"auto"``, ``"trace"``, ``"script"`` or ``"export"``.
        dynamic_batch: mark dimension 0 of every input leaf dynamic.
        dynamic_axes: more dynamic dims, ``{leaf or prefix: {dim: name}}``.
        verify: smoke-test every artifact in its own runtime.
        atol: absolute tolerance of the comparison.
        rtol: tolerance relative to each output leaf's largest magnitude.
        opset: ONNX opset; ``None`` for the exporter's default.
        int8_rtol: ``rtol`` of the ``onnx-int8`` artifact, whose int8 weights differ from the
            float model by about 1% of each output's scale (its accuracy is measured apart).
        executorch_bounds: the largest size of each dynamic axis (``{"batch": 64}``) in the
            ``executorch`` artifact, whose runtime plans memory for it; axes left out get
            :data:`DEFAULT_BATCH_BOUND` (the batch) or twice the export sample's size, and never
            less than a check needs.
        bf16_rtol: ``rtol`` of the ``openvino-bf16`` artifact, whose bfloat16 arithmetic (8
            bits of mantissa) differs from float32 by a few tenths of a percent of each output's
            scale (resnet18: 0.4%, measured here).
        golden_samples: write every check's inputs and eager outputs beside the artifacts
            (``STEM.samples.npz``), for ``lightning-deploy verify`` where they run.
        golden_samples_max_mb: the samples' size cap; the largest checks are dropped first.
        owner: the call named in error messages (``export`` or ``ModelExport``).

    Raises:
        ConfigurationError: for any value outside the rules above.

    """

    formats: tuple[str, ...] = ("torchscript", "onnx")
    method: str = "auto"
    dynamic_batch: bool = True
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None
    verify: bool = True
    atol: float = 1e-4
    rtol: float = 1e-3
    opset: int | None = None
    int8_rtol: float = 0.05
    executorch_bounds: Mapping[str, int] | None = None
    bf16_rtol: float = 0.02
    golden_samples: bool = True
    golden_samples_max_mb: float = DEFAULT_MAX_MB
    owner: str = "export"

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        set_("formats", self._checked_formats())
        self._check_method()
        for name in ("dynamic_batch", "verify", "golden_samples"):
            if not isinstance(getattr(self, name), bool):
                self._fail(name, "must be True or False", f"pass {name}=True or {name}=False")
        for name in ("atol", "rtol", "int8_rtol", "bf16_rtol"):
            self._check_tolerance(name)
        cap = self.golden_samples_max_mb
        if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not math.isfinite(cap) or cap <= 0:
            self._fail("golden_samples_max_mb", "must be a number of megabytes > 0",
                       "pass e.g. golden_samples_max_mb=32, or golden_samples=False to write none")  # fmt: skip
        set_("dynamic_axes", self._checked_dynamic_axes())
        set_("executorch_bounds", self._checked_bounds())
        opset = self.opset
        if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or not 7 <= opset <= 30):
            self._fail("opset", "must be an ONNX opset number (7 to 30) or None", "pass e.g. opset=18, or None")

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any], owner: str) -> ExportOptions:
        """The options among a call's ``arguments`` (its ``locals()``), picked by field name.

        How ``export()`` and ``ModelExport`` pass theirs whole: a new option is its field here and a
        parameter of the same name and default in both (``tests/test_layers.py`` holds them in step).
        """
        return cls(**{f.name: arguments[f.name] for f in dataclasses.fields(cls) if f.name != "owner"}, owner=owner)

    def tolerance(self, fmt: str) -> tuple[float, float]:
        """``(atol, rtol)`` for an artifact of ``fmt``."""
        rtol = {"int8": self.int8_rtol, "bfloat16": self.bf16_rtol}.get(by_name(fmt).precision, self.rtol)
        return (self.atol, rtol)

    def _fail(self, name: str, rule: str, fix: str) -> None:
        raise ConfigurationError(f"{self.owner}({name}={getattr(self, name)!r}): {name} {rule}. HINT: {fix}.")

    def _checked_formats(self) -> tuple[str, ...]:
        formats = self.formats
        if isinstance(formats, str):
            formats = (formats,)
        if not isinstance(formats, Sequence) or not formats:
            self._fail("formats", f"must be a non-empty list drawn from {FORMATS}", "pass e.g. formats=['onnx']")
        unknown = [f for f in formats if f not in FORMATS]
        if unknown:
            self._fail("formats", f"has unknown format(s) {unknown}; valid formats are {FORMATS}", "fix the spelling")
        if len(set(formats)) != len(formats):
            self._fail("formats", "lists a format twice", "name each format once")
        missing = {f: by_name(f).package for f in formats if by_name(f).package}
        missing = {f: package for f, package in missing.items() if importlib.util.find_spec(package) is None}
        for fmt, package in missing.items():
            self._fail("formats", f"asks for {fmt}, which needs the {package} package, not installed here",
                       f"pip install 'lightning-deploy[{package}]', or drop {fmt!r}")  # fmt: skip
        bf16 = [f for f in formats if by_name(f).precision == "bfloat16"]
        if bf16 and not has_bf16():
            self._fail("formats", f"asks for {bf16[0]}, but this CPU has no bfloat16 arithmetic (OpenVINO's CPU"
                       f" capabilities here are {', '.join(cpu_capabilities())}, without BF16: it needs avx512_bf16"
                       " or AMX), so it would not run as verified",
                       f"drop {bf16[0]!r} and keep 'openvino' (float32), or export on a CPU that has bf16")  # fmt: skip
        compiled = [f for f in formats if by_name(f).compiled]
        if compiled and (no_compiler := _no_cxx_compiler()):
            self._fail("formats", f"asks for {compiled[0]}, which compiles C++, and torch finds no compiler"
                       f" ({no_compiler})", "install g++ (apt-get install g++) or name one in the CXX environment"
                       f" variable, or drop {compiled[0]!r}")  # fmt: skip
        return tuple(formats)

    def _check_method(self) -> None:
        if self.method not in METHODS:
            self._fail("method", f"must be one of {METHODS}", "use method='auto' to let the engine choose")
        unusable = [f for f in self.formats if self.method not in ("auto", *by_name(f).methods)]
        if unusable:
            makers = {f: by_name(f).methods for f in unusable}
            self._fail(
                "method", f"cannot produce {unusable} (made by {makers})", "use method='auto' or drop the format"
            )

    def _check_tolerance(self, name: str) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            self._fail(name, "must be a finite number >= 0", f"pass e.g. {name}=1e-4")

    def _checked_dynamic_axes(self) -> dict[str, dict[int, str]] | None:
        axes: Any = self.dynamic_axes
        if axes is None:
            return None
        example = "dynamic_axes={'x': {2: 'height', 3: 'width'}}"
        if not isinstance(axes, Mapping):
            self._fail("dynamic_axes", "must map an input name to {dim: axis name}", f"pass e.g. {example}")
        checked: dict[str, dict[int, str]] = {}
        for key, dims in axes.items():
            if not isinstance(key, str) or not isinstance(dims, Mapping) or not dims:
                self._fail(
                    "dynamic_axes",
                    f"entry {key!r} must map a name to a non-empty {{dim: axis name}}",
                    f"pass e.g. {example}",
                )
            checked[key] = {}
            for dim, axis in dims.items():
                index = int(dim) if isinstance(dim, str) and dim.isdigit() else dim
                if isinstance(index, bool) or not isinstance(index, int) or index < 0 or not isinstance(axis, str):
                    self._fail(
                        "dynamic_axes",
                        f"entry {key!r} has {dim!r}: {axis!r}; dims are ints >= 0 and names strings",
                        f"pass e.g. {example}",
                    )
                checked[key][index] = axis
        return checked

    def _checked_bounds(self) -> dict[str, int] | None:
        bounds: Any = self.executorch_bounds
        if bounds is None:
            return None
        if not any(by_name(f).bounded for f in self.formats):
            self._fail("executorch_bounds", "applies to the executorch format only", "add 'executorch' to formats")
        axes = {BATCH_AXIS} if self.dynamic_batch else set()
        axes |= {axis for dims in (self.dynamic_axes or {}).values() for axis in dims.values()}
        example = f"executorch_bounds={{{next(iter(sorted(axes)), 'batch')!r}: 64}}"
        if not isinstance(bounds, Mapping):
            self._fail("executorch_bounds", "must map a dynamic axis name to its largest size", f"pass e.g. {example}")
        for axis, size in bounds.items():
            if axis not in axes:
                self._fail("executorch_bounds", f"names {axis!r}, not a dynamic axis (those are {sorted(axes)})",
                           "name an axis of dynamic_batch ('batch') or dynamic_axes")  # fmt: skip
            if isinstance(size, bool) or not isinstance(size, int) or size < 2:
                self._fail("executorch_bounds", f"gives {axis!r} the size {size!r}; a bound is a whole number >= 2",
                           f"pass e.g. {example}")  # fmt: skip
        return dict(bounds)


def _no_cxx_compiler() -> str | None:
    """Why AOTInductor could not compile here (torch's own compiler search: ``CXX``, else g++), or None."""
    from torch._inductor.cpp_builder import get_cpp_compiler
    from torch._inductor.exc import InvalidCxxCompiler

    try:
        get_cpp_compiler()
    except InvalidCxxCompiler as err:
        return str(err)
    return None
