"""The model's own validation metrics per artifact: real fits, the module's own validation_step and self.log."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from digits import DigitsMLP, loaders
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from lightning_deploy import ConfigurationError, ModelExport


class CountValidationBatches(Callback):
    """How many validation batches the user's callbacks saw (the fit's own, and nothing of the export's)."""

    def __init__(self) -> None:
        self.seen = 0

    def on_validation_batch_end(self, *args, **kwargs):
        self.seen += 1


def _fit(root: Path, model: pl.LightningModule, export: ModelExport, *callbacks: Callback, epochs: int = 3):
    pl.seed_everything(0)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    trainer = pl.Trainer(
        default_root_dir=root, max_epochs=epochs, accelerator="cpu", logger=CSVLogger(root), enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=[ModelCheckpoint(dirpath=root / "checkpoints", monitor="val_acc", mode="max"), export, *callbacks],
    )  # fmt: skip
    trainer.fit(model, *loaders())
    return trainer


def test_every_logged_metric_is_recorded_for_eager_and_each_artifact_and_shown(tmp_path):
    counter = CountValidationBatches()
    export = ModelExport(formats=["onnx", "torchscript", "onnx-int8"], validate=True)
    trainer = _fit(tmp_path, DigitsMLP(), export, counter)
    manifest = export.manifest
    assert manifest["ok"], [a["error"] for a in manifest["artifacts"]]
    metrics = manifest["metrics"]
    assert set(metrics) == {"val_loss", "val_acc"}
    for values in metrics.values():
        assert set(values) == {"eager", "onnx", "torchscript", "onnx-int8"}
        for fmt in ("onnx", "torchscript"):
            assert values[fmt] == pytest.approx(values["eager"], abs=1e-4)
        assert values["onnx-int8"] == pytest.approx(values["eager"], abs=0.02)
    # eager's metrics are the fit's own last validation: the same loop, the same batches, the best (last) weights
    assert manifest["validation"]["batches"] == 2 and manifest["validation"]["notes"] == []
    logged = trainer.callback_metrics
    assert metrics["val_acc"]["eager"] == pytest.approx(float(logged["val_acc"]), abs=1e-6)
    assert metrics["val_loss"]["eager"] == pytest.approx(float(logged["val_loss"]), abs=1e-5)
    # nothing reached the user's callbacks or logger a second time: 3 epochs of 2 batches, 3 rows of val_acc
    assert counter.seen == 3 * 2
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("val_acc")]
    assert len(rows) == 3
    # and show prints them
    manifest_file = Path(trainer.checkpoint_callback.best_model_path).with_suffix(".export.json")
    assert json.loads(manifest_file.read_text())["metrics"] == metrics
    shown = subprocess.run([sys.executable, "-m", "lightning_deploy.cli", "show", str(manifest_file)],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    line = next(line for line in shown.stdout.splitlines() if line.startswith("metric val_acc:"))
    assert (
        f"eager {metrics['val_acc']['eager']:.6g}" in line
        and f"onnx-int8 {metrics['val_acc']['onnx-int8']:.6g}" in line
    )


class OutlierUnit(DigitsMLP):
    """A classifier with one hidden unit held at 1000 whose connection to the head is frozen at zero.

    Eager never feels the unit. int8 does: activations are quantised per tensor, so the head's
    input gets one scale sized for 1000, and the other hidden units (0 to a few) round to a
    handful of levels - the "outlier feature" that int8 is known to break on.
    """

    def __init__(self) -> None:
        super().__init__(hidden=65)
        with torch.no_grad():
            self.net[0].weight[64].zero_()
            self.net[0].bias[64] = 1000.0
            self.net[2].weight[:, 64].zero_()
        frozen = torch.ones_like(self.net[2].weight)
        frozen[:, 64] = 0
        self.net[2].weight.register_hook(lambda grad: grad * frozen)


def test_an_artifact_that_passes_a_loose_numeric_check_but_moves_the_metric_is_not_ok(tmp_path):
    # the user's loose int8 tolerance lets the damaged file through the numeric checks ...
    export = ModelExport(formats=["onnx", "onnx-int8"], int8_rtol=2.0, check_batches=2)
    _fit(tmp_path, OutlierUnit(), export)
    onnx, int8 = export.manifest["artifacts"]
    assert int8["verified"] and int8["checks_passed"] == len(int8["checks"]) == 5
    metrics = export.manifest["metrics"]["val_acc"]
    assert metrics["onnx"] == pytest.approx(metrics["eager"], abs=1e-6) and onnx["ok"]
    # ... and the model's own accuracy says what it is worth
    assert metrics["eager"] - metrics["onnx-int8"] > 0.1, metrics
    assert not int8["ok"] and not export.manifest["ok"]
    assert "the model's own metrics moved with onnx-int8" in int8["error"]
    assert f"val_acc {metrics['onnx-int8']:.6g} vs eager {metrics['eager']:.6g} (tolerance 0.02)" in int8["error"]


class CallsTheNetDirectly(DigitsMLP):
    """validation_step goes around forward (which a user has made something else: calibrated probabilities)."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(pixels) / 2.0, -1)

    def validation_step(self, batch, batch_idx):
        pixels, labels = batch
        logits = self.net(pixels)
        self.log("val_loss", nn.functional.cross_entropy(logits, labels))
        self.log("val_acc", (logits.argmax(-1) == labels).float().mean())


def test_a_validation_step_that_never_calls_forward_gets_no_artifact_metric_and_says_why(tmp_path):
    export = ModelExport(formats=["onnx"], validate=True)
    _fit(tmp_path, CallsTheNetDirectly(), export, epochs=1)
    manifest = export.manifest
    assert manifest["ok"]
    assert set(manifest["metrics"]["val_acc"]) == {"eager"}  # never eager's numbers under the artifact's name
    (note,) = manifest["validation"]["notes"]
    assert "validation_step never calls CallsTheNetDirectly.forward" in note and "no metric is recorded" in note


def test_validate_false_records_no_metrics_and_bad_settings_are_refused_at_construction(tmp_path):
    export = ModelExport(formats=["onnx"], validate=False)
    _fit(tmp_path, DigitsMLP(), export, epochs=1)
    assert "metrics" not in export.manifest
    for bad, message in [({"validate": "yes"}, "validate='yes'"), ({"validate_batches": 0}, "validate_batches=0"),
                         ({"metric_tolerance": -1}, "metric_tolerance=-1"),
                         ({"metric_tolerance": {"val_acc": "x"}}, "metric_tolerance=")]:  # fmt: skip
        with pytest.raises(ConfigurationError, match=message):
            ModelExport(**bad)
