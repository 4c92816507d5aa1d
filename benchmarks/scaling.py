"""Scaling out on one machine: ``predict`` local vs Ray Data, and Ray Serve vs ``lightning-deploy serve``.

Run: ``.venv/bin/python benchmarks/scaling.py [--rows 50000] [--requests 2000] [--part predict|serve]
[--doc docs/performance.md]``
(prints two tables; asserts nothing). The digits MLP exported to ONNX.

- ``predict``: ``lightning-deploy predict`` as a subprocess over ``--rows`` and 10x as many
  Parquet rows, ``--engine local`` and ``--engine ray`` with 1 and 2 actors (Ray started by the
  command on the loopback, its start counted). Rows per second over the command's wall time, and
  the peak of the summed resident memory of the command and every process under it (Ray's
  raylet, workers and actors included), sampled every 50 ms; the last column is the 10x run's
  peak over the 1x run's (bounded memory: at most 1.3x).
- serving: ``lightning-deploy serve`` (LitServe, one worker), ``serve --engine ray`` with 1
  and 2 replicas (and batching), and Ray Serve answering from a table (no model: its own
  ceiling here), one after the other, each driven by 8 client threads with ``--requests`` JSON
  requests of one row; every answer checked against ``load()``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from perfdoc import argument_parser, publish, write_page
from serving import CLIENTS, JSON, drive, free_port, started
from sklearn.datasets import load_digits

from lightning_deploy import export, load

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from digits import DigitsMLP

ENGINES = [("local", []), ("ray, 1 actor", ["--engine", "ray", "--actors", "1"]),
           ("ray, 2 actors", ["--engine", "ray", "--actors", "2"])]  # fmt: skip
SERVERS = [("serve (LitServe, 1 worker)", []), ("serve --engine ray, 1 replica", ["--engine", "ray"]),
           ("serve --engine ray, 2 replicas", ["--engine", "ray", "--replicas", "2"]),
           ("serve --engine ray, 2 replicas, batches of 8", ["--engine", "ray", "--replicas", "2", "--max-batch-size",
                                                             "8", "--batch-timeout", "0.005"])]  # fmt: skip


def rows_file(folder: Path, rows: int) -> Path:
    """``rows`` digits (each with its own noise) as Parquet, in row groups of 10,000."""
    digits = load_digits().data.astype(np.float32) / 16
    pixels = np.resize(digits, (rows, 64)) + np.random.default_rng(0).normal(0, 0.01, (rows, 64)).astype(np.float32)
    path = folder / f"rows-{rows}.parquet"
    pq.write_table(pa.table({"pixels": pa.FixedShapeTensorArray.from_numpy_ndarray(pixels)}), path,
                   row_group_size=10_000)  # fmt: skip
    return path


def tree_rss(process: psutil.Process) -> int:
    """The summed resident memory of ``process`` and every process under it."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total


def run_predict(manifest: Path, rows: Path, output: Path, options: list[str]) -> tuple[float, int]:
    """Wall seconds and peak summed RSS of one ``lightning-deploy predict`` run."""
    command = [sys.executable, "-m", "lightning_deploy.cli", "predict", str(manifest), "--input", str(rows),
               "--output", str(output), "--batch-size", "1000", *options]  # fmt: skip
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watched, peak, done = psutil.Process(process.pid), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            with contextlib.suppress(psutil.Error):
                peak[0] = max(peak[0], tree_rss(watched))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, stderr = process.communicate(timeout=1800)
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"predict {options} failed:\n{stderr[-2000:]}")
    return time.perf_counter() - start, peak[0]


def predict_table(folder: Path, manifest: Path, rows: int) -> list[list[str]]:
    """Each engine over ``rows`` and 10x as many rows: the table's rows, every output checked against load()."""
    table = []
    files = {n: rows_file(folder, n) for n in (rows, 10 * rows)}
    want = {n: load(manifest).run_leaves({"pixels": _pixels(path)})["out"] for n, path in files.items()}
    for label, options in ENGINES:
        peaks = {}
        for count, path in files.items():
            seconds, peaks[count] = run_predict(manifest, path, folder / "out", options)
            got = pq.read_table(folder / "out" / "predictions.parquet").column("out").combine_chunks()
            np.testing.assert_allclose(got.to_numpy_ndarray(), want[count], rtol=1e-5, atol=1e-6)
            table.append([label, f"{count:,}", f"{seconds:.1f}", f"{count / seconds:,.0f}",
                          f"{peaks[count] / 2**20:,.0f}", ""])  # fmt: skip
        table[-1][-1] = f"{peaks[10 * rows] / peaks[rows]:.2f}x"
    return table


def _pixels(path: Path) -> np.ndarray:
    return pq.read_table(path).column("pixels").combine_chunks().to_numpy_ndarray()


# Ray Serve's own ceiling here: a deployment that answers each body from a table, no model, no checks
LOOKUP = """
import json, os, signal, sys, time
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
import ray
from ray import serve
from starlette.responses import Response

@serve.deployment(max_ongoing_requests=16, ray_actor_options={"num_cpus": 0.5})
class Lookup:
    def __init__(self, answers):
        self.answers = answers

    async def __call__(self, request):
        if request.url.path == "/health":
            return Response("ok")
        return Response(self.answers[(await request.body()).decode()], media_type="application/json")

stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[2])})
serve.run(Lookup.bind(json.load(open(sys.argv[1]))), route_prefix="/")
while not stopping:
    time.sleep(0.2)
serve.shutdown()
ray.shutdown()
"""


def serving_table(manifest: Path, requests: int) -> list[list[str]]:
    """Each server in turn, driven by the same clients: the table's rows, every answer checked against load()."""
    digits = load_digits().data.astype(np.float32)
    inputs = [digits[i : i + 1] for i in range(16)]
    reference = load(manifest)
    bodies = [json.dumps({"pixels": x.tolist()}).encode() for x in inputs]
    expected = [reference(x) for x in inputs]
    folder = manifest.parent
    (folder / "lookup.py").write_text(LOOKUP)
    answers = {body.decode(): json.dumps(want.tolist()) for body, want in zip(bodies, expected)}
    (folder / "answers.json").write_text(json.dumps(answers))
    commands = [(label, [sys.executable, "-m", "lightning_deploy.cli", "serve", str(manifest), *options, "--port"])
                for label, options in SERVERS]  # fmt: skip
    commands.append(("Ray Serve, no model (answers from a table)", [sys.executable, str(folder / "lookup.py"),
                                                                      str(folder / "answers.json")]))  # fmt: skip
    table = []
    for label, command in commands:
        port = free_port()
        with started([*command, str(port)], port) as url:
            figures = drive(url, bodies, JSON, expected, requests)
        table.append([label, f"{figures['rps']:.0f}", f"{figures['p50']:.1f}", f"{figures['p99']:.1f}",
                      str(figures["failed"])])  # fmt: skip
    return table


def main() -> None:
    """Export once, run the tables asked for, print (and with --doc write) them."""
    parser = argument_parser(__doc__)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--part", choices=["predict", "serve", "both"], default="both")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        export(DigitsMLP().eval(), torch.zeros(4, 64), folder, "digits", formats=["onnx"])
        manifest = folder / "digits.export.json"
        predict_rows = predict_table(folder, manifest, args.rows) if args.part != "serve" else None
        serving_rows = serving_table(manifest, args.requests) if args.part != "predict" else None
    tables = []
    if predict_rows:
        tables.append((
            "scaling-predict",
            "Batch inference: lightning-deploy predict, local vs Ray Data (one machine)",
            ["engine", "rows", "wall s", "rows/s", "peak RSS MiB", "10x rows / 1x memory"],
            predict_rows,
            ["The digits MLP (ONNX), Parquet in and out, --batch-size 1000; each run a fresh command, Ray started by"
             " it on the loopback (its start, about 8 s here, is in the wall time). Peak RSS: the command and every"
             " process under it, summed (Ray's object store pages count in each process that touched them), sampled"
             " every 50 ms; every output checked against load()."],
        ))  # fmt: skip
    if serving_rows:
        tables.append((
            "scaling-serve",
            "Ray Serve vs lightning-deploy serve (one machine)",
            ["server", "req/s", "p50 ms", "p99 ms", "failed"],
            serving_rows,
            [f"The digits MLP (ONNX), {args.requests} JSON requests of one row from {CLIENTS} client threads after"
             " one warm-up request, every answer checked against load(); the servers one after the other on"
             " 127.0.0.1. The last row is Ray Serve with no model, answering each body from a table: Ray Serve's own"
             " ceiling on this machine."],
        ))  # fmt: skip
    for section, title, columns, rows, notes in tables:
        publish(section, title, columns, rows, notes, args.doc)
        if args.doc is not None:  # the scaling page shows them too
            write_page(args.doc.parent / "scaling.md", section, title, columns, rows, notes)


if __name__ == "__main__":
    main()
