"""Export cost at fit end: what ModelExport adds to ``fit`` for resnet18, against the bare calls it cannot avoid.

Run: ``.venv/bin/python benchmarks/export_cost.py [--doc docs/performance.md]`` (prints tables;
asserts nothing). A LightningModule around torchvision's resnet18 trains one short epoch with
``ModelCheckpoint`` and ``ModelExport`` (default formats: TorchScript and ONNX, verified);
the callback's ``on_fit_end`` and its preflight in ``setup`` are timed. Then, in the same
process, the bare calls that any verified export of that checkpoint needs are timed one by
one: load the checkpoint, run eager at the two checked shapes, ``torch.jit.trace`` + save +
``torch.jit.load`` + run at both shapes, ``torch.onnx.export`` with the exporter the manifest
recorded + one ONNX Runtime session + run at both shapes. A warm-up export of a small network
by both paths comes first, so that neither pays torch's one-time imports and initialisation.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import onnxruntime as ort
import torch
import torchvision
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.core.module import _jit_is_scripting
from perfdoc import argument_parser, publish
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_deploy import ModelExport, export


class ResNetClassifier(pl.LightningModule):
    """torchvision's resnet18 (weights=None, 10 classes), exported at 2x3x224x224."""

    def __init__(self, width: int = 224) -> None:
        super().__init__()
        self.net = torchvision.models.resnet18(weights=None, num_classes=10)
        self.example_input_array = torch.randn(2, 3, width, width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.net(images)

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        """Cross-entropy on one batch."""
        images, labels = batch
        return nn.functional.cross_entropy(self(images), labels)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Plain SGD."""
        return torch.optim.SGD(self.parameters(), lr=0.01)


class TimedExport(ModelExport):
    """ModelExport with the wall time of its two hooks recorded (the hooks themselves unchanged)."""

    seconds: dict[str, float]

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Time the preflight."""
        start = time.perf_counter()
        super().setup(trainer, pl_module, stage)
        self.seconds = {"setup (preflight)": time.perf_counter() - start}

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Time the export at fit end."""
        start = time.perf_counter()
        super().on_fit_end(trainer, pl_module)
        self.seconds["on_fit_end (export + verify)"] = time.perf_counter() - start


def _fit(root: Path) -> tuple[TimedExport, Path]:
    """One short epoch of resnet18 on random 112x112 images; returns the callback and the checkpoint."""
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.randn(16, 3, 112, 112, generator=generator), torch.randint(0, 10, (16,), generator=generator)
    callback = TimedExport()
    trainer = pl.Trainer(default_root_dir=root, max_epochs=1, accelerator="cpu", devices=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[ModelCheckpoint(dirpath=root), callback])  # fmt: skip
    trainer.fit(ResNetClassifier(), DataLoader(TensorDataset(images, labels), batch_size=8))
    return callback, Path(trainer.checkpoint_callback.best_model_path)


def _bare_calls(ckpt: Path, folder: Path, onnx_method: str) -> dict[str, float]:
    """The calls a hand-written verified export of ``ckpt`` makes, each timed."""
    steps: dict[str, float] = {}

    def step(name: str, run: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        result = run()
        steps[name] = steps.get(name, 0.0) + time.perf_counter() - start
        return result

    def load_model() -> nn.Module:
        model = ResNetClassifier()
        model.load_state_dict(torch.load(ckpt, weights_only=False)["state_dict"])
        return model.eval()

    model = step("load checkpoint", load_model)
    samples = [torch.randn(2, 3, 224, 224), torch.randn(3, 3, 224, 224)]
    with torch.no_grad(), _jit_is_scripting():  # Lightning's own switch for tracing a LightningModule
        expected = step("eager at 2 shapes", lambda: [model(s).numpy() for s in samples])
        traced = step("jit.trace", lambda: torch.jit.trace(model, samples[0], check_trace=False))
        step("save TorchScript", lambda: traced.save(str(folder / "bare.pt")))
        loaded = step("jit.load", lambda: torch.jit.load(str(folder / "bare.pt")))
        got = step("TorchScript at 2 shapes", lambda: [loaded(s).numpy() for s in samples])
        if onnx_method == "export":
            dims = ({0: torch.export.Dim.DYNAMIC},)
            onnx_call = lambda: torch.onnx.export(model, (samples[0],), str(folder / "bare.onnx"), dynamo=True,  # noqa: E731
                                                  dynamic_shapes=dims)  # fmt: skip
        else:
            onnx_call = lambda: torch.onnx.export(model, (samples[0],), str(folder / "bare.onnx"), dynamo=False,  # noqa: E731
                                                  input_names=["x"], dynamic_axes={"x": {0: "batch"}})  # fmt: skip
        with contextlib.redirect_stdout(io.StringIO()):  # the dynamo exporter prints its progress
            step(f"torch.onnx.export ({onnx_method})", onnx_call)
    cpu = ["CPUExecutionProvider"]
    session = step("ONNX Runtime session", lambda: ort.InferenceSession(str(folder / "bare.onnx"), providers=cpu))
    name = session.get_inputs()[0].name
    got += step("ONNX Runtime at 2 shapes", lambda: [session.run(None, {name: s.numpy()})[0] for s in samples])
    step("compare", lambda: [np.abs(g - w).max() for g, w in zip(got, expected + expected)])
    return steps


def _warm_up(folder: Path) -> None:
    """Both paths once on a small network: torch.export, the ONNX exporters and ORT initialised."""
    small = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    export(small.eval(), torch.randn(2, 3, 32, 32), folder, "warmup")
    torch.onnx.export(small, (torch.randn(2, 3, 32, 32),), str(folder / "warm.onnx"), dynamo=True)
    torch.jit.trace(small, torch.randn(2, 3, 32, 32)).save(str(folder / "warm.pt"))


def _our_split(manifest: dict[str, Any]) -> dict[str, float]:
    split = {}
    for artifact in manifest["artifacts"]:
        for attempt in artifact["attempts"]:
            for step, seconds in attempt["seconds"].items():
                key = f"{artifact['format']}: {step} ({attempt['method']})"
                split[key] = split.get(key, 0.0) + seconds
    return split


def main() -> None:
    """Fit with the callback, then the bare calls; print the totals and both splits."""
    parser = argument_parser(__doc__)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    pl.seed_everything(0, verbose=False)
    with tempfile.TemporaryDirectory() as root:
        _warm_up(Path(root))
        callback, ckpt = _fit(Path(root))
        manifest = callback.manifest
        onnx_method = next(a["method"] for a in manifest["artifacts"] if a["format"] == "onnx")
        bare = _bare_calls(ckpt, Path(root), onnx_method)
    ours = callback.seconds["on_fit_end (export + verify)"]
    split = _our_split(manifest)
    rest = ours - sum(split.values())
    bare_total = sum(bare.values())
    rows = [["ModelExport.on_fit_end", f"{ours:.2f}", f"{ours / bare_total:.2f}x"],
            ["bare calls, summed", f"{bare_total:.2f}", "1.00x"],
            ["(preflight in setup, before training)", f"{callback.seconds['setup (preflight)']:.2f}",
             f"{callback.seconds['setup (preflight)'] / bare_total:.2f}x"]]  # fmt: skip
    ok = all(a["ok"] for a in manifest["artifacts"])
    publish(
        "export-cost",
        "Export cost at fit end: resnet18, TorchScript + ONNX, verified at two shapes",
        ["what", "seconds", "vs bare calls"],
        rows,
        [f"Every artifact ok: {ok}; ONNX by method '{onnx_method}'; {args.threads} torch threads.",
         "Bare calls: " + ", ".join(f"{k} {v:.2f} s" for k, v in bare.items()) + ".",
         "ModelExport's split: " + ", ".join(f"{k} {v:.2f} s" for k, v in split.items())
         + f", the rest (checkpoint load, eager at both shapes, manifest, sha256, report) {rest:.2f} s."],
        args.doc,
    )  # fmt: skip


if __name__ == "__main__":
    main()
