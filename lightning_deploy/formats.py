"""The artifact formats: one declaration each, from which every table in the package is derived.

A format is a file suffix, the runtime that runs it, the export methods that can make it (in
the order ``method="auto"`` tries them) or the format it is derived from by a pass, and what
the runtime, ``load()``, the engine and Triton need to know about it. Adding a format is one
:class:`Format` here plus its exporter and runtime modules (``docs/design.md`` walks through
it). Standard library only: ``load()`` and ``lightning-deploy show`` read it without torch.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

__all__ = [
    "FORMATS",
    "METHODS",
    "NAMES",
    "Format",
    "FormatName",
    "TritonModel",
    "by_name",
    "preferred_order",
    "suffixes",
    "triton_order",
]

METHODS = ("auto", "trace", "script", "export")


@dataclasses.dataclass(frozen=True)
class TritonModel:
    """How Triton's config names the runtime of a format, and the file name its backend reads.

    Triton names a runtime by ``platform`` for the frameworks it has always had, by ``backend``
    for the others (OpenVINO).
    """

    name: str
    model_file: str
    key: str = "platform"


@dataclasses.dataclass(frozen=True)
class Format:
    """What the package knows about one artifact format.

    Attributes:
        name: the name users pass in ``formats=[...]`` and ``load(format=...)``.
        suffix: the file name is ``STEM + suffix``.
        runtime: the module that runs it (``lightning_deploy.runtime.backends.<runtime>``).
        writers: for each export method that can make it, in the order ``method="auto"`` tries
            them, the function that writes a capture of that method as this format
            (``"module:function"`` under ``lightning_deploy.exporting.methods``, called
            ``write(capture, path, ctx)``). Empty for a derived format, made by ``derived_by``.
        derived_by: for a format made from another format's file by a pass, that pass
            (``"module:function"`` under ``lightning_deploy.exporting.methods``), taking the plain file's path.
        derived_from: the format whose file ``derived_by`` starts from.
        compiled: machine code for one device kind, run only on the kind it was compiled for.
        preference: ``load(manifest)`` without ``format=`` runs the ok artifact of least preference.
        triton: how Triton runs it flat (:class:`TritonModel`), where it can.
        precision: the arithmetic it runs in: ``"float32"``, or a lower one (``"int8"``,
            ``"bfloat16"``) whose numbers differ from eager by design: verified at its own
            tolerance (``int8_rtol``, ``bf16_rtol``), its top-1 accuracy measured, and run by
            ``load()`` only when named.
        variants: the ways to make it from one capture, tried in order (int8: static, dynamic).
        native_io: a scripted capture of it takes ``forward``'s own arguments (lists, ``None``).
        preflight_as: the format the callback's preflight makes instead (the same capture,
            without the tens of seconds compiling takes).
        bounded: its runtime plans memory for the largest input, so every dynamic dim has an
            upper bound (``executorch_bounds``); the exporter reads the bounds the file was
            planned for, the entry records them, and ``load()`` enforces them.
        package: the optional package that makes and runs it; the extra
            ``lightning-deploy[<package>]`` installs it, and asking for the format without it fails
            before any work.
        checker: the function (``"module:function"`` under ``lightning_deploy.exporting.methods``)
            that checks a written file before it is verified (ONNX: ``onnx.checker``).
        notice: what a user of the format should know that is not a failure (a deprecation),
            said once in our words: in the entry's warnings and under ``show``'s table.
    """

    name: str
    suffix: str
    runtime: str
    writers: tuple[tuple[str, str], ...]
    preference: int
    derived_by: str | None = None
    derived_from: str | None = None
    compiled: bool = False
    triton: TritonModel | None = None
    precision: str = "float32"
    variants: tuple[str, ...] = ()
    native_io: bool = False
    preflight_as: str | None = None
    bounded: bool = False
    package: str | None = None
    checker: str | None = None
    notice: str | None = None

    @property
    def methods(self) -> tuple[str, ...]:
        """The export methods that can make it, in the order ``method="auto"`` tries them (derived: its source's)."""
        return tuple(method for method, _ in self.writers) if self.writers else by_name(self.derived_from).methods

    def writer(self, method: str) -> str:
        """The ``"module:function"`` that writes a capture of ``method`` as this format."""
        return dict(self.writers)[method]

    @property
    def lower_precision(self) -> bool:
        """Whether it runs in less than float32 (int8, bfloat16)."""
        return self.precision != "float32"


# torch.export's ONNX exporter, then the TorchScript-based one on a trace (or a trace around a scripted module)
_ONNX = (("export", "torch_export:write_onnx"), ("trace", "trace:write_onnx"),
         ("script", "trace:write_onnx"))  # fmt: skip

_TRITON_ONNX = TritonModel("onnxruntime_onnx", "model.onnx")
_ONNX_CHECKER = "onnx_passes:check_model"

FORMATS: tuple[Format, ...] = (
    Format("torchscript", ".torchscript.pt", "torchscript",
           (("trace", "trace:write_torchscript"), ("script", "script:write_torchscript")), preference=1,
           triton=TritonModel("pytorch_libtorch", "model.pt"), native_io=True, notice=(
               "TorchScript is deprecated by PyTorch (torch 2.14's torch.jit.save warns) but still supported, by"
               " torch and LibTorch alike; for new deployments prefer 'pt2' (torch.export), or 'aoti' for C++")),
    Format("onnx", ".onnx", "onnxruntime", _ONNX, preference=0, triton=_TRITON_ONNX, checker=_ONNX_CHECKER),
    Format("pt2", ".pt2", "pt2", (("export", "torch_export:write_pt2"),), preference=2),
    # compiled from the same torch.export program as pt2
    Format("aoti", ".aoti.pt2", "aoti", (("export", "torch_export:write_aoti"),), preference=3, compiled=True,
           preflight_as="pt2"),
    Format("onnx-optimized", ".optimized.onnx", "onnxruntime", (), preference=4,
           derived_by="onnx_passes:optimize_for_cpu", derived_from="onnx", triton=_TRITON_ONNX,
           checker=_ONNX_CHECKER),
    Format("onnx-int8", ".int8.onnx", "onnxruntime", (), preference=5,
           derived_by="onnx_passes:quantize_int8", derived_from="onnx", triton=_TRITON_ONNX, checker=_ONNX_CHECKER,
           precision="int8", variants=("static", "dynamic")),
    # lowered from the torch.export program (XNNPACK where it applies, portable kernels elsewhere)
    Format("executorch", ".pte", "executorch", (("export", "executorch_program:write_executorch"),), preference=6,
           preflight_as="pt2", bounded=True, package="executorch"),
    # OpenVINO's IR (weights in STEM.openvino.bin), converted from the torch.export program, else from
    # the traced ONNX graph
    Format("openvino", ".openvino.xml", "openvino",
           (("export", "openvino_ir:write_from_program"), ("trace", "openvino_ir:write_from_trace")), preference=7,
           triton=TritonModel("openvino", "model.xml", "backend"), package="openvino"),
    # the same IR, marked to run in bfloat16 (STEM.bf16.openvino.xml and .bin), where the CPU has it
    Format("openvino-bf16", ".bf16.openvino.xml", "openvino", (), preference=8,
           derived_by="openvino_ir:to_bf16", derived_from="openvino", precision="bfloat16", package="openvino"),
)  # fmt: skip
"""Every format, in the order the documentation lists them."""

_BY_NAME = {fmt.name: fmt for fmt in FORMATS}
NAMES = tuple(_BY_NAME)
FormatName = Literal[NAMES]  # the annotation of formats=[...]: jsonargparse and type checkers read the names from it


def by_name(name: str) -> Format:
    """The declaration of ``name``; ``KeyError`` for an unknown one (callers check names first)."""
    return _BY_NAME[name]


def suffixes() -> dict[str, str]:
    """Format name -> file suffix, for every format."""
    return {fmt.name: fmt.suffix for fmt in FORMATS}


def triton_order() -> tuple[str, ...]:
    """The formats Triton runs flat, in the order one is chosen from a manifest: ONNX first, then by preference."""
    runs = [name for name in preferred_order() if by_name(name).triton is not None]
    return tuple(sorted(runs, key=lambda name: by_name(name).runtime != "onnxruntime"))


def preferred_order() -> tuple[str, ...]:
    """Format names, most preferred first (``load()``'s choice among ok artifacts; Triton's too)."""
    return tuple(fmt.name for fmt in sorted(FORMATS, key=lambda fmt: fmt.preference))
