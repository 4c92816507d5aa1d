"""Real servers for the tests: `lightning-deploy serve` (or any command) as a subprocess on a free port of 127.0.0.1."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from models import StructuredModel, structured_sample

ROOT = Path(__file__).parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_cli(path, *options, host="127.0.0.1"):
    """``lightning-deploy serve PATH`` run as ``python -m``; ``host=None`` leaves ``--host`` to its default."""
    host_options = ["--host", host] if host else []
    return [sys.executable, "-m", "lightning_deploy.cli", "serve", str(path), *host_options, *options]


@contextlib.contextmanager
def running_server(args, cwd, env=None):
    """Start a server process, wait for GET /health, yield (process, base url); kill what is left at the end."""
    port = free_port()
    log = Path(cwd) / f"server-{port}.log"  # a file, not a pipe: worker processes that outlive it cannot block a read
    with log.open("w") as output:
        process = subprocess.Popen(
            [*args, "--port", str(port)] if args[1] == "-m" else [*args, str(port)],
            cwd=cwd,
            env={**ENV, **(env or {})},
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


def children(pid):
    """Every process whose parent is ``pid``, read from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def state(pid):
    """The one-letter state of ``pid`` from /proc (``Z`` for a zombie), or ``gone``."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return "gone"


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


def assert_close(got, expected, where="out"):
    if isinstance(expected, dict):
        assert isinstance(got, dict) and list(got) == list(expected), f"{where}: keys {got} vs {list(expected)}"
        for key in expected:
            assert_close(got[key], expected[key], f"{where}.{key}")
    elif expected is None:
        assert got is None, where
    elif isinstance(expected, list) and _holds_records(expected):  # a list of outputs, not a tensor
        assert isinstance(got, list) and len(got) == len(expected), where
        for index, (item, wanted) in enumerate(zip(got, expected)):
            assert_close(item, wanted, f"{where}.{index}")
    else:
        got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
        assert got.shape == expected.shape, f"{where}: shape {got.shape} vs {expected.shape}"
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3, err_msg=where)


def _holds_records(value):
    if isinstance(value, list):
        return any(_holds_records(item) for item in value)
    return value is None or isinstance(value, dict)


def structured_request(rows, seed):
    """A JSON body of ``rows`` random rows for the structured MLP, and what eager answers to it, as JSON."""
    (batch,) = structured_sample(rows)
    generator = torch.Generator().manual_seed(seed)
    batch = {"x": torch.randn(rows, 8, generator=generator), "mask": batch["mask"]}
    expected = _jsonish(StructuredModel().eval()(batch))
    return {"batch": {k: v.tolist() for k, v in batch.items()}}, expected


def wait_until(condition, seconds, what, log=None):
    """Poll ``condition`` every half second; fail naming ``what`` (and the tail of ``log``) after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        tail = Path(log).read_text()[-3000:] if log else ""
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}\n{tail}"
        time.sleep(0.5)


def concurrent_clients(url, clients=8, requests_each=6):
    """``clients`` threads posting structured requests to ``url``; the mismatches with eager's answers."""
    import threading

    # the requests are built first: building the model seeds torch, which threads would race on
    work = {seed: [structured_request(rows=1 + (seed + n) % 4, seed=seed * 10 + n) for n in range(requests_each)]
            for seed in range(clients)}  # fmt: skip
    failures = []

    def client(seed):
        with httpx.Client(timeout=60) as http:
            for body, expected in work[seed]:
                try:
                    assert_close(http.post(f"{url}/predict", json=body).json(), expected)
                except AssertionError as err:
                    failures.append(str(err))

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return failures


def check_triton_client(address, manifest, rows=3):
    """Triton's HTTP client: readiness, the model's metadata and an infer equal to ``load()``'s, over the protocol."""
    import tritonclient.http as triton

    from lightning_deploy import load

    x = np.random.default_rng(rows).standard_normal((rows, 8)).astype(np.float32)
    mask = np.ones(rows, np.float32)
    inputs = [triton.InferInput("batch.x", [rows, 8], "FP32"), triton.InferInput("batch.mask", [rows], "FP32")]
    inputs[0].set_data_from_numpy(x, binary_data=False)
    inputs[1].set_data_from_numpy(mask, binary_data=False)
    client = triton.InferenceServerClient(address)
    assert client.is_server_ready()
    assert [t["name"] for t in client.get_model_metadata("mlp")["inputs"]] == ["batch.x", "batch.mask"]
    got = client.infer("mlp", inputs).as_numpy("out.logits")
    want = load(manifest).outputs_by_name({"x": x, "mask": mask})["out.logits"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def failures_after_kill(url, victim, requests=20):
    """SIGKILL ``victim`` (a replica), then send ``requests`` requests: how many failed (the others are checked)."""
    victim.send_signal(signal.SIGKILL)
    body, expected = structured_request(rows=2, seed=99)
    failed = 0
    for _ in range(requests):
        answer = httpx.post(f"{url}/predict", json=body, timeout=60)
        failed += answer.status_code != 200
        if answer.status_code == 200:
            assert_close(answer.json(), expected)
    return failed


def answering(url, process, log):
    """A condition for :func:`wait_until`: ``url`` answers 200; fails at once, with the log, if ``process`` exited."""

    def condition():
        assert process.poll() is None, Path(log).read_text()[-3000:]
        try:
            return httpx.get(url, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    return condition


LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def off_loopback(processes):
    """The sockets of ``processes`` bound to, or talking to, an address other than the loopback.

    A port listening on every interface (``::``, ``0.0.0.0``) is left out: Ray Serve's replicas
    open one for their own gRPC, hard-coded (``[::]:0``, ray 2.60); traffic over it would show.
    """
    import psutil

    found = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            for connection in process.net_connections(kind="inet"):
                if connection.status == psutil.CONN_LISTEN and connection.laddr.ip in ("::", "0.0.0.0"):
                    continue
                ends = [connection.laddr, *([connection.raddr] if connection.raddr else [])]
                if any(end.ip not in LOOPBACK for end in ends):
                    found.append((process.name(), connection.status, ends))
    return found
