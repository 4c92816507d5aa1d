"""Serving throughput: ``lightning-deploy serve`` under 8 concurrent clients, with and without batching.

Run: ``.venv/bin/python benchmarks/serving.py [--requests 2000] [--doc docs/performance.md]``;
with ``--soak [--minutes 10]``, the soak of ``benchmarks/soak.py`` instead (workers killed, mixed traffic).
(prints a table; asserts nothing). For the digits MLP (examples/digits.py) and resnet18
(weights=None, 224x224), both exported to ONNX with a dynamic batch: a server is started as a
subprocess (one inference worker), 8 client threads send ``--requests`` requests of one row
each, as JSON and then as ``.npz`` (bodies encoded before timing), and check every answer
against ``load()``'s output for that body; then the same with ``--max-batch-size 8``. The reference is in-process
``load()`` at batch 1, the rows one after another in this process.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import torch
import torchvision
from perfdoc import argument_parser, publish
from sklearn.datasets import load_digits

from lightning_deploy import export, load

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from digits import DigitsMLP

CLIENTS = 8
BODIES = 16  # distinct requests, sent round-robin
BATCHED = ["--max-batch-size", "8", "--batch-timeout", "0.005"]


def free_port() -> int:
    """A port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server(artifact: Path, options: list[str]) -> Iterator[str]:
    """``lightning-deploy serve`` on a free port, up when ``/health`` answers; stopped with SIGTERM."""
    port = free_port()
    command = [sys.executable, "-m", "lightning_deploy.cli", "serve", str(artifact), "--host", "127.0.0.1"]
    with started([*command, "--port", str(port), *options], port) as url:
        yield url


@contextlib.contextmanager
def started(command: list[str], port: int) -> Iterator[str]:
    """Run ``command`` (a server on ``port``) until ``/health`` answers; SIGTERM it at the end.

    In a session of its own, whose processes are killed after the SIGTERM: a plain ``LitServer``
    stopped by SIGTERM leaves its spawned inference worker running (seen here, litserve 0.2).
    """
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if process.poll() is not None:
                raise RuntimeError(f"{command[:4]} exited with {process.returncode}")
            time.sleep(0.25)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def answer_of(response: httpx.Response) -> np.ndarray:
    """The one output of a JSON or an .npz answer."""
    if response.headers["content-type"] == NPZ["content-type"]:
        with np.load(io.BytesIO(response.content)) as archive:
            return archive["out"]
    return np.asarray(response.json())


def drive(url: str, bodies: list[bytes], headers: dict, expected: list[np.ndarray], requests: int) -> dict[str, float]:
    """``requests`` requests from ``CLIENTS`` threads; throughput, latency percentiles and failures."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()

    def client(index: int) -> None:
        mine, fails = [], 0
        with httpx.Client(timeout=120) as http:
            for number in range(index, requests, CLIENTS):
                body = number % BODIES
                start = time.perf_counter()
                try:
                    response = http.post(f"{url}/predict", content=bodies[body], headers=headers)
                    ok = response.status_code == 200 and np.allclose(answer_of(response), expected[body], atol=1e-4)
                except httpx.HTTPError:
                    ok = False
                mine.append(time.perf_counter() - start)
                fails += not ok
        with lock:
            latencies.extend(mine)
            failures[0] += fails

    warm = httpx.post(f"{url}/predict", content=bodies[0], headers=headers, timeout=120)
    warm.raise_for_status()
    start = time.perf_counter()
    workers = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - start
    cuts = statistics.quantiles(latencies, n=100)
    return {"rps": requests / wall, "p50": cuts[49] * 1e3, "p99": cuts[98] * 1e3, "failed": failures[0]}


JSON = {"content-type": "application/json"}
NPZ = {"content-type": "application/octet-stream"}


def npz_body(name: str, array: np.ndarray) -> bytes:
    """``array`` as an .npz request body for the input leaf ``name``."""
    buffer = io.BytesIO()
    np.savez(buffer, **{name: array})
    return buffer.getvalue()


def in_process(artifact: Path, rows: list[np.ndarray], batch: int = 1, seconds: float = 5.0) -> float:
    """Rows per second of ``load()`` at ``batch`` rows per call, one call after another, for about ``seconds``."""
    model = load(artifact)
    batches = [np.concatenate([rows[(i + j) % len(rows)] for j in range(batch)]) for i in range(len(rows))]
    model(batches[0])
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model(batches[calls % len(batches)])
        calls += 1
    return calls * batch / (time.perf_counter() - start)


def main() -> None:
    """Export both models, serve each twice, print (and with --doc write) the table."""
    parser = argument_parser(__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="requests per model and server setting")
    parser.add_argument("--soak", action="store_true", help="run the soak (benchmarks/soak.py) instead")
    parser.add_argument("--minutes", type=float, default=10.0, help="with --soak: how long")
    args = parser.parse_args()
    if args.soak:
        from soak import soak

        soak(args.minutes, args.threads, args.doc, free_port())
        return
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    digits = load_digits().data.astype(np.float32)
    cases = {
        "digits MLP": (DigitsMLP().eval(), [digits[i : i + 1] for i in range(BODIES)]),
        "resnet18": (
            torchvision.models.resnet18(weights=None).eval(),
            [np.random.default_rng(i).standard_normal((1, 3, 224, 224)).astype(np.float32) for i in range(BODIES)],
        ),
    }
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for name, (module, inputs) in cases.items():
            sample = torch.as_tensor(np.concatenate(inputs[:2]))
            export(module, sample, folder, name.replace(" ", "_"), formats=["onnx"])
            artifact = Path(folder) / f"{name.replace(' ', '_')}.onnx"
            reference = load(artifact, threads=args.threads)
            parameter = reference.contract.call.parameters[0]
            bodies = {
                "JSON": ([json.dumps({parameter: x.tolist()}).encode() for x in inputs], JSON),
                ".npz": ([npz_body(reference.input_names[0], x) for x in inputs], NPZ),
            }
            expected = [reference(x) for x in inputs]
            local, local8 = in_process(artifact, inputs), in_process(artifact, inputs, batch=8)
            for label, options in (("no", []), ("up to 8", BATCHED)):
                with server(artifact, options) as url:
                    for kind, (encoded, headers) in bodies.items():
                        figures = drive(url, encoded, headers, expected, args.requests)
                        unbatched = results.setdefault((name, kind), figures)
                        rows.append([
                            name, kind, label, str(args.requests), str(figures["failed"]), f"{figures['rps']:.0f}",
                            f"{figures['p50']:.1f}", f"{figures['p99']:.1f}",
                            f"{figures['rps'] / unbatched['rps']:.2f}x", f"{figures['rps'] / local:.2f}x",
                            f"{local:.0f}", f"{local8:.0f}",
                        ])  # fmt: skip
    publish(
        "serving",
        "Serving: lightning-deploy serve (LitServe) under 8 concurrent clients, one row per request",
        ["model", "body", "batching", "requests", "failed", "req/s", "p50 ms", "p99 ms", "vs no batching",
         "vs in-process load()", "in-process load() rows/s", "in-process batch 8 rows/s"],
        rows,
        [f"{CLIENTS} client threads in the benchmark's process, httpx, bodies encoded before timing; every"
         " answer is checked against load()'s output for its body (a non-200 or a mismatch counts as failed).",
         "The server and its clients share this machine's cores; one inference worker (ONNX Runtime,"
         f" {args.threads} threads). Batching: --max-batch-size 8 --batch-timeout 0.005.",
         "In-process load(): the same artifact called at batch 1, rows one after another, for 5 s (the reference"
         " of the ratio); at batch 8, what stacking could gain at most on this machine.",
         "body: JSON (forward's argument names, nested lists) or .npz (numpy.savez keyed by input leaf names, sent as"
         " application/octet-stream and answered in kind)."],
        args.doc,
    )  # fmt: skip


if __name__ == "__main__":
    main()
