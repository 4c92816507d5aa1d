"""Inference latency side by side: eager, each artifact raw in its runtime, and each through ``load()``.

Run: ``.venv/bin/python benchmarks/runtime.py [--repeats 30] [--models mlp ...] [--device cuda]
[--doc docs/performance.md]`` (prints tables; asserts nothing). Every runtime uses the same
number of threads (``--threads``, default 2). ``--device cuda`` exports on the GPU and times
the torch artifacts there (TorchScript, pt2, AOTInductor; ONNX where ONNX Runtime has CUDA),
synchronising after every call, at batch 1 and 32. Per model and batch size it prints the
latency (the fastest round's mean) and p90, the throughput, the speed-up over eager, and ``load()``'s overhead
over the raw runtime (per call, in microseconds); then a summary: the fastest artifact
verified at the default tolerance against eager, AOTInductor, and int8.
"""

from __future__ import annotations

import dataclasses
import json
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
from perfdoc import NOT_HERE, argument_parser, publish, unavailable
from torch import nn

from lightning_deploy import export, load
from lightning_deploy.exporting.methods.onnx_passes import vnni_flag
from lightning_deploy.runtime.placement import cpu_features

FORMATS = ["onnx", "torchscript", "pt2", "aoti", "onnx-optimized", "onnx-int8", "executorch", "openvino",
           "openvino-bf16"]  # fmt: skip
LOWER_PRECISION = ("onnx-int8", "openvino-bf16")  # verified at their own tolerances: not the fastest fp32
# Formats this machine cannot make (bf16 on a CPU without it, aoti without a compiler), with the product's reason.
NOT_MADE = unavailable(FORMATS)
ONNX_FILES = {"onnx": "model.onnx", "onnx-optimized": "model.optimized.onnx", "onnx-int8": "model.int8.onnx"}
GPU_BATCHES = (1, 32)


def formats_for(device: str) -> list[str]:
    """What is timed on ``device``: everything on the CPU; on a GPU the torch artifacts, and ONNX with CUDA.

    Less what this machine cannot make (:data:`NOT_MADE`), whose rows say why instead.
    """
    if device == "cpu":
        return [f for f in FORMATS if f not in NOT_MADE]
    import onnxruntime as ort

    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    return [f for f in ("torchscript", "pt2", "aoti", *(["onnx"] if has_cuda else [])) if f not in NOT_MADE]


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
    "mlp": (DictMLP, _mlp_sample, (1, 256), {"executorch_bounds": {"batch": 256}}),
    "resnet18": (_resnet18, lambda b: (torch.randn(b, 3, 224, 224),), (1, 32), {}),
    "transformer": (Tagger, _tagger_sample, (1, 16), {"dynamic_axes": {"x": {1: "seq"}, "padding_mask": {1: "seq"}}}),
}


def _timed(runners: dict[str, Callable[[], Any]], repeats: int, rounds: int = 7) -> dict[str, list[list[float]]]:
    """Seconds of every call of every runner, by round: ``rounds`` rounds, in each a block of calls per runner.

    Blocks, not calls, alternate: ONNX Runtime's and torch's worker threads spin for a while
    after each call and would take the CPU from whichever runner comes next (measured here:
    eager resnet18 three times slower when interleaved call by call with six sessions), so
    each block starts after a short pause and a warm-up call. Rounds spread this shared
    machine's drift in speed (seen: the same eager MLP at 0.08 and 0.18 ms minutes apart) over
    all runners alike; a runner's time is its fastest round's mean (timeit's rule: noise on this
    shared machine only adds time, seen here as the same runner 1.5x slower for minutes).
    """
    times: dict[str, list[list[float]]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            time.sleep(0.2)
            run()
            block = []
            for _ in range(max(repeats // rounds, 1)):
                start = time.perf_counter()
                run()
                block.append(time.perf_counter() - start)
            times[name].append(block)
    return times


OVERHEAD_BLOCKS = 40  # per path: the more blocks, the less the fastest one depends on when the machine was busy


def _paired_overhead(folder: Path, sample: tuple, threads: int, torch_io: bool) -> tuple[float, float]:  # CPU only
    """``load()``'s per-call time over its own ONNX Runtime session (numpy in and out), alternating timed blocks.

    ``torch_io``: ``load()`` is called with torch tensors (and returns torch tensors), as a torch
    user calls it; else with numpy arrays, as the session is.

    One session serves both, so what differs is exactly the work ``load()`` adds (binding,
    flattening, checks, rebuilding the output structure). Forty alternating blocks spread the
    machine's drift over both; within a block (about 50 ms of calls) each path stays hot, as in
    a serving loop. Per path the fastest block's mean is taken (``timeit``'s rule: noise only
    ever adds time, and on this shared 2-core machine it adds tens of microseconds at random).
    Returns (difference in s, ratio).
    """
    model = load(folder / "model.export.json", format="onnx", threads=threads)
    numpy_sample = torch.utils._pytree.tree_map(lambda t: t.numpy(), sample)
    leaves = dict(zip(model.input_names, (t.numpy() for t in torch.utils._pytree.tree_leaves(sample))))
    feed = {i.name: leaves[i.name] for i in model.session.get_inputs()}
    names = [o.name for o in model.session.get_outputs()]
    call = (lambda: model(*sample)) if torch_io else (lambda: model(*numpy_sample))
    return _paired(call, lambda: model.session.run(names, feed))


def _paired(load_call: Callable[[], Any], raw_call: Callable[[], Any]) -> tuple[float, float]:
    """Seconds and ratio of ``load_call`` over ``raw_call``: fastest of 40 alternating blocks of about 50 ms each."""
    calls = {"load": load_call, "raw": raw_call}
    start = time.perf_counter()
    raw_call()
    block = max(1, round(0.05 / (time.perf_counter() - start)))
    best = {name: float("inf") for name in calls}
    for _ in range(OVERHEAD_BLOCKS):
        for name, run in calls.items():
            run()
            start = time.perf_counter()
            for _ in range(block):
                run()
            best[name] = min(best[name], (time.perf_counter() - start) / block)
    return best["load"] - best["raw"], best["load"] / best["raw"]


TORCH_RUNTIMES = ("torchscript", "pt2", "aoti")
TORCH_OVERHEAD_MODELS = ("mlp",)  # where a call is short enough for microseconds to show above the noise


def _torch_overheads(folder: Path, sample: tuple) -> dict[str, tuple[float, float]]:  # CPU only
    """``load()``'s per-call time over each torch artifact's raw module (run under ``inference_mode``), paired.

    The raw module as its user runs it: loaded by torch itself, the flat tensors passed, under
    ``torch.inference_mode()``; ``load()`` called bare with the structured sample (it needs no
    torch context), torch tensors in and out.
    """
    leaves = [t for t in torch.utils._pytree.tree_leaves(sample) if isinstance(t, torch.Tensor)]
    modules = _raw_modules(folder, "cpu")
    found = {}
    for fmt in modules:
        model, module = load(folder / "model.export.json", format=fmt), modules[fmt]

        def raw(module: Callable[..., Any] = module) -> Any:
            with torch.inference_mode():
                return module(*leaves)

        found[fmt] = _paired(lambda model=model: model(*sample), raw)
    return found


def _raw_modules(folder: Path, device: str) -> dict[str, Callable[..., Any]]:
    """The torch artifacts loaded by torch itself: TorchScript, the ``.pt2`` program's module, the AOTInductor model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.load(str(folder / "model.torchscript.pt"), map_location=device)
    # torch.export.load gives CPU weights even for a program saved from a GPU: re-home it, as load() does
    from torch._inductor import aoti_load_package
    from torch.export.passes import move_to_device_pass

    program = move_to_device_pass(torch.export.load(str(folder / "model.pt2")), device).module()
    modules = {"torchscript": scripted, "pt2": program}
    if "aoti" not in NOT_MADE:
        modules["aoti"] = aoti_load_package(str(folder / "model.aoti.pt2"))
    return modules


def _runners(model: nn.Module, sample: tuple, folder: Path, threads: int, device: str) -> dict[str, Callable[[], Any]]:
    """Every way to run ``model`` on ``sample`` (on ``device``), each ready to call; GPU calls synchronise."""
    import onnxruntime as ort

    formats = formats_for(device)
    manifest = folder / "model.export.json"
    loaded = {fmt: load(manifest, format=fmt, threads=threads if fmt in ONNX_FILES else None, device=device)
              for fmt in formats}  # fmt: skip
    leaves = [t for t in torch.utils._pytree.tree_leaves(sample) if isinstance(t, torch.Tensor)]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    providers = ["CPUExecutionProvider"] if device == "cpu" else ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def session(fmt: str) -> Callable[[], Any]:
        opened = ort.InferenceSession(str(folder / ONNX_FILES[fmt]), options, providers=providers)
        feed = {i.name: leaves[loaded[fmt].input_names.index(i.name)].cpu().numpy() for i in opened.get_inputs()}
        return lambda: opened.run(None, feed)

    raw = _raw_modules(folder, device)
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)

    def timed_call(call: Callable[[], Any], inference_mode: bool = True) -> Callable[[], Any]:
        """``call`` as its user runs it: eager and the raw torch modules under inference_mode, load() bare."""

        def run() -> Any:
            if not inference_mode:  # load() needs no torch context (its torch runtimes take no_grad themselves)
                out = call()
            else:
                with torch.inference_mode():  # how a user serving eager runs it
                    out = call()
            sync()
            return out

        return run

    runners = {"eager": timed_call(lambda: model(*sample))}
    for fmt, module in raw.items():
        runners[f"{fmt} (raw)"] = timed_call(lambda module=module: module(*leaves))
        runners[f"{fmt} (load)"] = timed_call(lambda fmt=fmt: loaded[fmt](*sample), inference_mode=False)
    for fmt in ONNX_FILES:
        if fmt in formats:
            runners[f"{fmt} (raw)"] = session(fmt)
            runners[f"{fmt} (load)"] = timed_call(lambda fmt=fmt: loaded[fmt](*sample), inference_mode=False)
    planned = json.loads(manifest.read_text())["artifacts"]
    bound = min((int(size) for a in planned if a["format"] == "executorch" for dims in a["bounds"].values()
                 for size in dims.values()), default=None)  # fmt: skip
    if "executorch" in formats and (bound is None or leaves[0].shape[0] <= bound):  # past its bound: not timed
        from executorch.runtime import Runtime

        method = Runtime.get().load_program(str(folder / "model.pte")).load_method("forward")
        runners["executorch (raw)"] = timed_call(lambda: method.execute(leaves))
        runners["executorch (load)"] = timed_call(lambda: loaded["executorch"](*sample), inference_mode=False)
    for fmt, precision, ir in (("openvino", "f32", "model.openvino.xml"), ("openvino-bf16", "bf16",
                                                                             "model.bf16.openvino.xml")):  # fmt: skip
        if fmt in formats:
            import openvino

            config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads}
            compiled_ir = openvino.Core().compile_model(str(folder / ir), "CPU", config)
            arrays = [t.numpy() for t in leaves]
            # OpenVINO's own shortest call
            runners[f"{fmt} (raw)"] = lambda compiled_ir=compiled_ir, arrays=arrays: compiled_ir(arrays)
            runners[f"{fmt} (load)"] = timed_call(lambda fmt=fmt: loaded[fmt](*sample), inference_mode=False)
    return runners


def _labelled(model: nn.Module, make_sample: Callable[[int], tuple], device: str) -> list[tuple[tuple, torch.Tensor]]:
    """Eight batches of 4 labelled by the model's own top-1 (for a classifier; the tagger's labels are a stand-in).

    ``export(accuracy_data=...)`` calibrates static int8 on them and records the top-1 agreement.
    """
    batches = []
    for seed in range(8):
        torch.manual_seed(100 + seed)
        sample = torch.utils._pytree.tree_map(lambda t: t.to(device), make_sample(4))
        with torch.inference_mode():
            out = model(*sample)
        scores = out.logits if hasattr(out, "logits") else out
        labels = scores.argmax(-1) if scores.dim() == 2 else torch.zeros(4, dtype=torch.long)
        batches.append((sample, labels.cpu()))
    return batches


# Which int8 pass each model's artifact came from (static where it verifies, else dynamic), for the notes.
INT8_PASSES: dict[str, str] = {}
# Floating-point operations of one call, per (model, batch), for the compute-rate columns.
FLOPS: dict[tuple[str, int], int] = {}


def model_flops(model: nn.Module, sample: tuple) -> int:
    """The floating-point operations of one call: matrix products and convolutions, as ``FlopCounterMode`` counts.

    Counted with autograd on, so that ``nn.TransformerEncoderLayer`` takes its decomposed path:
    its fused inference kernel is not one of the operators the counter knows.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model(*sample)
    return counter.get_total_flops()


def gemm_rate(threads: int) -> float:
    """This machine's fp32 compute rate in practice: GFLOP/s of a 2048x2048 matrix product on ``threads`` threads.

    The best a float artifact can approach: a model's layers are smaller products than this one.
    """
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    best = float("inf")
    for _ in range(12):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * 2048**3 / best / 1e9


# Calls per runner, as multiples of --repeats: the fast models get more, so that their times
# of tens of microseconds are stable against the machine's noise.
REPEAT_SCALE = {"mlp": 20, "transformer": 4, "resnet18": 1}


def bench_model(name: str, repeats: int, threads: int, device: str = "cpu") -> list[dict[str, Any]]:
    """Export ``name`` once on ``device``, then time every runner at both batch sizes."""
    build, make_sample, batches, options = MODELS[name]
    repeats *= REPEAT_SCALE[name]
    torch.manual_seed(0)
    model = build().eval().to(device)
    on_device = lambda batch: torch.utils._pytree.tree_map(lambda t: t.to(device), make_sample(batch))  # noqa: E731
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        manifest = export(model, on_device(2), folder, "model", formats=formats_for(device),
                          accuracy_data=_labelled(model, make_sample, device), **options)  # fmt: skip
        failed = [a["format"] for a in manifest["artifacts"] if not a["ok"]]
        if failed:
            raise RuntimeError(f"{name}: {failed} did not verify")
        int8 = next((a for a in manifest["artifacts"] if a["format"] == "onnx-int8"), None)
        if int8 is not None:
            INT8_PASSES[name] = int8["derived"]["pass"].removeprefix("onnxruntime ")
        aoti = next((a for a in manifest["artifacts"] if a["format"] == "aoti"), None)
        compiled = f"; AOTInductor compiled in {aoti['attempts'][-1]['seconds']['compile']:.1f} s" if aoti else ""
        print(f"{name}: exported on {device}{compiled}", flush=True)
        for batch in batches if device == "cpu" else GPU_BATCHES:
            FLOPS[(name, batch)] = model_flops(model, on_device(batch))
            runners = _runners(model, on_device(batch), Path(folder), threads, device)
            for runtime, blocks in _timed(runners, repeats).items():
                rows.append({"model": name, "batch": batch, "runtime": runtime, "blocks": blocks,
                             "times": [seconds for block in blocks for seconds in block]})  # fmt: skip
            del runners  # their sessions and compiled modules are not in the overhead's way
            if device == "cpu":
                for torch_io, label in ((False, "numpy"), (True, "torch")):
                    overhead = _paired_overhead(Path(folder), make_sample(batch), threads, torch_io)
                    rows.append({"model": name, "batch": batch, "runtime": f"overhead {label}", "times": overhead})
                if name in TORCH_OVERHEAD_MODELS:
                    for fmt, overhead in _torch_overheads(Path(folder), on_device(batch)).items():
                        rows.append({"model": name, "batch": batch, "runtime": f"overhead {fmt}", "times": overhead})
    return rows


def _latency_rows(rows: list[dict[str, Any]], per_call: dict) -> list[list[str]]:
    """One row per runner; after each model and batch, a row for each format this machine could not make."""
    table = []
    for index, r in enumerate(rows):
        key = (r["model"], r["batch"])
        seconds = per_call[(*key, r["runtime"])]
        overhead = ""
        if r["runtime"].endswith("(load)"):
            overhead = f"{(seconds - per_call[(*key, r['runtime'].replace('(load)', '(raw)'))]) * 1e6:+.1f}"
        table.append([r["model"], str(r["batch"]), r["runtime"], f"{seconds * 1e3:.3f}",
                      f"{float(np.percentile(r['times'], 90)) * 1e3:.3f}", f"{r['batch'] / seconds:,.0f}",
                      f"{per_call[(*key, 'eager')] / seconds:.2f}x", overhead])  # fmt: skip
        if index + 1 == len(rows) or (rows[index + 1]["model"], rows[index + 1]["batch"]) != key:
            table += [[*map(str, key), fmt, NOT_HERE, "-", "-", "-", "-"] for fmt in NOT_MADE]
    return table


def _summary_rows(per_call: dict, overheads: dict) -> list[list[str]]:
    """Per model and batch: the fastest artifact through load() at the default tolerance, AOTInductor, int8.

    On a GPU there is neither int8 nor the ONNX overhead column (``-``).
    """
    table = []
    for model, batch in dict.fromkeys((m, b) for m, b, _ in per_call):
        eager = per_call[(model, batch, "eager")]
        loads = {r: t for (m, b, r), t in per_call.items() if (m, b) == (model, batch) and r.endswith("(load)")}
        best = min((r for r in loads if not r.startswith(LOWER_PRECISION)), key=loads.get)
        flops = FLOPS[(model, batch)]
        row = [model, str(batch), f"{eager * 1e3:.3f}", best, f"{loads[best] * 1e3:.3f}", f"{eager / loads[best]:.2f}x",
               f"{flops / loads[best] / 1e9:.1f}", f"{2 * flops / eager / 1e9:.1f}",
               *_versus(eager, loads.get("aoti (load)"))]  # fmt: skip
        if (model, batch, "numpy") in overheads:
            for kind in ("numpy", "torch"):
                over, ratio = overheads[(model, batch, kind)]
                row.append(f"{over * 1e6:+.1f} µs ({ratio:.3f}x)")
            torch_overheads = [overheads.get((model, batch, fmt)) for fmt in TORCH_RUNTIMES]
            timed = any(torch_overheads)  # the mlp only: TORCH_OVERHEAD_MODELS
            row.append(" / ".join(f"{o[0] * 1e6:+.1f}" if o else NOT_HERE for o in torch_overheads) + " µs"
                       if timed else "-")  # fmt: skip
            int8, bf16 = loads.get("onnx-int8 (load)"), loads.get("openvino-bf16 (load)")
            onnx = per_call[(model, batch, "onnx (load)")]
            row += [*_versus(eager, int8), f"{onnx / int8:.2f}x" if int8 else NOT_HERE,
                    *_versus(eager, bf16), f"{loads[best] / bf16:.2f}x" if bf16 else NOT_HERE]  # fmt: skip
        else:
            row += ["-"] * 9
        table.append(row)
    return table


def _versus(eager: float, seconds: float | None) -> list[str]:
    """An artifact's ms and eager's time over it; where this machine could not make it, says so in both."""
    return [f"{seconds * 1e3:.3f}", f"{eager / seconds:.2f}x"] if seconds else [NOT_HERE, NOT_HERE]


def _guard(per_call: dict, gemm: float) -> str:
    """The fp32 guard: resnet18's fastest fp32 artifact at its largest batch against the matrix product's rate."""
    batches = [b for m, b, _ in per_call if m == "resnet18"]
    if not batches:
        return "Guard: resnet18 not timed in this run."
    batch = max(batches)
    loads = {r: t for (m, b, r), t in per_call.items() if (m, b) == ("resnet18", batch) and r.endswith("(load)")}
    best = min((r for r in loads if not r.startswith(LOWER_PRECISION)), key=loads.get)
    rate = FLOPS[("resnet18", batch)] / loads[best] / 1e9
    verdict = "holds" if rate >= 0.95 * gemm else "FAILS"
    return (
        f"Guard (resnet18 fp32 at >= 95% of the matrix product's rate): {best} at batch {batch} runs"
        f" {rate:.0f} GFLOP/s, {rate / gemm:.0%} of {gemm:.0f}: {verdict}."
    )


def _executorch_threads() -> int:
    from executorch.extension.pybindings import portable_lib

    return portable_lib._threadpool_get_thread_count()


def _openvino_version() -> str:
    import openvino

    return openvino.__version__


def ort_version() -> str:
    """ONNX Runtime's version."""
    import onnxruntime

    return onnxruntime.__version__


def main() -> None:
    """Time every model; print (and with --doc write) the latency table and the summary."""
    parser = argument_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="export and time on this device")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    gemm = gemm_rate(args.threads)
    rows = [row for name in args.models for row in bench_model(name, args.repeats, args.threads, args.device)]
    gemm = max(gemm, gemm_rate(args.threads))  # before and after: the better of two, on a machine that drifts
    overheads = {(r["model"], r["batch"], r["runtime"].split()[1]): r.pop("times") for r in rows
                 if r["runtime"].startswith("overhead ")}  # fmt: skip
    rows = [r for r in rows if not r["runtime"].startswith("overhead ")]
    per_call = {(r["model"], r["batch"], r["runtime"]): min(map(statistics.fmean, r["blocks"])) for r in rows}
    threads = f"{args.threads} threads everywhere (torch.set_num_threads, ONNX Runtime intra-op)"
    gpu = args.device != "cpu"
    where = f" on {torch.cuda.get_device_name()} (CUDA, a synchronise after every call)" if gpu else ""
    if gpu:
        threads += f"; GPU: {torch.cuda.get_device_name()}, timed formats {formats_for(args.device)}"
    suffix = "-cuda" if gpu else ""
    models = (
        "Models: `mlp` is an MLP 64-32-10 with dict input and dataclass output; `transformer` a 2-layer"
        " TransformerEncoder (d=128, 4 heads, seq 64) with a padding mask; resnet18 at 224x224, weights=None."
    )
    cpu_notes = [
        "load()'s overhead: load() and a direct run() of the same ONNX Runtime session (numpy in and out),"
        f" {OVERHEAD_BLOCKS} alternating timed blocks of about 50 ms each; difference and ratio of the fastest"
        " blocks' per-call means (timeit's rule); load() called with numpy arrays, and with torch tensors (torch out)."
        " Over the module (mlp): the same pairing of load() (torch tensors in and out, no torch context) against the"
        " torch artifact's module loaded by torch itself and called with the flat tensors under inference_mode.",
        "Each runner as its user runs it: eager and the raw torch modules under torch.inference_mode() (1.6 µs a"
        " call here), load() bare (it needs no torch context; its torch runtimes take no_grad themselves);"
        " every load() runner takes and returns torch tensors; the raw ONNX Runtime sessions take numpy.",
        f"CPU: {cpu_features()}; onnxruntime {ort_version()}. int8 calibrated on 8 batches of 4 labelled by the"
        " model's own top-1: " + "; ".join(f"{m} {p}" for m, p in INT8_PASSES.items()) + ". The int8 columns"
        f" depend on VNNI (avx512_vnni or avx_vnni; {'this CPU has it' if vnni_flag() else 'this CPU has none'}):"
        " with it the weights are signed int8 and ONNX Runtime's integer products exact and faster; the bf16"
        " columns need avx512_bf16 or AMX (OpenVINO's BF16 capability).",
        *(
            f"{fmt} not made on this machine ({NOT_HERE} in the tables): ModelExport refuses it here, {reason}"
            for fmt, reason in NOT_MADE.items()
        ),
        "The int8 artifact is verified at its own tolerance (rtol 0.05), the bf16 one (OpenVINO's IR run in"
        " bfloat16, openvino-bf16) at bf16_rtol 0.02, so neither is a candidate for the fastest artifact at the"
        " default tolerance; 'fastest fp32 / bf16' is the bf16 artifact's speed-up over that fastest one.",
        _guard(per_call, gemm),
        f"ExecuTorch: XNNPACK delegate, its threadpool at {_executorch_threads()} threads (one per core, its"
        " default); OpenVINO: f32 (INFERENCE_PRECISION_HINT), load() with OpenVINO's default thread count (one per"
        f" core), raw with INFERENCE_NUM_THREADS={args.threads}; openvino {_openvino_version()}.",
    ]
    gpu_notes = [
        "On the GPU: exported and verified there (torch's defaults: cuDNN convolutions may use TF32), inputs"
        " already on the GPU; no int8 or ONNX overhead columns (CPU artifacts)."
    ]
    publish(
        f"runtime{suffix}-summary",
        f"Runtime{where}: the fastest verified artifact against eager, AOTInductor, load()'s overhead, int8",
        ["model", "batch", "eager ms", "fastest artifact (default tolerance)", "its ms", "eager / it",
         "its GFLOP/s", "2x eager needs GFLOP/s", "aoti ms",
         "eager / aoti", "load() over session, numpy", "load() over session, torch",
         "load() over module: torchscript / pt2 / aoti", "int8 ms", "eager / int8",
         "onnx / int8", "bf16 ms", "eager / bf16", "fastest fp32 / bf16"],
        _summary_rows(per_call, overheads),
        [f"{args.repeats} calls per runner (times " + ", ".join(f"{k} x{v}" for k, v in REPEAT_SCALE.items())
         + f") in seven rounds of one block per runner; its time is the fastest round's mean per call (timeit's"
         f" rule); {threads}.", models, *(gpu_notes if gpu else cpu_notes),
         "Compute rates: the floating-point operations of one call (torch's FlopCounterMode: matrix products and"
         " convolutions, two per multiply-add) per second. This machine's fp32 matrix product (2048x2048,"
         f" {args.threads} threads, best of 12 before and after the models) runs at {gemm:.0f} GFLOP/s: a float"
         " artifact whose '2x eager needs' exceeds that cannot be twice as fast as eager here, whatever the runtime."],
        args.doc,
    )  # fmt: skip
    publish(
        f"runtime{suffix}",
        f"Runtime{where}: latency per call, each artifact raw in its runtime and through load()",
        ["model", "batch", "runtime", "ms (fastest round)", "p90 ms", "items/s", "eager / this", "over raw µs"],
        _latency_rows(rows, per_call),
        [f"Python {sys.version.split()[0]}, torch {torch.__version__}; {threads}."],
        args.doc,
    )


if __name__ == "__main__":
    main()
