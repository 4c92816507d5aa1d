"""`lightning-deploy serve` as a real server: a subprocess on a free port, answered over HTTP from several threads."""

from __future__ import annotations

import io
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from models import StructuredModel, TokenClassifier, structured_sample
from servers import ENV, ROOT, assert_close, children, free_port, running_server, serve_cli, state, structured_request
from tampering import change_golden_output

from lightning_deploy import export


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    export(StructuredModel(), structured_sample(), root / "structured", "structured", formats=["onnx", "torchscript"])
    export(StructuredModel(), structured_sample(), root / "fixed", "fixed", formats=["onnx"], dynamic_batch=False)
    ids = (torch.arange(14).reshape(2, 7) % 50,)
    export(TokenClassifier(), ids, root / "tokens", "tokens", formats=["onnx"], dynamic_axes={"ids": {1: "length"}})
    return root


@pytest.fixture(scope="module")
def batched_server(artifacts):
    """The structured MLP's ONNX artifact, concurrent requests stacked up to 4 along the batch."""
    args = serve_cli(artifacts / "structured" / "structured.export.json", "--max-batch-size", "4")
    with running_server([*args, "--batch-timeout", "0.02"], artifacts) as running:
        yield running


def _post(client, url, body):
    return client.post(f"{url}/predict", json=body, timeout=60)


def test_concurrent_requests_match_eager(batched_server):
    _, url = batched_server
    cases = [structured_request(rows=1 + seed % 3, seed=seed) for seed in range(96)]

    def client(part):
        with httpx.Client() as http:
            return [(_post(http, url, body), expected) for body, expected in cases[part::8]]

    with ThreadPoolExecutor(8) as pool:
        answers = [pair for part in pool.map(client, range(8)) for pair in part]
    assert len(answers) == len(cases)
    for response, expected in answers:
        assert response.status_code == 200, response.text
        assert_close(response.json(), expected)


def _npz(arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _leaf(structure, name):
    """The value at a leaf name (``out.parts.1.first``) of an answer in JSON form."""
    for part in name.split(".")[1:]:
        structure = structure[part] if isinstance(structure, dict) else structure[int(part)]
    return structure


def test_npz_bodies_are_answered_as_npz_beside_json_ones(batched_server):
    """The binary form: .npz keyed by input leaf names in, .npz keyed by output leaf names out, in the same batches."""
    _, url = batched_server
    cases = [structured_request(rows=1 + seed % 3, seed=200 + seed) for seed in range(16)]
    octet = {"content-type": "application/octet-stream"}

    def send(index):
        body, expected = cases[index]
        arrays = {f"batch.{k}": np.asarray(v, dtype=np.float32) for k, v in body["batch"].items()}
        if index % 2:
            return httpx.post(f"{url}/predict", json=body, timeout=60), expected
        return httpx.post(f"{url}/predict", content=_npz(arrays), headers=octet, timeout=60), expected

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, range(len(cases))))
    for index, (response, expected) in enumerate(results):
        assert response.status_code == 200, response.text
        if index % 2:
            assert_close(response.json(), expected)
            continue
        assert response.headers["content-type"] == "application/octet-stream"
        with np.load(io.BytesIO(response.content)) as answer:
            assert len(answer.files) == 6
            for name in answer.files:
                assert_close(answer[name], _leaf(expected, name), name)
    for body, message in [
        (b"not an archive", "neither JSON (content-type: application/json) nor an .npz archive"),
        (_npz({"batch.x": np.zeros((1, 8), np.float32)}), "the .npz holds missing ['batch.mask'], extra []"),
        (_npz({"batch.x": np.zeros((1, 8)), "batch.mask": np.array(["a"])}), "input 'batch.mask': string values"),
    ]:
        refused = httpx.post(f"{url}/predict", content=body, headers=octet, timeout=60)
        assert refused.status_code == 422 and message in refused.text, refused.text


BAD_REQUESTS = [
    ("not json {", "JSON decode error"),
    ([1, 2], "valid dictionary"),
    ({"batch": {"x": [[0.0] * 8]}}, "missing ['mask']"),
    ({"batch": {"x": [[0.0] * 8], "mask": [1.0]}, "extra": 1}, "extra ['extra']"),
    ({"batch": [[0.0] * 8, [1.0]]}, "input.batch: expected a dict"),
    ({"batch": {"x": [["a"] * 8], "mask": [1.0]}}, "input 'batch.x': string values"),
    ({"batch": {"x": [[0.0] * 8], "mask": [True]}}, "input 'batch.mask': true/false values"),
    ({"batch": {"x": [[0.0] * 7], "mask": [1.0]}}, "input 'batch.x': shape [1, 7]"),
    ({"batch": {"x": [[0.0] * 8, [0.0]], "mask": [1.0, 1.0]}}, "input 'batch.x': nested lists of unequal lengths"),
    ({"batch": {"x": [[0.0] * 8], "mask": [1.0, 1.0]}}, "inputs disagree on dim 'batch'"),
    ({"batch": {"x": [], "mask": []}}, "input 'batch.x': shape [0]"),
]


def test_bad_requests_get_422_naming_the_leaf_and_do_not_fail_their_batch(batched_server):
    _, url = batched_server
    good = [structured_request(rows=2, seed=100 + i) for i in range(len(BAD_REQUESTS))]

    def send(index):  # a bad and a good request at once, so that they land in the same batch
        bad, _ = BAD_REQUESTS[index]
        with httpx.Client() as http:
            if isinstance(bad, str):
                headers = {"content-type": "application/json"}
                refused = http.post(f"{url}/predict", content=bad, headers=headers, timeout=60)
            else:
                refused = _post(http, url, bad)
            return refused, _post(http, url, good[index][0])

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(send, range(len(BAD_REQUESTS))))
    for (refused, answered), (_, expected_text), (_, expected) in zip(results, BAD_REQUESTS, good):
        assert refused.status_code == 422, (expected_text, refused.status_code, refused.text)
        assert expected_text in refused.text, refused.text
        assert answered.status_code == 200, answered.text
        assert_close(answered.json(), expected)
    body, expected = structured_request(rows=3, seed=7)  # still serving
    assert_close(httpx.post(f"{url}/predict", json=body, timeout=60).json(), expected)


def test_requests_of_other_lengths_batch_apart_and_a_failing_one_fails_alone(artifacts):
    """Token ids of two lengths in one batch (stacked per length); an id out of range fails only its request.

    Two inference workers: LitServe hands requests to either, and both answer alike.
    """
    model = TokenClassifier().eval()
    args = serve_cli(artifacts / "tokens" / "tokens.onnx", "--max-batch-size", "8", "--batch-timeout", "0.05")
    args += ["--workers", "2"]
    with running_server(args, artifacts) as (_, url):
        rng = np.random.default_rng(0)
        requests = [rng.integers(0, 50, size=(1 + i % 2, 5 if i % 3 else 9)) for i in range(24)]
        requests[5] = np.full((1, 5), 999)  # outside the vocabulary: the runtime fails on it

        def send(ids):
            return httpx.post(f"{url}/predict", json={"ids": ids.tolist()}, timeout=60)

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(send, requests))
        for index, (ids, response) in enumerate(zip(requests, responses)):
            if index == 5:
                assert response.status_code == 500 and "the model failed on this request" in response.text
                continue
            assert response.status_code == 200, response.text
            assert_close(response.json(), model(torch.as_tensor(ids)).tolist())
        fractional = httpx.post(f"{url}/predict", json={"ids": [[1.5, 2.0]]}, timeout=60)
        assert fractional.status_code == 422
        assert "input 'ids': fractional values, the model takes int64" in fractional.text


def test_the_api_in_a_users_own_litserver(artifacts):
    """ExportedModelAPI in a LitServer the user builds (tests/serve_app.py), here on the TorchScript artifact."""
    artifact = artifacts / "structured" / "structured.torchscript.pt"
    with running_server([sys.executable, str(ROOT / "tests" / "serve_app.py"), str(artifact)], artifacts) as (_, url):
        cases = [structured_request(rows=1 + seed % 2, seed=seed) for seed in range(12)]
        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda case: httpx.post(f"{url}/predict", json=case[0], timeout=60), cases))
        for response, (_, expected) in zip(responses, cases):
            assert response.status_code == 200, response.text
            assert_close(response.json(), expected)


def _copy(folder, tmp_path):
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def test_unverified_artifacts_impossible_batching_and_bad_limits_are_refused_at_start(artifacts, tmp_path):
    failed = _copy(artifacts / "structured", tmp_path)
    manifest = json.loads((failed / "structured.export.json").read_text())
    manifest["artifacts"][0].update(ok=False, error="made up for the test")
    (failed / "structured.export.json").write_text(json.dumps(manifest))
    changed = _copy(artifacts / "fixed", tmp_path)
    with (changed / "fixed.onnx").open("ab") as file:
        file.write(b"\0")
    cases = [
        (failed / "structured.onnx", [], "failed at export: made up for the test"),
        (changed / "fixed.onnx", [], "sha256 mismatch"),
        (artifacts / "fixed" / "fixed.onnx", ["--max-batch-size", "4"], "dim 0 of input 'batch.x' is fixed"),
        (artifacts / "structured" / "structured.export.json", ["--format", "pt2"], "holds no pt2 artifact"),
        (artifacts / "structured" / "structured.onnx", ["--workers", "0"], "--workers 0"),
        (artifacts / "structured" / "structured.onnx", ["--max-payload-size", "64 parsecs"], "not a size"),
        (artifacts / "structured" / "structured.onnx", ["--timeout", "0"], "--timeout 0"),
        (artifacts / "structured" / "structured.onnx", ["--api-key-env", "NO_KEY_VAR"], "NO_KEY_VAR is not set"),
        (artifacts / "structured" / "structured.onnx", ["--host", "10.1.2.3"], "invalid choice: '10.1.2.3'"),
        (artifacts / "structured" / "structured.onnx", ["--replicas", "2"], "--replicas are for --engine ray"),
        (
            artifacts / "structured" / "structured.onnx",
            ["--engine", "ray", "--workers", "2", "--no-access-log"],
            "--workers, --no-access-log: LitServe's, not Ray Serve's",
        ),
    ]
    for path, options, message in cases:
        result = subprocess.run(
            [*serve_cli(path, *options), "--port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=120,
            env=ENV,
        )
        assert result.returncode == 2, (message, result.stdout[-2000:], result.stderr[-2000:])
        assert message in result.stderr, result.stderr


def test_a_server_whose_artifact_does_not_reproduce_its_golden_samples_refuses_to_start(artifacts, tmp_path):
    folder = _copy(artifacts / "structured", tmp_path)
    source = change_golden_output(folder, "structured", "out.parts.1.first", update_sha=True, by=0.25)
    port = free_port()
    started = time.monotonic()
    result = subprocess.run([*serve_cli(folder / "structured.export.json"), "--port", str(port)],
                            capture_output=True, text=True, timeout=120, env=ENV)  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    assert "does not reproduce its golden samples" in result.stderr and f"at the {source}" in result.stderr
    assert "output 'out.parts.1.first'" in result.stderr and "--no-verify" in result.stderr
    assert time.monotonic() - started < 60
    with socket.socket() as sock:  # nothing was left listening on the port
        assert sock.connect_ex(("127.0.0.1", port)) != 0
    # --no-verify starts it, and says so in the log; the artifact itself is fine, so it answers as eager does
    args = [*serve_cli(folder / "structured.export.json"), "--no-verify"]
    with running_server(args, tmp_path) as (process, url):
        body, expected = structured_request(rows=3, seed=5)
        answer = httpx.post(f"{url}/predict", json=body, timeout=60)
        assert answer.status_code == 200
        assert_close(answer.json(), expected)
        assert "--no-verify: onnx is served without the golden check" in process.log.read_text()


def test_a_server_logs_the_golden_check_it_passed(artifacts, tmp_path):
    with running_server(serve_cli(artifacts / "structured" / "structured.onnx"), tmp_path) as (process, _):
        log = process.log.read_text()
    assert "lightning-deploy serve: onnx reproduced its 3 golden checks on cpu (max abs diff" in log


def test_sigterm_stops_the_server_and_its_workers(batched_server):
    process, url = batched_server
    workers = children(process.pid)
    assert workers, "the server has no worker processes"
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0, process.log.read_text()[-3000:]
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [pid for pid in workers if Path(f"/proc/{pid}/stat").exists() and "Z" not in state(pid)]
    assert not alive, f"worker processes outlived the server: {alive}"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/health", timeout=2)
