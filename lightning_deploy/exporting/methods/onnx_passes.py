"""Faster ONNX artifacts derived from the plain ONNX export: ``onnx-optimized`` and ``onnx-int8``.

Both start from the ``STEM.onnx`` file the engine exported (once per method) and are then
verified from disk like every other artifact, the int8 one at its own tolerance.

- ``onnx-optimized``: onnxscript's ONNX Runtime fusions (``optimize_for_ort``: attention to
  ``MultiHeadAttention``, skip layer norm, GELU) for the graphs torch's exporters write, then
  ONNX Runtime's own offline graph optimisation at the *extended* level. The extended level
  is portable across CPUs (the *all* level adds layouts for the CPU it ran on, which
  ``load()`` applies at session start anyway). The fused operators are ONNX Runtime's
  contrib ops: the file runs in ONNX Runtime on the CPU provider it was optimised for.
- ``onnx-int8``: ONNX Runtime's dynamic quantisation (``quantize_dynamic``: 8-bit weights per
  output channel, activations quantised per call) of every ``MatMul`` with constant weights,
  after ONNX Runtime's recommended pre-processing (``quant_pre_process``). Weights are chosen
  for the CPU that makes the file (:func:`vnni_flag`): *signed* 8-bit where it has VNNI
  (faster, exact), *unsigned* elsewhere, since ONNX Runtime's u8 x s8 kernels saturate on
  CPUs that have AVX2 but no VNNI (measured on such a CPU: outputs off by 20% of their scale,
  against 1% with unsigned weights, at the same speed). The choice is recorded in the
  manifest (``derived.weights``), and the verification at ``int8_rtol`` catches a saturating
  file. ``Conv`` stays float: ONNX Runtime's ``ConvInteger`` is slower on the CPU than its
  float convolution.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lightning_deploy.errors import ExportError
from lightning_deploy.runtime.placement import cpu_flags

__all__ = ["optimize_for_cpu", "quantize_int8", "vnni_flag"]

# Above this many bytes of ONNX (graph and weights) the passes keep the weights in a file beside each graph they
# write: protobuf caps one file at 2 GiB, and int8's Gemm rewrite adds a transposed copy of each weight it rewrites.
EXTERNAL_BYTES = 2**30


def check_model(path: Path) -> None:
    """``onnx.checker`` on a written ONNX file (external data beside it); raises where the graph is not valid ONNX."""
    import onnx  # only the exporter needs the checker; load() stays onnx-free

    onnx.checker.check_model(str(path))


def optimize_for_cpu(source: Path, target: Path) -> dict[str, Any]:
    """Fuse ``source`` for ONNX Runtime, optimise it offline, and write ``target``; returns what was fused."""
    import onnx_ir as ir
    import onnxruntime as ort
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    model = ir.external_data.load_to_model(ir.load(str(source)))  # the fusions fail on weights left on disk
    model, counts = optimize_for_ort(model)
    external = _onnx_bytes(source) > EXTERNAL_BYTES
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    if external:  # ONNX Runtime's own keys for writing the optimised model's weights beside it
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                         target.name + ".data")  # fmt: skip
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    with tempfile.TemporaryDirectory(prefix=".optimize-", dir=target.parent) as scratch:
        fused = Path(scratch) / "fused.onnx"
        ir.save(model, str(fused), external_data="fused.onnx.data" if external else None)
        del model
        ort.InferenceSession(str(fused), options, providers=["CPUExecutionProvider"])  # writes target
    return {
        "pass": "onnxscript optimize_for_ort + onnxruntime extended graph optimisation",
        "provider": "CPUExecutionProvider",
        "fusions": {name: count for name, count in counts.items() if count},
    }


def quantize_int8(
    source: Path, target: Path, calibration: Sequence[Mapping[str, np.ndarray]] | None = None
) -> dict[str, Any]:
    """Quantise ``source`` to int8 and write ``target``: static QDQ where ``calibration`` feeds are given, else dynamic.

    Static (:func:`_quantize_static`) quantises ``Conv``, ``MatMul`` and ``Gemm`` with
    activation ranges calibrated on the feeds (input leaf name -> array); dynamic quantises the
    ``MatMul`` weights only and quantises activations per call.
    """
    import onnx
    from onnxruntime.quantization import quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    external = _onnx_bytes(source) > EXTERNAL_BYTES
    # the intermediate files in a folder of their own beside the target (same disk), gone whatever happens
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=target.parent) as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        beside = {"all_tensors_to_one_file": True}
        # ONNX Runtime's optimisation step inside writes one file, which fails past 2 GiB: skipped there
        quant_pre_process(str(source), str(prepared), skip_optimization=external, save_as_external_data=external,
                          external_data_location="prepared.onnx.data", **beside)  # fmt: skip
        if calibration:
            return _quantize_static(prepared, target, calibration, external)
        model = onnx.load(str(prepared))
        gemms = _gemm_to_matmul(model.graph)
        onnx.save(model, str(prepared), save_as_external_data=external, location="prepared.onnx.data", **beside)
        del model
        weight_type, weights = _weight_choice()
        quantize_dynamic(str(prepared), str(target), op_types_to_quantize=["MatMul"], weight_type=weight_type,
                         per_channel=True, use_external_data_format=external)  # fmt: skip
    graph = onnx.load(str(target), load_external_data=False).graph
    quantized = sum(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in graph.node)
    if not quantized:
        for path in target.parent.glob(target.name + "*"):
            path.unlink()
        raise ExportError(
            "onnx-int8: the model has no MatMul or Gemm with constant weights, so dynamic quantisation changes"
            " nothing (Conv stays float). HINT: drop 'onnx-int8' from formats for this model."
        )
    return {"pass": "onnxruntime quantize_dynamic", "weights": weights, "quantized_matmuls": quantized,
            "gemms_rewritten": gemms}  # fmt: skip


def _quantize_static(
    prepared: Path, target: Path, calibration: Sequence[Mapping[str, np.ndarray]], external: bool
) -> dict[str, Any]:
    """ONNX Runtime's ``quantize_static`` in QDQ form, per-channel weights, MinMax ranges from ``calibration``.

    Only products with a constant weight are quantised (``MatMulConstBOnly``): an attention's
    activation-by-activation products in int8 cost more in quantise/dequantise steps than they
    save, measured here on a 2-layer TransformerEncoder at batch 16: 1.31x to 1.55x the float
    graph's speed with constant weights only, 1.18x to 1.39x with every ``MatMul``.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    graph_inputs = {i.name for i in onnx.load(str(prepared), load_external_data=False).graph.input}
    feeds = iter([{name: array for name, array in feed.items() if name in graph_inputs} for feed in calibration])

    class Feeds(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(feeds, None)

    weight_type, weights = _weight_choice()
    quantize_static(str(prepared), str(target), Feeds(), quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=weight_type, activation_type=QuantType.QUInt8,
                    op_types_to_quantize=["Conv", "MatMul", "Gemm"],
                    extra_options={"MatMulConstBOnly": True}, use_external_data_format=external)  # fmt: skip
    counts: dict[str, int] = {}
    for node in onnx.load(str(target), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    if not counts.get("QuantizeLinear"):
        for path in target.parent.glob(target.name + "*"):
            path.unlink()
        raise ExportError("onnx-int8: static quantisation found no Conv, MatMul or Gemm to quantise.")
    return {"pass": "onnxruntime quantize_static (QDQ, MinMax calibration)", "calibration_batches": len(calibration),
            "weights": weights, "activations": "uint8 per tensor",
            "quantized": "Conv, and MatMul/Gemm by constant weights",
            "quantize_nodes": counts["QuantizeLinear"]}  # fmt: skip


def _onnx_bytes(path: Path) -> int:
    """The bytes of an ONNX file and its external data (``STEM.onnx.data`` beside it)."""
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def _weight_choice() -> tuple[Any, str]:
    """ONNX Runtime's weight type for this CPU (signed with VNNI, see :func:`vnni_flag`) and its manifest words."""
    from onnxruntime.quantization import QuantType

    vnni = vnni_flag()
    if vnni:
        return QuantType.QInt8, f"int8 per channel (this CPU has {vnni})"
    return QuantType.QUInt8, "uint8 per channel (this CPU has no VNNI)"


def vnni_flag(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """``"avx512_vnni"`` or ``"avx_vnni"`` where this CPU has VNNI, else ``None`` (also where cpuinfo is not readable).

    ONNX Runtime's int8 GEMM multiplies u8 activations by s8 weights. With VNNI that is exact
    and signed weights are faster (measured here on a TransformerEncoder: s8 2.50x eager, u8
    2.18x, errors 3.6e-3 and 3.1e-3 of scale); without it (AVX2's ``vpmaddubsw``) pairs of
    products saturate at int16, which unsigned weights avoid. The flags are Linux's
    (:func:`~lightning_deploy.runtime.placement.cpu_flags`); elsewhere the safe choice,
    unsigned, is made.
    """
    flags = cpu_flags(cpuinfo)
    return next((flag for flag in ("avx512_vnni", "avx_vnni") if flag in flags), None)


def _gemm_to_matmul(graph: Any) -> int:
    """Rewrite ``Gemm(A, W, b)`` with a constant ``W`` as ``MatMul(A, W') + b`` so that it can be quantised.

    ONNX Runtime's dynamic quantiser handles ``MatMul`` but not ``Gemm``, which torch's
    exporters write for every ``nn.Linear`` on 2-D inputs; neither onnx nor ONNX Runtime ships
    this rewrite for a plain 2-D ``Gemm`` (onnxscript's rule needs a Reshape around it), hence
    these lines. Only ``alpha = beta = 1`` without ``transA`` is rewritten; others stay.
    """
    from onnx import helper, numpy_helper

    weights = {t.name: t for t in graph.initializer}
    rewritten, nodes = 0, []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or not plain or node.input[1] not in weights:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(weights[node.input[1]])
        name = f"{node.input[1]}__matmul{rewritten}"
        graph.initializer.append(numpy_helper.from_array(weight.T if attrs.get("transB", 0) else weight, name))
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}__matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], name], [product], name=f"{node.name}_MatMul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_Add"))
        rewritten += 1
    graph.ClearField("node")
    graph.node.extend(nodes)
    return rewritten
