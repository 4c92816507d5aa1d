"""Inference latency side by side: eager, each artifact raw in its runtime, and each through ``load()``.

Run: ``.venv/bin/python benchmarks/runtime.py [--repeats 30] [--models mlp ...]`` (prints tables;
asserts nothing). Every runtime uses the same number of threads (``--threads``, default 2).
Per model and batch size it prints the median and p90 latency, the throughput, the speed-up
over eager, and ``load()``'s overhead over the raw runtime (per call, in microseconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from lightning_deploy import export, load


@dataclasses.dataclass
class Scores:
    """The MLP's structured output."""

    logits: torch.Tensor
    probs: torch.Tensor


class DictMLP(nn.Module):
    """MLP 64-32-10 with dict input ``{"x", "scale"}`` and a dataclass output."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, batch: dict[str, torch.Tensor]) -> Scores:
        """Logits and probabilities."""
        logits = self.net(batch["x"] * batch["scale"])
        return Scores(logits, logits.softmax(-1))


class Tagger(nn.Module):
    """TransformerEncoder (2 layers, d=128, 4 heads) with a padding mask; padded outputs zeroed."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model=128, nhead=4, dim_feedforward=256, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(128, 8)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """Per-token logits."""
        hidden = self.encoder(x, src_key_padding_mask=padding_mask)
        return self.head(hidden).masked_fill(padding_mask.unsqueeze(-1), 0.0)


def _mlp_sample(batch: int) -> tuple:
    return ({"x": torch.randn(batch, 64), "scale": torch.ones(batch, 1)},)


def _tagger_sample(batch: int) -> tuple:
    mask = torch.zeros(batch, 64, dtype=torch.bool)
    mask[batch // 2 :, 48:] = True
    return (torch.randn(batch, 64, 128), mask)


def _resnet18() -> nn.Module:
    import torchvision

    return torchvision.models.resnet18(weights=None)


MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[int], tuple], tuple[int, int], dict]] = {
    "mlp": (DictMLP, _mlp_sample, (1, 256), {}),
    "resnet18": (_resnet18, lambda b: (torch.randn(b, 3, 224, 224),), (1, 32), {}),
    "transformer": (Tagger, _tagger_sample, (1, 16), {"dynamic_axes": {"x": {1: "seq"}, "padding_mask": {1: "seq"}}}),
}


def _timed(run: Callable[[], Any], repeats: int) -> list[float]:
    """Seconds per call: warm-up calls first, then ``repeats`` timed calls."""
    for _ in range(3):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def _runners(model: nn.Module, sample: tuple, folder: Path, threads: int) -> dict[str, Callable[[], Any]]:
    """Every way to run ``model`` on ``sample``, each ready to call."""
    import onnxruntime as ort

    loaded = {fmt: load(folder / "model.export.json", format=fmt) for fmt in ("onnx", "torchscript", "pt2")}
    leaves = [t for t in torch.utils._pytree.tree_leaves(sample) if isinstance(t, torch.Tensor)]
    numpy_sample = torch.utils._pytree.tree_map(lambda t: t.numpy(), sample)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    feed = {i.name: leaves[loaded["onnx"].input_names.index(i.name)].numpy() for i in session.get_inputs()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.load(str(folder / "model.torchscript.pt"))
    program = torch.export.load(str(folder / "model.pt2")).module()

    def eager() -> Any:
        with torch.no_grad():
            return model(*sample)

    def raw(module: Callable[..., Any]) -> Callable[[], Any]:
        def run() -> Any:
            with torch.no_grad():
                return module(*leaves)

        return run

    return {
        "eager": eager,
        "torchscript (raw)": raw(scripted),
        "torchscript (load)": lambda: loaded["torchscript"](*sample),
        "pt2 (raw)": raw(program),
        "pt2 (load)": lambda: loaded["pt2"](*sample),
        "onnxruntime (raw session)": lambda: session.run(None, feed),
        "onnx (load)": lambda: loaded["onnx"](*numpy_sample),
    }


def bench_model(name: str, repeats: int, threads: int) -> list[dict[str, Any]]:
    """Export ``name`` once, then time every runner at both batch sizes."""
    build, make_sample, batches, options = MODELS[name]
    torch.manual_seed(0)
    model = build().eval()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        manifest = export(model, make_sample(2), folder, "model", formats=["onnx", "torchscript", "pt2"], **options)
        failed = [a["format"] for a in manifest["artifacts"] if not a["ok"]]
        if failed:
            raise RuntimeError(f"{name}: {failed} did not verify")
        for batch in batches:
            runners = _runners(model, make_sample(batch), Path(folder), threads)
            for runtime, run in runners.items():
                times = _timed(run, repeats)
                rows.append({"model": name, "batch": batch, "runtime": runtime, "times": times})
    return rows


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Latency per call (same thread count everywhere)")
    for column in ("model", "batch", "runtime", "median ms", "p90 ms", "items/s", "eager / this", "over raw µs"):
        table.add_column(column, justify="right" if column not in ("model", "runtime") else "left")
    medians = {(r["model"], r["batch"], r["runtime"]): statistics.median(r["times"]) for r in rows}
    for r in rows:
        key = (r["model"], r["batch"])
        median = medians[(*key, r["runtime"])]
        p90 = float(np.percentile(r["times"], 90))
        raw_name = r["runtime"].replace("(load)", "(raw)").replace("onnx (raw)", "onnxruntime (raw session)")
        overhead = ""
        if r["runtime"].endswith("(load)"):
            overhead = f"{(median - medians[(*key, raw_name)]) * 1e6:+.1f}"
        table.add_row(
            r["model"],
            str(r["batch"]),
            r["runtime"],
            f"{median * 1e3:.3f}",
            f"{p90 * 1e3:.3f}",
            f"{r['batch'] / median:,.0f}",
            f"{medians[(*key, 'eager')] / median:.2f}x",
            overhead,
        )
    return table


def main() -> None:
    """Time every model and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    rows = [row for name in args.models for row in bench_model(name, args.repeats, args.threads)]
    Console(width=140).print(_table(rows))
    print("python", sys.version.split()[0], "| torch", torch.__version__, "| threads", args.threads)


if __name__ == "__main__":
    main()
