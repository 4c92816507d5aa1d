"""`lightning-deploy triton`: model repository entries parsed with tritonclient's own ModelConfig and checked
against the artifacts themselves (ONNX graph inputs and outputs, the TorchScript module run at Triton's shapes)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
from google.protobuf import text_format
from models import StructuredModel, structured_sample
from tritonclient.grpc import model_config_pb2

from lightning_deploy import export
from lightning_deploy.errors import ConfigurationError
from lightning_deploy.serving.triton import DEFAULT_MAX_BATCH_SIZE, write_model_repository

ONNX_TYPES = {  # onnx.TensorProto element type -> Triton's data type
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.BOOL: "TYPE_BOOL",
}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("triton")
    export(StructuredModel(), structured_sample(), root, "structured", formats=["onnx", "torchscript"])
    export(StructuredModel(), structured_sample(), root, "fixed", formats=["onnx"], dynamic_batch=False)
    resnet = torchvision.models.resnet18(weights=None)
    export(resnet, torch.randn(1, 3, 224, 224), root, "resnet18", formats=["onnx", "torchscript"])
    return root


def _config(folder: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def _triton_dims(tensor) -> list[int]:
    """The full shape a Triton tensor stands for, less the batch: its dims, or its reshape where it has one."""
    return list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)


def _graph_dims(value_info) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value_info.type.tensor_type.shape.dim]


def _check_against_onnx(folder: Path, config) -> None:
    graph = onnx.load(folder / "1" / "model.onnx").graph
    batched = config.max_batch_size > 0
    for tensors, values in ((config.input, graph.input), (config.output, graph.output)):
        by_name = {v.name: v for v in values}
        assert sorted(t.name for t in tensors) == sorted(by_name), "the config names every graph tensor, no other"
        for tensor in tensors:
            graph_dims = _graph_dims(by_name[tensor.name])
            assert (
                model_config_pb2.DataType.Name(tensor.data_type)
                == ONNX_TYPES[by_name[tensor.name].type.tensor_type.elem_type]
            )
            if batched:
                assert graph_dims[0] == -1, f"{tensor.name}: Triton's batch must be a dynamic dim 0"
                graph_dims = graph_dims[1:]
            assert _triton_dims(tensor) == graph_dims, tensor.name
            assert list(tensor.dims), f"{tensor.name}: Triton refuses empty dims"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("stem", ["structured", "resnet18"])
def test_onnx_entry_matches_the_graph_and_runs_at_a_triton_batch(artifacts, tmp_path, stem):
    folder = write_model_repository(artifacts / f"{stem}.export.json", tmp_path / "models")
    assert folder == tmp_path / "models" / stem
    config = _config(folder)
    assert config.name == stem and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == DEFAULT_MAX_BATCH_SIZE and config.HasField("dynamic_batching")
    _check_against_onnx(folder, config)
    assert _sha256(folder / "1" / "model.onnx") == _sha256(artifacts / f"{stem}.onnx")
    # what Triton would hand the model: a batch of 3 of every input's dims
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {t.name: np.random.rand(3, *_triton_dims(t)).astype(np.float32) for t in config.input}
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    for tensor in config.output:
        assert list(outputs[tensor.name].shape) == [3, *_triton_dims(tensor)], tensor.name


@pytest.mark.parametrize("stem", ["structured", "resnet18"])
def test_torchscript_entry_uses_indexed_names_and_runs_at_a_triton_batch(artifacts, tmp_path, stem):
    folder = write_model_repository(artifacts / f"{stem}.torchscript.pt", tmp_path / "models", name=f"{stem}_ts")
    config = _config(folder)
    manifest = json.loads((artifacts / f"{stem}.export.json").read_text())
    assert config.platform == "pytorch_libtorch" and config.max_batch_size == DEFAULT_MAX_BATCH_SIZE
    assert [t.name for t in config.input] == [f"INPUT__{i}" for i in range(len(manifest["inputs"]["names"]))]
    assert [t.name for t in config.output] == [f"OUTPUT__{i}" for i in range(len(manifest["outputs"]["names"]))]
    for tensor, shape in zip(config.input, manifest["inputs"]["shapes"]):
        assert _triton_dims(tensor) == shape[1:] and model_config_pb2.DataType.Name(tensor.data_type) == "TYPE_FP32"
    module = torch.jit.load(str(folder / "1" / "model.pt"))
    outputs = module(*(torch.rand(3, *_triton_dims(t)) for t in config.input))
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    assert len(outputs) == len(config.output)
    for tensor, output in zip(config.output, outputs):
        assert list(output.shape) == [3, *_triton_dims(tensor)], tensor.name


def test_fixed_batch_gets_full_shapes_and_no_triton_batch(artifacts, tmp_path):
    folder = write_model_repository(artifacts / "fixed.onnx", tmp_path / "models")
    config = _config(folder)
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    _check_against_onnx(folder, config)
    assert list(config.input[0].dims) == [2, 8]
    with pytest.raises(ConfigurationError, match=r"dim 0 of input 'batch\.x' is fixed"):
        write_model_repository(artifacts / "fixed.onnx", tmp_path / "other", max_batch_size=4)


@pytest.mark.parametrize("stem, fmt", [("structured", "onnx"), ("structured", "torchscript"), ("fixed", "onnx")])
def test_the_entry_carries_the_golden_samples_and_perf_analyzer_data_that_the_model_answers(
    artifacts, tmp_path, stem, fmt
):
    folder = write_model_repository(artifacts / f"{stem}.export.json", tmp_path / "models", format=fmt)
    manifest = json.loads((artifacts / f"{stem}.export.json").read_text())
    assert _sha256(folder / "samples.npz") == manifest["samples"]["sha256"]
    config = _config(folder)
    data = json.loads((folder / "perf_analyzer_data.json").read_text())["data"]
    assert len(data) == len(manifest["samples"]["checks"]) == 3
    names = {t.name: t for t in config.input}
    for request in data:  # each request as perf_analyzer sends it, by Triton's names and dims
        assert set(request) == set(names)
        for name, tensor in request.items():
            assert tensor["shape"] == [
                d if d > 0 else tensor["shape"][i] for i, d in enumerate(_triton_dims(names[name]))
            ]
            assert len(tensor["content"]) == int(np.prod(tensor["shape"]))
    # the data is the golden inputs: one row of each check (Triton batches), or the whole check where it does not
    with np.load(folder / "samples.npz") as stored:
        first = stored["0/in/batch.x"]
    x = next(name for name in names if name in ("batch.x", "INPUT__0"))
    expected = first[0] if config.max_batch_size > 0 else first
    np.testing.assert_array_equal(np.array(data[0][x]["content"], np.float32).reshape(expected.shape), expected)


def test_refusals_and_overwrite(artifacts, tmp_path):
    repository = tmp_path / "models"
    export(StructuredModel(), structured_sample(), tmp_path, "program", formats=["pt2"])
    with pytest.raises(ConfigurationError, match="Triton runs ONNX, OpenVINO and flat TorchScript"):
        write_model_repository(tmp_path / "program.pt2", repository)
    first = write_model_repository(artifacts / "structured.onnx", repository, max_batch_size=16)
    with pytest.raises(ConfigurationError, match=r"exists\. HINT: pass --overwrite"):
        write_model_repository(artifacts / "structured.onnx", repository)
    assert _config(first).max_batch_size == 16, "a refused write leaves the entry as it was"
    write_model_repository(artifacts / "structured.onnx", repository, max_batch_size=4, overwrite=True)
    assert _config(first).max_batch_size == 4
    assert sorted(p.name for p in repository.iterdir()) == ["structured"], "no staging folder is left behind"


def test_command_line(artifacts, tmp_path):
    command = [sys.executable, "-m", "lightning_deploy.cli", "triton", str(artifacts / "structured.export.json")]
    result = subprocess.run(
        [*command, "--repository", str(tmp_path / "models"), "--name", "mlp", "--max-batch-size", "32"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "1/model.onnx" in result.stdout and 'name: "mlp"' in result.stdout
    config = _config(tmp_path / "models" / "mlp")
    assert config.max_batch_size == 32
    _check_against_onnx(tmp_path / "models" / "mlp", config)
