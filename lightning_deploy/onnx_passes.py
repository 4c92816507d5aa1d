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
  after ONNX Runtime's recommended pre-processing (``quant_pre_process``). Weights are
  *unsigned* 8-bit: with signed weights ONNX Runtime's u8 x s8 kernels saturate on CPUs that
  have AVX2 but no VNNI (measured here: outputs off by 20% of their scale, against 1% with
  unsigned weights, at the same speed). ``Conv`` stays float: ONNX Runtime's
  ``ConvInteger`` is slower on the CPU than its float convolution.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning_deploy.errors import ExportError

__all__ = ["DERIVED_FORMATS", "optimize_for_cpu", "quantize_int8"]


def optimize_for_cpu(source: Path, target: Path) -> dict[str, Any]:
    """Fuse ``source`` for ONNX Runtime, optimise it offline, and write ``target``; returns what was fused."""
    import onnx_ir as ir
    import onnxruntime as ort
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    model = ir.external_data.load_to_model(ir.load(str(source)))  # the fusions fail on weights left on disk
    model, counts = optimize_for_ort(model)
    fused = target.with_name(target.name + ".fused")
    ir.save(model, str(fused))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(fused), options, providers=["CPUExecutionProvider"])  # writes target
    fused.unlink()
    return {
        "pass": "onnxscript optimize_for_ort + onnxruntime extended graph optimisation",
        "provider": "CPUExecutionProvider",
        "fusions": {name: count for name, count in counts.items() if count},
    }


def quantize_int8(source: Path, target: Path) -> dict[str, Any]:
    """Dynamically quantise the ``MatMul`` weights of ``source`` to int8 and write ``target``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = target.with_name(target.name + ".prepared")
    quant_pre_process(str(source), str(prepared))
    model = onnx.load(str(prepared))
    gemms = _gemm_to_matmul(model.graph)
    onnx.save(model, str(prepared))
    quantize_dynamic(
        str(prepared), str(target), op_types_to_quantize=["MatMul"], weight_type=QuantType.QUInt8, per_channel=True
    )
    prepared.unlink()
    quantized = sum(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in onnx.load(str(target)).graph.node)
    if not quantized:
        target.unlink()
        raise ExportError(
            "onnx-int8: the model has no MatMul or Gemm with constant weights, so dynamic quantisation changes"
            " nothing (Conv stays float). HINT: drop 'onnx-int8' from formats for this model."
        )
    return {"pass": "onnxruntime quantize_dynamic", "weights": "uint8 per channel", "quantized_matmuls": quantized,
            "gemms_rewritten": gemms}  # fmt: skip


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


# The derived formats: each turns the plain ONNX file into its own, returning what it did.
DERIVED_FORMATS: dict[str, Callable[[Path, Path], dict[str, Any]]] = {
    "onnx-optimized": optimize_for_cpu,
    "onnx-int8": quantize_int8,
}
