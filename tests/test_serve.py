"""`lightning-deploy serve` as a real server: a subprocess on a free port, answered over HTTP from several threads."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
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

from lightning_deploy import export

ROOT = Path(__file__).parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
START_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    export(StructuredModel(), structured_sample(), root / "structured", "structured", formats=["onnx", "torchscript"])
    export(StructuredModel(), structured_sample(), root / "fixed", "fixed", formats=["onnx"], dynamic_batch=False)
    ids = (torch.arange(14).reshape(2, 7) % 50,)
    export(TokenClassifier(), ids, root / "tokens", "tokens", formats=["onnx"], dynamic_axes={"ids": {1: "length"}})
    return root


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _server(args, cwd):
    """Start a server process, wait for GET /health, yield (process, base url); kill what is left at the end."""
    port = _free_port()
    log = Path(cwd) / f"server-{port}.log"  # a file, not a pipe: worker processes that outlive it cannot block a read
    with log.open("w") as output:
        process = subprocess.Popen(
            [*args, "--port", str(port)] if args[1] == "-m" else [*args, str(port)],
            cwd=cwd,
            env=ENV,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    process.log = log
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        assert time.monotonic() < deadline, "no /health within the start timeout"
        time.sleep(0.25)
    try:
        yield process, url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)


def _serve_cli(path, *options):
    return [sys.executable, "-m", "lightning_deploy.cli", "serve", str(path), "--host", "127.0.0.1", *options]


@pytest.fixture(scope="module")
def batched_server(artifacts):
    """The structured MLP's ONNX artifact, concurrent requests stacked up to 4 along the batch."""
    args = _serve_cli(artifacts / "structured" / "structured.export.json", "--max-batch-size", "4")
    with _server([*args, "--batch-timeout", "0.02"], artifacts) as running:
        yield running


def _jsonish(value):
    """An eager output as the server writes it: records by field name, tuples as lists, tensors as lists."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if dataclasses.is_dataclass(value):
        return {f.name: _jsonish(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {k: _jsonish(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {str(k): _jsonish(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonish(v) for v in value]
    return value


def _assert_close(got, expected, where="out"):
    if isinstance(expected, dict):
        assert isinstance(got, dict) and list(got) == list(expected), f"{where}: keys {got} vs {list(expected)}"
        for key in expected:
            _assert_close(got[key], expected[key], f"{where}.{key}")
    elif expected is None:
        assert got is None, where
    elif isinstance(expected, list) and _holds_records(expected):  # a list of outputs, not a tensor
        assert isinstance(got, list) and len(got) == len(expected), where
        for index, (item, wanted) in enumerate(zip(got, expected)):
            _assert_close(item, wanted, f"{where}.{index}")
    else:
        got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
        assert got.shape == expected.shape, f"{where}: shape {got.shape} vs {expected.shape}"
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3, err_msg=where)


def _holds_records(value):
    if isinstance(value, list):
        return any(_holds_records(item) for item in value)
    return value is None or isinstance(value, dict)


def _structured_request(rows, seed):
    (batch,) = structured_sample(rows)
    generator = torch.Generator().manual_seed(seed)
    batch = {"x": torch.randn(rows, 8, generator=generator), "mask": batch["mask"]}
    expected = _jsonish(StructuredModel().eval()(batch))
    return {"batch": {k: v.tolist() for k, v in batch.items()}}, expected


def _post(client, url, body):
    return client.post(f"{url}/predict", json=body, timeout=60)


def test_concurrent_requests_match_eager(batched_server):
    _, url = batched_server
    cases = [_structured_request(rows=1 + seed % 3, seed=seed) for seed in range(96)]

    def client(part):
        with httpx.Client() as http:
            return [(_post(http, url, body), expected) for body, expected in cases[part::8]]

    with ThreadPoolExecutor(8) as pool:
        answers = [pair for part in pool.map(client, range(8)) for pair in part]
    assert len(answers) == len(cases)
    for response, expected in answers:
        assert response.status_code == 200, response.text
        _assert_close(response.json(), expected)


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
    cases = [_structured_request(rows=1 + seed % 3, seed=200 + seed) for seed in range(16)]
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
            _assert_close(response.json(), expected)
            continue
        assert response.headers["content-type"] == "application/octet-stream"
        with np.load(io.BytesIO(response.content)) as answer:
            assert len(answer.files) == 6
            for name in answer.files:
                _assert_close(answer[name], _leaf(expected, name), name)
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
    good = [_structured_request(rows=2, seed=100 + i) for i in range(len(BAD_REQUESTS))]

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
        _assert_close(answered.json(), expected)
    body, expected = _structured_request(rows=3, seed=7)  # still serving
    _assert_close(httpx.post(f"{url}/predict", json=body, timeout=60).json(), expected)


def test_requests_of_other_lengths_batch_apart_and_a_failing_one_fails_alone(artifacts):
    """Token ids of two lengths in one batch (stacked per length); an id out of range fails only its request.

    Two inference workers: LitServe hands requests to either, and both answer alike.
    """
    model = TokenClassifier().eval()
    args = _serve_cli(artifacts / "tokens" / "tokens.onnx", "--max-batch-size", "8", "--batch-timeout", "0.05")
    args += ["--workers", "2"]
    with _server(args, artifacts) as (_, url):
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
            _assert_close(response.json(), model(torch.as_tensor(ids)).tolist())
        fractional = httpx.post(f"{url}/predict", json={"ids": [[1.5, 2.0]]}, timeout=60)
        assert fractional.status_code == 422
        assert "input 'ids': fractional values, the model takes int64" in fractional.text


def test_the_api_in_a_users_own_litserver(artifacts):
    """ExportedModelAPI in a LitServer the user builds (tests/serve_app.py), here on the TorchScript artifact."""
    artifact = artifacts / "structured" / "structured.torchscript.pt"
    with _server([sys.executable, str(ROOT / "tests" / "serve_app.py"), str(artifact)], artifacts) as (_, url):
        cases = [_structured_request(rows=1 + seed % 2, seed=seed) for seed in range(12)]
        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda case: httpx.post(f"{url}/predict", json=case[0], timeout=60), cases))
        for response, (_, expected) in zip(responses, cases):
            assert response.status_code == 200, response.text
            _assert_close(response.json(), expected)


def _copy(folder, tmp_path):
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def test_unverified_or_changed_artifacts_and_impossible_batching_are_refused_at_start(artifacts, tmp_path):
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
    ]
    for path, options, message in cases:
        result = subprocess.run(
            [*_serve_cli(path, *options), "--port", str(_free_port())],
            capture_output=True,
            text=True,
            timeout=120,
            env=ENV,
        )
        assert result.returncode == 2, (message, result.stdout[-2000:], result.stderr[-2000:])
        assert message in result.stderr, result.stderr


def _children(pid):
    """Every process whose parent is ``pid``, read from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def test_sigterm_stops_the_server_and_its_workers(batched_server):
    process, url = batched_server
    workers = _children(process.pid)
    assert workers, "the server has no worker processes"
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0, process.log.read_text()[-3000:]
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [pid for pid in workers if Path(f"/proc/{pid}/stat").exists() and "Z" not in _state(pid)]
    assert not alive, f"worker processes outlived the server: {alive}"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/health", timeout=2)


def _state(pid):
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return "gone"
