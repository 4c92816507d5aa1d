"""The Open Inference Protocol on `lightning-deploy serve`, spoken by Triton's own client (tritonclient.http).

A real server on 127.0.0.1; tensors named by the manifest's leaves (``batch.x``), answers compared with ``load()``.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from models import StructuredModel, structured_sample
from servers import running_server, serve_cli
from tritonclient.utils import InferenceServerException

from lightning_deploy import export, load

KEY = "oip-key-93b1"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("oip")
    export(StructuredModel(), structured_sample(), folder, "mlp", formats=["onnx"])
    manifest = folder / "mlp.export.json"
    with running_server(serve_cli(manifest, "--api-key-env", "OIP_KEY"), folder, env={"OIP_KEY": KEY}) as (_, url):
        yield manifest, url


def _client(url):
    return triton.InferenceServerClient(url.removeprefix("http://"), network_timeout=60)


def _inputs(rows, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 8)).astype(np.float32)
    mask = (rng.random(rows) > 0.3).astype(np.float32)
    inputs = [triton.InferInput("batch.x", list(x.shape), "FP32"), triton.InferInput("batch.mask", [rows], "FP32")]
    inputs[0].set_data_from_numpy(x, binary_data=False)
    inputs[1].set_data_from_numpy(mask, binary_data=False)
    return inputs, {"x": x, "mask": mask}


def test_tritons_client_reads_readiness_and_metadata(served):
    manifest, url = served
    client = _client(url)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("mlp")
    meta = client.get_model_metadata("mlp", headers={"X-API-Key": KEY})
    contract = load(manifest).contract
    assert [t["name"] for t in meta["inputs"]] == contract.inputs.names == ["batch.x", "batch.mask"]
    assert [t["name"] for t in meta["outputs"]] == contract.outputs.names
    assert meta["inputs"][0] == {"name": "batch.x", "datatype": "FP32", "shape": [-1, 8]}
    with pytest.raises(InferenceServerException, match="unknown model 'other'"):
        client.get_model_metadata("other", headers={"X-API-Key": KEY})
    assert httpx.get(f"{url}/v2/models/mlp", timeout=30).status_code == 401  # infer and metadata take the key


@pytest.mark.parametrize("rows, seed", [(1, 0), (5, 1)])
def test_tritons_client_infers_and_gets_loads_answer_at_two_batch_sizes(served, rows, seed):
    manifest, url = served
    inputs, batch = _inputs(rows, seed)
    asked = [triton.InferRequestedOutput("out.logits", binary_data=False),
             triton.InferRequestedOutput("out.stats.summary.mean", binary_data=False)]  # fmt: skip
    result = _client(url).infer("mlp", inputs, outputs=asked, request_id="r1", headers={"X-API-Key": KEY})
    want = load(manifest).outputs_by_name({"x": batch["x"], "mask": batch["mask"]})
    for name in ("out.logits", "out.stats.summary.mean"):
        np.testing.assert_allclose(result.as_numpy(name), want[name], rtol=1e-5, atol=1e-6)
    answer = result.get_response()
    assert answer["id"] == "r1" and answer["model_name"] == "mlp" and len(answer["outputs"]) == 2


def test_a_bad_infer_request_gets_the_protocols_400_naming_the_tensor(served):
    _, url = served
    x = triton.InferInput("batch.x", [2, 8], "FP64")
    x.set_data_from_numpy(np.zeros((2, 8)), binary_data=False)
    mask = triton.InferInput("batch.mask", [2], "FP32")
    mask.set_data_from_numpy(np.ones(2, np.float32), binary_data=False)
    with pytest.raises(InferenceServerException, match=r"input 'batch\.x': datatype 'FP64', the model takes FP32"):
        _client(url).infer("mlp", [x, mask], headers={"X-API-Key": KEY})
    answer = httpx.post(f"{url}/v2/models/mlp/infer", json={"inputs": [{"name": "batch.x"}]},
                        headers={"X-API-Key": KEY}, timeout=30)  # fmt: skip
    assert answer.status_code == 400 and "missing ['batch.mask']" in answer.json()["error"]
    binary = triton.InferInput("batch.x", [2, 8], "FP32")
    binary.set_data_from_numpy(np.zeros((2, 8), np.float32), binary_data=True)
    with pytest.raises(InferenceServerException, match="binary tensor data is not supported"):
        _client(url).infer("mlp", [binary, mask], headers={"X-API-Key": KEY})


def test_name_chooses_the_models_name_in_the_routes(served, tmp_path):
    manifest, _ = served
    with running_server(serve_cli(manifest, "--name", "scorer"), tmp_path) as (_, url):
        client = _client(url)
        assert client.is_model_ready("scorer") and client.get_model_metadata("scorer")["name"] == "scorer"
        inputs, batch = _inputs(3, 7)
        got = client.infer("scorer", inputs).as_numpy("out.logits")
        want = load(manifest).outputs_by_name({"x": batch["x"], "mask": batch["mask"]})["out.logits"]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert httpx.get(f"{url}/v2/models/mlp", timeout=30).status_code == 404
