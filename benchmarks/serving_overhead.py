"""What ``lightning-deploy serve`` costs over a plain ``LitServer`` of the same ``ExportedModelAPI``.

Run: ``.venv/bin/python benchmarks/serving_overhead.py [--rounds 5] [--seconds 8] [--doc docs/performance.md]``
(prints a table; asserts nothing). The digits MLP exported to ONNX; both servers run at once as
subprocesses on 127.0.0.1 (one inference worker each, output to /dev/null), and 8 client
threads drive one, then the other, for ``--seconds`` each, ``--rounds`` times, so the machine's
drift falls on both alike. The figure is the median over rounds of serve's requests per second
over the plain server's, of the same round. Every answer is checked against ``load()``.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from perfdoc import argument_parser, publish
from serving import CLIENTS, JSON, drive, free_port, server, started
from sklearn.datasets import load_digits

from lightning_deploy import export, load

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from digits import DigitsMLP

PLAIN = """
import sys
import litserve as ls
from lightning_deploy.serving.server import ExportedModelAPI

if __name__ == "__main__":
    api = ExportedModelAPI(sys.argv[1])
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1, timeout=30)
    server.run(host="127.0.0.1", port=int(sys.argv[2]), generate_client_file=False)
"""


@contextlib.contextmanager
def plain_server(artifact: Path, folder: Path) -> Iterator[str]:
    """A ``LitServer`` of ``ExportedModelAPI`` with LitServe's defaults, up when ``/health`` answers."""
    script = folder / "plain_server.py"
    script.write_text(PLAIN)
    port = free_port()
    with started([sys.executable, str(script), str(artifact), str(port)], port) as url:
        yield url


def rate(url: str, bodies: list[bytes], expected: list[np.ndarray], seconds: float) -> float:
    """Requests per second over about ``seconds`` (the request count sized by a short first run)."""
    probe = drive(url, bodies, JSON, expected, 8 * CLIENTS)
    requests = max(8 * CLIENTS, int(probe["rps"] * seconds))
    figures = drive(url, bodies, JSON, expected, requests)
    if figures["failed"]:
        raise RuntimeError(f"{figures['failed']} failed requests at {url}")
    return figures["rps"]


def main() -> None:
    """Export, start both servers, alternate the rounds, print (and with --doc write) the table."""
    parser = argument_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    digits = load_digits().data.astype(np.float32)
    inputs = [digits[i : i + 1] for i in range(16)]
    rows, ratios = [], []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        export(DigitsMLP().eval(), torch.as_tensor(np.concatenate(inputs[:2])), folder, "digits", formats=["onnx"])
        artifact = folder / "digits.onnx"
        reference = load(artifact)
        parameter = reference.contract.call.parameters[0]
        bodies = [json.dumps({parameter: x.tolist()}).encode() for x in inputs]
        expected = [reference(x) for x in inputs]
        with plain_server(artifact, folder) as plain, server(artifact, []) as ours:
            for number in range(1, args.rounds + 1):
                plain_rps = rate(plain, bodies, expected, args.seconds)
                serve_rps = rate(ours, bodies, expected, args.seconds)
                ratios.append(serve_rps / plain_rps)
                rows.append([str(number), f"{plain_rps:.0f}", f"{serve_rps:.0f}", f"{ratios[-1]:.2f}x"])
    rows.append(["median", "", "", f"{statistics.median(ratios):.2f}x"])
    publish(
        "serving-overhead",
        "Serving overhead: lightning-deploy serve against a plain LitServer of the same ExportedModelAPI",
        ["round", "plain LitServer req/s", "lightning-deploy serve req/s", "serve / plain"],
        rows,
        [f"The digits MLP (ONNX), JSON requests of one row from {CLIENTS} client threads, every answer checked"
         f" against load(); {args.rounds} rounds of about {args.seconds:g} s per server, alternating, both servers"
         " up all along (one inference worker each, logs to /dev/null).",
         "serve adds: the golden check at start, the request guards (413, 504, JSON without a content type),"
         " Prometheus metrics, the API key check, worker replacement and draining on SIGTERM."],
        args.doc,
    )  # fmt: skip


if __name__ == "__main__":
    main()
