"""The GPU check: export where the model lives, ``load(device="cuda")``, AOTInductor, latency.

Run on a CUDA machine from the repository root (``python tools/machines/gpu_check.py [--doc PATH]``):

1. trains the examples' digits MLP with ``accelerator="gpu"`` and ``ModelExport(formats=
   [torchscript, onnx, pt2, aoti])``; every artifact's manifest entry (ok, device, difference);
2. exports torchvision's resnet18 (weights=None) on CUDA in the same formats;
3. loads every artifact of both with ``device="cuda"`` (ONNX only where ONNX Runtime has its
   CUDA provider; otherwise the ``LoadError`` is shown) and compares with eager on the GPU at
   a batch the export never saw, checking that the outputs live on the GPU;
4. runs ``benchmarks/runtime.py --device cuda`` (batch 1 and 32; ``--doc`` writes its tables).

Prints everything it checks and exits 1 if a check failed. Asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "examples"), str(ROOT / "benchmarks")]

from lightning_deploy import LoadError, load  # noqa: E402

FORMATS = ["torchscript", "onnx", "pt2", "aoti"]
FAILURES: list[str] = []
ATOL, RTOL = 1e-4, 1e-3  # export()'s defaults: rtol is relative to the output's largest magnitude


def within(diff: float, want: torch.Tensor) -> bool:
    """The export's own rule: ``diff <= atol + rtol * max|eager|``."""
    return diff <= ATOL + RTOL * want.abs().max().item()


def check(condition: bool, what: str) -> None:
    """Print one check's outcome; remember failures for the exit status."""
    print(f"  [{'ok' if condition else 'FAIL'}] {what}", flush=True)
    if not condition:
        FAILURES.append(what)


def show_manifest(manifest: dict[str, Any]) -> None:
    """One line per artifact: ok, device, runtime, difference, shapes, timings, error."""
    for a in manifest["artifacts"]:
        seconds = a["attempts"][-1]["seconds"] if a["attempts"] else {}
        print(f"  {a['format']:<12} ok={a['ok']!s:<5} device={a.get('device')!s:<6} runtime={a['runtime']}"
              f" max_abs_diff={a['max_abs_diff']} shapes={a['checked_shapes']} seconds={seconds}"
              f" error={(a['error'] or '')[:300]} warnings={[w[:200] for w in a['warnings']]}", flush=True)  # fmt: skip


def check_loads(manifest_path: Path, eager: torch.nn.Module, sample: torch.Tensor) -> None:
    """Every artifact through load(device="cuda"), against eager on the GPU."""
    import onnxruntime as ort

    with torch.no_grad():
        want = eager(sample.cuda())
    for fmt in FORMATS:
        if fmt == "onnx" and "CUDAExecutionProvider" not in ort.get_available_providers():
            try:
                load(manifest_path, format=fmt, device="cuda")
                check(False, "onnx: load(device='cuda') should refuse an ONNX Runtime without CUDA")
            except LoadError as err:
                check("CUDAExecutionProvider" in str(err), f"onnx: load(device='cuda') refused: {err}")
            cpu = load(manifest_path, format=fmt, device="cpu")
            got = cpu(sample.cpu())
            diff = (got - want.cpu()).abs().max().item()
            check(within(diff, want), f"onnx on the CPU matches eager on the GPU: max diff {diff:.2e}")
            continue
        try:
            loaded = load(manifest_path, format=fmt, device="cuda")
            start = time.perf_counter()
            got = loaded(sample.cpu())  # CPU inputs are moved to the GPU
            torch.cuda.synchronize()
            default = load(manifest_path, format=fmt)
        except Exception as err:  # noqa: BLE001 - reported as a failed check; the others go on
            check(False, f"{fmt}: load(device='cuda') and a call: {type(err).__name__}: {str(err)[:400]}")
            continue
        diff = (got - want).abs().max().item()
        check(got.device.type == "cuda" and loaded.device == "cuda" and within(diff, want),
              f"{fmt}: load(device='cuda') ran on {loaded.device}, output on {got.device}, batch {sample.shape[0]},"
              f" max diff {diff:.2e} ({(time.perf_counter() - start) * 1e3:.1f} ms first call)")  # fmt: skip
        check(default.device == "cuda", f"{fmt}: load() without device= runs on the recorded device ({default.device})")


def train_digits(root: Path) -> None:
    """Fit on the GPU with ModelExport; check every artifact and load it on the GPU."""
    import lightning.pytorch as pl
    from digits import DigitsData, DigitsMLP
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_deploy import ModelExport

    print("\n== 1. digits MLP trained on the GPU, ModelExport at fit end", flush=True)
    torch.manual_seed(0)
    model = DigitsMLP()
    checkpoints = ModelCheckpoint(dirpath=root, monitor="val_loss")
    callback = ModelExport(formats=FORMATS)
    trainer = pl.Trainer(accelerator="gpu", devices=1, max_epochs=3, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[checkpoints, callback])  # fmt: skip
    trainer.fit(model, datamodule=DigitsData())
    manifest = callback.manifest
    show_manifest(manifest)
    check(next(model.parameters()).device.type == "cpu", "the trainer's model is left where Lightning put it")
    for a in manifest["artifacts"]:
        check(a["ok"], f"digits {a['format']}: verified ({a['device']})")
        if a["format"] != "onnx":
            check(a["device"] == "cuda", f"digits {a['format']}: exported and verified on cuda")
    best = DigitsMLP.load_from_checkpoint(checkpoints.best_model_path, map_location="cuda").eval()
    stem = Path(checkpoints.best_model_path).stem
    check_loads(root / f"{stem}.export.json", best, torch.rand(7, 64))


def export_resnet(root: Path) -> None:
    """Export resnet18 where it lives (CUDA); check every artifact and load it on the GPU."""
    import torchvision

    from lightning_deploy import export

    print("\n== 2. resnet18 (weights=None) exported on CUDA", flush=True)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).cuda().eval()
    start = time.perf_counter()
    manifest = export(model, torch.randn(2, 3, 224, 224, device="cuda"), root, "resnet18", formats=FORMATS)
    print(f"  export of four formats: {time.perf_counter() - start:.1f} s", flush=True)
    show_manifest(manifest)
    for a in manifest["artifacts"]:
        check(a["ok"], f"resnet18 {a['format']}: verified ({a['device']})")
    check_loads(root / "resnet18.export.json", model, torch.randn(3, 3, 224, 224))


def main() -> None:
    """Run the three checks and the GPU latency table; exit 1 if a check failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--doc", type=Path, default=None, help="write the latency tables into this page")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--skip-benchmark", action="store_true")
    parser.add_argument("--models", nargs="*", default=["mlp", "resnet18", "transformer"], help="benchmarked models")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if not torch.cuda.is_available():
        sys.exit("gpu_check: torch sees no CUDA device; run this on a GPU machine.")
    import onnxruntime as ort

    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, onnxruntime {ort.__version__}"
          f" providers {ort.get_available_providers()}, cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}",
          flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        train_digits(Path(folder) / "digits")
        export_resnet(Path(folder) / "resnet")
    if not args.skip_benchmark:
        print("\n== 3. latency on the GPU (benchmarks/runtime.py --device cuda)", flush=True)
        import runtime

        doc = ["--doc", str(args.doc)] if args.doc else []
        sys.argv = ["runtime.py", "--device", "cuda", "--repeats", str(args.repeats), "--models", *args.models, *doc]
        runtime.main()
    print(f"\ngpu_check: {len(FAILURES)} failed check(s)" + "".join(f"\n  - {f}" for f in FAILURES), flush=True)
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
