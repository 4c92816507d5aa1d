"""Checks beyond the export sample: the synthetic sample, the user's data, data-dependent output sizes."""

from __future__ import annotations

import os
import subprocess
import sys

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning_models import DigitsClassifier, digits_loaders
from torch import nn
from torch.utils.data import DataLoader

from lightning_deploy import ConfigurationError, ModelExport, StructureError, export, load
from lightning_deploy.exporting.verifying.checks import smaller_size
from lightning_deploy.serving.triton import write_model_repository


class ThresholdedTopK(nn.Module):
    """Keeps the best scores over a threshold, at most ``cap`` of them: how many depends on the values.

    A trace takes the count as a Python int (a TracerWarning) and bakes it in. At the export
    sample (16 rows) and at the second sample (mirrored copies, 24 rows) the cap is reached, so
    both give 6: only an input with fewer scores over the threshold shows the baked count.
    """

    def __init__(self, cap: int = 6) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(8, 1)
        self.cap = cap

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        scores = self.head(x).squeeze(-1)
        count = int((scores > 0).sum().clamp(max=self.cap))
        top = torch.topk(scores, count)
        return {"scores": top.values, "index": top.indices}


def _sample(rows: int = 16) -> torch.Tensor:
    return torch.randn(rows, 8, generator=torch.Generator().manual_seed(3))


def test_a_baked_in_count_is_caught_by_the_synthetic_sample(tmp_path):
    """Wrongly ok before the synthetic check: both old checks hit the cap; a smaller input does not."""
    model = ThresholdedTopK().eval()
    with torch.no_grad():
        counts = [len(model(x)["scores"]) for x in (_sample(16), _sample(24), _sample(4))]
    assert counts[:2] == [6, 6] and counts[2] < 6  # what the old two checks saw, and what a user may send

    manifest = export(model, _sample(), tmp_path, "topk", formats=["torchscript"], method="trace")
    (traced,) = manifest["artifacts"]
    assert not traced["ok"]
    assert [c["ok"] for c in traced["checks"]] == [True, True, False]
    assert traced["checks"][2]["source"].startswith("synthetic sample")
    assert "synthetic sample" in traced["error"]
    assert traced["checks_passed"] == 2
    assert any("Python" in w for w in traced["attempts"][0]["tracer_warnings"])
    # what the check saw is what a user of load() would get on a small input
    runner = load(tmp_path / "topk.torchscript.pt", verified_only=False)
    with pytest.raises(RuntimeError):
        runner(_sample(4))
    show = [sys.executable, "-m", "lightning_deploy.cli", "show", str(tmp_path / "topk.export.json")]
    shown = subprocess.run(show, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, check=False)
    assert "2/3 passed" in shown.stdout and "1 tracer warning(s): Converting a tensor" in shown.stdout, shown.stdout
    table = shown.stdout.split("checks: each artifact against eager")[1].splitlines()
    rows = [line for line in table if line.startswith("│")]
    for check, name in zip(traced["checks"], ["export sample", "second sample", "synthetic sample"], strict=True):
        cells = next([c.strip() for c in row.split("│")[1:-1]] for row in rows if name in row)  # each check named
        shapes = " ".join("x".join(map(str, shape)) for shape in check["shapes"])
        assert cells == [name, shapes, "ok" if check["ok"] else "failed"], (cells, shown.stdout)


class MaskedRows(nn.Module):
    """Returns the rows whose sum is positive: boolean indexing, which every exporter keeps dynamic."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[x.sum(-1) > 0] * 2


def test_data_dependent_dims_are_dynamic_in_the_manifest_load_and_triton(tmp_path):
    manifest = export(MaskedRows(), _sample(), tmp_path, "rows", formats=["onnx"], dynamic_batch=False)
    (onnx,) = manifest["artifacts"]
    assert onnx["ok"], onnx["error"]
    # same input shape (no dynamic dim), new values: another count of rows
    assert manifest["outputs"]["data_dependent"] == {"out": [0]}
    assert manifest["outputs"]["dynamic_axes"] == {"out": {"0": "out_0"}}
    out = load(tmp_path / "rows.onnx")(-_sample())
    assert torch.equal(out, MaskedRows()(-_sample()))
    folder = write_model_repository(tmp_path / "rows.export.json", tmp_path / "repo", name="rows")
    config = (folder / "config.pbtxt").read_text()
    assert "dims: [ -1, 8 ]" in config, config


def test_check_samples_are_verified_and_recorded(tmp_path):
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU())
    data = [(_sample(5),), (_sample(7) * 10,)]
    manifest = export(model, _sample(), tmp_path, "mlp", formats=["onnx", "torchscript"], check_samples=data)
    for artifact in manifest["artifacts"]:
        assert artifact["ok"], artifact["error"]
        sources = [c["source"] for c in artifact["checks"]]
        assert sources[-2:] == ["check_samples[0]", "check_samples[1]"]
        assert [c["shapes"] for c in artifact["checks"][-2:]] == [[[5, 8]], [[7, 8]]]
        assert artifact["checks_passed"] == len(sources) == 5
        assert all(0 <= c["max_abs_diff"] < 1e-4 for c in artifact["checks"])


def test_a_check_sample_the_artifact_cannot_take_fails_it_by_name(tmp_path):
    """Real data the artifact refuses (a static dim the data does not have) is a failure, not a skip."""
    model = nn.Sequential(nn.Linear(8, 4))
    manifest = export(model, _sample(), tmp_path, "mlp", formats=["onnx"], dynamic_batch=False,
                      check_samples={"wide batch": (_sample(9),)})  # fmt: skip
    (onnx,) = manifest["artifacts"]
    assert not onnx["ok"]
    assert onnx["checks"][-1]["source"] == "wide batch" and not onnx["checks"][-1]["ok"]
    assert "wide batch" in onnx["error"] and "x" in onnx["error"]


def test_bad_check_samples_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigurationError, match="check_samples"):
        export(nn.Linear(8, 4), _sample(), tmp_path, "m", check_samples=_sample())
    with pytest.raises(ConfigurationError, match=r"check_samples\[0\]"):
        export(nn.Linear(8, 4), _sample(), tmp_path, "m", check_samples=[(_sample(), _sample())])
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("size", "smaller"), [(224, 32), (256, 64), (160, 32), (16, 4), (2, 1), (7, 1), (12, 2), (240, 48), (384, 96)]
)
def test_smaller_size_keeps_divisibility(size, smaller):
    assert smaller_size(size) == smaller


class OutlierDigits(DigitsClassifier):
    """Also returns its most negative inputs, at most 8 of those below -0.5: a count the data decides.

    ``torch.randn`` samples (the export sample, the second one, the synthetic one drawn over
    their range) all have more than 8 such values; digits' pixels (0 to 1) have none.
    """

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        flat = x.flatten()
        count = int((flat < -0.5).sum().clamp(max=8))
        return {"logits": self.net(x), "outliers": torch.topk(-flat, count).values}

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))


def _trainer(tmp_path, exporter: ModelExport) -> pl.Trainer:
    callbacks = [ModelCheckpoint(dirpath=tmp_path), exporter]
    return pl.Trainer(default_root_dir=tmp_path, max_epochs=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=callbacks)  # fmt: skip


def _fit(tmp_path, model, **kwargs) -> dict:
    exporter = ModelExport(formats=["torchscript"], method="trace", preflight=False, **kwargs)
    pl.seed_everything(0)
    _trainer(tmp_path, exporter).fit(model, *digits_loaders())
    return exporter.manifest


def test_validation_batches_are_checked_and_catch_what_synthetic_samples_miss(tmp_path):
    manifest = _fit(tmp_path / "outliers", OutlierDigits(), check_batches=2)
    (traced,) = manifest["artifacts"]
    sources = [c["source"] for c in traced["checks"]]
    assert sources[-2:] == ["validation batch 0", "validation batch 1"]
    assert [c["shapes"] for c in traced["checks"][-2:]] == [[[256, 64]], [[141, 64]]]  # 397 validation digits
    assert all(c["ok"] for c in traced["checks"][:3])  # the synthetic checks alone would have passed it
    assert not traced["ok"] and "validation batch 0" in traced["error"]

    manifest = _fit(tmp_path / "plain", DigitsClassifier(), check_batches=2)
    (traced,) = manifest["artifacts"]
    assert traced["ok"], traced["error"]
    assert [c["source"] for c in traced["checks"]][-2:] == ["validation batch 0", "validation batch 1"]

    manifest = _fit(tmp_path / "off", DigitsClassifier(), check_batches=0)
    assert not any(c["source"].startswith("validation") for c in manifest["artifacts"][0]["checks"])


class BatchDictDigits(DigitsClassifier):
    """Batches are dicts: ``export_sample`` says which of their values forward takes."""

    def export_sample(self, batch: dict) -> torch.Tensor:
        return batch["pixels"]

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch["pixels"]), batch["label"])

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", nn.functional.cross_entropy(self(batch["pixels"]), batch["label"]))


def _dict_loaders() -> tuple[DataLoader, DataLoader]:
    """Digits batches as ``{"pixels", "label"}`` dicts."""
    train, val = digits_loaders()
    as_dicts = lambda data: [{"pixels": x, "label": y} for x, y in data]  # noqa: E731
    return DataLoader(as_dicts(train.dataset), batch_size=64), DataLoader(as_dicts(val.dataset), batch_size=256)


def test_export_sample_takes_inputs_from_batches_of_another_form(tmp_path):
    exporter = ModelExport(formats=["onnx"], preflight=False, check_batches=1)
    _trainer(tmp_path, exporter).fit(BatchDictDigits(), *_dict_loaders())
    (onnx,) = exporter.manifest["artifacts"]
    assert onnx["ok"], onnx["error"]
    assert onnx["checks"][-1]["source"] == "validation batch 0" and onnx["checks"][-1]["shapes"] == [[256, 64]]


def test_batches_without_inputs_are_skipped_with_a_warning(tmp_path):
    class NoExportSample(BatchDictDigits):
        export_sample = None

    with pytest.warns(UserWarning, match="not verified on data.*export_sample"):
        exporter = ModelExport(formats=["onnx"], preflight=False, check_batches=1)
        _trainer(tmp_path, exporter).fit(NoExportSample(), *_dict_loaders())
    (onnx,) = exporter.manifest["artifacts"]
    assert onnx["ok"] and not any(c["source"].startswith("validation") for c in onnx["checks"])


@pytest.mark.parametrize("value", [-1, 1.5, True, "2"])
def test_bad_check_batches_fail_at_construction(value):
    with pytest.raises(ConfigurationError, match="check_batches"):
        ModelExport(check_batches=value)


class KeptRows(nn.Module):
    """The first rows, as many as have any signal: a count taken by ``.item()``, which a trace bakes in.

    torch.export keeps it as an unbacked size (``u0``); the lambda keeps TorchScript's scripting
    out (it compiles no lambdas), so ``auto`` keeps the trace.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        count = (x.abs().sum(-1) > 1e-3).sum().item()
        if not torch.jit.is_tracing():
            torch._check(count <= x.shape[0])  # for torch.export: the count fits the rows
        double = lambda t: t * 2  # noqa: E731
        return double(x[:count])


def test_a_size_set_by_values_that_no_check_changed_fails_the_trace_and_names_the_fix(tmp_path):
    """Random rows always have signal: every check keeps all 16, so only torch.export's symbol tells."""
    manifest = export(KeptRows(), _sample(), tmp_path, "rows", formats=["torchscript", "onnx"], dynamic_batch=False)
    torchscript, onnx = manifest["artifacts"]
    assert torchscript["method"] == "trace" and torchscript["verified"] and not torchscript["ok"]
    assert "output 'out' dim 0 depends on the input's values" in torchscript["error"]
    assert "check_samples" in torchscript["error"]
    assert onnx["method"] == "export" and onnx["ok"], onnx["error"]
    assert manifest["outputs"]["data_dependent"] == {"out": [0]}
    assert manifest["outputs"]["dynamic_axes"] == {"out": {"0": "out_0"}}
    # the check was right: on rows without signal the trace still returns 16 rows, the torch.export graph 5
    rows = _sample()
    rows[5:] = 0
    assert len(load(tmp_path / "rows.torchscript.pt", verified_only=False)(rows)) == 16
    assert torch.equal(load(tmp_path / "rows.onnx")(rows), KeptRows()(rows)) and len(KeptRows()(rows)) == 5
    # with a sample that changes the count, the same trace is checked there, and fails there
    manifest = export(KeptRows(), _sample(), tmp_path / "data", "rows", formats=["torchscript"],
                      dynamic_batch=False, check_samples=[(rows,)])  # fmt: skip
    (traced,) = manifest["artifacts"]
    assert not traced["ok"] and "check_samples[0]" in traced["error"]


def test_a_synthetic_sample_the_model_cannot_take_is_made_at_its_smallest_size_and_recorded(tmp_path):
    """A model needing 9 pixels fails at the synthetic 4x4: its smallest sizes are found and become every range."""
    model = nn.Conv2d(3, 4, 9)
    manifest = export(model, torch.randn(2, 3, 16, 16), tmp_path, "conv", formats=["onnx", "torchscript"],
                      dynamic_axes={"input": {2: "height", 3: "width"}})  # fmt: skip
    assert manifest["skipped_checks"] == []
    for entry in manifest["artifacts"]:
        assert entry["ok"], entry["error"]
        assert entry["ranges"] == {"input": {"2": [9, None], "3": [9, None]}}, entry["format"]
        synthetic = entry["checks"][2]
        assert synthetic["source"].startswith("synthetic") and synthetic["ok"]
        assert synthetic["shapes"] == [[1, 3, 9, 9]]  # the batch shrank as ever; height and width to the minimum
        loaded = load(tmp_path / entry["path"])
        x = torch.randn(3, 3, 9, 12)
        torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=1e-4)
        with pytest.raises(StructureError, match=r"input 'input': dim 2 is 8, outside .*>= 9"):
            loaded(torch.randn(1, 3, 8, 12))
        with pytest.raises(StructureError, match=r"dim 3 is 8, outside"):
            loaded(torch.randn(1, 3, 12, 8).numpy())  # numpy too: ONNX Runtime would run 8 and fail inside


def test_a_check_made_by_rule_that_no_size_fixes_is_skipped_and_said(tmp_path):
    """A failure that is not about size (the synthetic values): the check is skipped with the model's error."""

    class SortedRowsOnly(nn.Module):
        def forward(self, x):
            if not torch.equal(x, x.sort(dim=1).values):
                raise ValueError("every row must be sorted")
            return x * 2

    sample = torch.arange(12.0).reshape(2, 6)  # the synthetic sample's values are drawn anew: unsorted at any size
    manifest = export(SortedRowsOnly(), sample, tmp_path, "m", formats=["onnx"], method="trace")
    (onnx,) = manifest["artifacts"]
    assert onnx["ok"] and onnx["ranges"] is None
    (skipped,) = manifest["skipped_checks"]
    assert skipped["source"].startswith("synthetic") and "the model itself fails" in skipped["skipped"]
