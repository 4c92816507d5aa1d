"""ModelExport with a real Trainer, real checkpoints and real runtimes (no mocks)."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning_models import DictDigits, DigitsClassifier, NotExportable, digits_loaders

from lightning_deploy import ConfigurationError, ExportError, ModelExport, load


def _trainer(tmp_path, callbacks, epochs=3, **kwargs):
    return pl.Trainer(
        default_root_dir=tmp_path, max_epochs=epochs, callbacks=callbacks, logger=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
        deterministic=True, **kwargs,
    )  # fmt: skip


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_best_checkpoint_is_exported_not_the_last_weights(tmp_path):
    pl.seed_everything(0)
    model = DigitsClassifier(best_epoch=1)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val_score", mode="max", save_top_k=1)
    export_cb = ModelExport(formats=["onnx", "torchscript"])
    _trainer(tmp_path, [checkpoint, export_cb]).fit(model, *digits_loaders())
    best = tmp_path / "ckpt" / "epoch=1-step=44.ckpt"
    assert checkpoint.best_model_path == str(best)
    files = sorted(p.name for p in best.parent.iterdir() if not p.name.startswith("."))
    assert files == ["epoch=1-step=44.ckpt", "epoch=1-step=44.export.json", "epoch=1-step=44.onnx",
                     "epoch=1-step=44.samples.npz", "epoch=1-step=44.torchscript.pt"]  # fmt: skip
    manifest = json.loads((best.parent / "epoch=1-step=44.export.json").read_text())
    assert manifest["checkpoint"] == best.name and manifest["ok"]

    best_model = DigitsClassifier()
    best_model.load_state_dict(torch.load(best, weights_only=False)["state_dict"])
    x = torch.rand(7, 64)
    want_best, want_last = best_model.eval()(x).detach(), model.eval()(x).detach()
    assert (want_best - want_last).abs().max() > 1e-2  # the last weights really differ
    for name in ("epoch=1-step=44.onnx", "epoch=1-step=44.torchscript.pt"):
        got = load(best.parent / name)(x)
        torch.testing.assert_close(got, want_best, atol=1e-5, rtol=0)
        assert (got - want_last).abs().max() > 1e-2


def test_checkpoint_bytes_unchanged_also_when_export_fails(tmp_path):
    pl.seed_everything(0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val_loss", save_top_k=1)
    export_cb = ModelExport(preflight=False)
    shas = {}

    class Recorder(pl.Callback):
        def on_fit_end(self, trainer, pl_module):  # runs before ModelExport's hook
            shas.update({p.name: _sha(p) for p in (tmp_path / "ckpt").glob("*.ckpt")})

    with pytest.warns(UserWarning, match="ModelExport: .*failed"):
        _trainer(tmp_path, [checkpoint, Recorder(), export_cb], epochs=2).fit(NotExportable(), *digits_loaders())
    assert shas and {p.name: _sha(p) for p in (tmp_path / "ckpt").glob("*.ckpt")} == shas
    manifest = export_cb.manifest
    assert not manifest["ok"] and "temperature" in manifest["artifacts"][0]["error"]
    stem = checkpoint.best_model_path.rsplit("/", 1)[-1][: -len(".ckpt")]
    assert json.loads((tmp_path / "ckpt" / f"{stem}.export.json").read_text()) == manifest


def test_unexportable_module_fails_before_the_first_training_step(tmp_path):
    model = NotExportable()
    export_cb = ModelExport(strict=True)
    with pytest.raises(ExportError, match=r"preflight: NotExportable.*'out.temperature' is a float.*HINT"):
        _trainer(tmp_path, [ModelCheckpoint(monitor="val_loss"), export_cb]).fit(model, *digits_loaders())
    assert model.training_batches == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"formats": ["tflite"]}, r"ModelExport\(formats=\['tflite'\]\).*unknown format"),
        ({"method": "compile"}, r"ModelExport\(method='compile'\)"),
        ({"atol": -1.0}, r"ModelExport\(atol=-1.0\)"),
        ({"checkpoint": "latest"}, r"ModelExport\(checkpoint='latest'\).*one of"),
        ({"checkpoint": "final"}, r"checkpoint='final', dirpath=None.*HINT"),
        ({"input_sample": torch.ones(1), "input_spec": {"shape": [1]}}, r"input_spec=...\): give one"),
        ({"input_spec": {"shape": [2, -3]}}, r"input_spec.*positive ints"),
        ({"input_spec": {"shape": [2, 64], "dtype": "float99"}}, r"dtype 'float99'"),
        ({"strict": "yes"}, r"ModelExport\(strict='yes'\)"),
        ({"dynamic_axes": {"x": {"a": "b"}}}, r"ModelExport\(dynamic_axes="),
    ],
)
def test_bad_configuration_raises_at_construction(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        ModelExport(**kwargs)


@pytest.mark.parametrize(
    ("callbacks", "export_kwargs", "model", "message"),
    [
        ([], {}, DigitsClassifier, r"needs a ModelCheckpoint callback"),
        ([ModelCheckpoint()], {"checkpoint": "last"}, DigitsClassifier, r"save_last=True"),
        ([ModelCheckpoint()], {"submodule": "encoder"}, DigitsClassifier, r"submodule='encoder'.*children \['net'\]"),
        ([ModelCheckpoint()], {}, DictDigits, r"example_input_array is not set"),
        ([ModelCheckpoint()], {"dynamic_axes": {"y": {1: "f"}}}, DigitsClassifier, r"'y' names no input"),
    ],
)
def test_bad_setup_raises_before_training(tmp_path, callbacks, export_kwargs, model, message):
    module = model()
    trainer = _trainer(tmp_path, [*callbacks, ModelExport(**export_kwargs)], enable_checkpointing=bool(callbacks))
    with pytest.raises(ConfigurationError, match=message):
        trainer.fit(module, *digits_loaders())
    assert module.training_batches == 0


@pytest.mark.parametrize(
    ("model_cls", "kwargs", "names"),
    [
        (DigitsClassifier, {}, ["x"]),
        (DictDigits, {"input_spec": {"pixels": {"shape": [3, 64]}, "mask": {"shape": [3, 64]}}}, ["pixels", "mask"]),
        (DigitsClassifier, {"submodule": "net"}, ["input"]),
    ],
)
def test_sample_sources_produce_verified_artifacts(tmp_path, model_cls, kwargs, names):
    pl.seed_everything(0)
    model = model_cls()
    export_cb = ModelExport(formats=["onnx"], **kwargs)
    _trainer(tmp_path, [ModelCheckpoint(dirpath=tmp_path), export_cb], epochs=1).fit(model, *digits_loaders())
    manifest = export_cb.manifest
    assert manifest["ok"], manifest["artifacts"]
    assert manifest["inputs"]["names"] == names
    assert len({s[0][0] for s in manifest["artifacts"][0]["checked_shapes"][:2]}) == 2  # two batch sizes
    onnx = load(tmp_path / manifest["artifacts"][0]["path"])
    pixels = np.random.rand(5, 64).astype(np.float32)
    out = onnx(pixels, np.ones_like(pixels)) if model_cls is DictDigits else onnx(pixels)
    assert (out["logits"] if isinstance(out, dict) else out).shape == (5, 10)


def test_strict_raises_at_fit_end_and_lenient_returns(tmp_path):
    for strict in (True, False):
        export_cb = ModelExport(preflight=False, strict=strict)
        trainer = _trainer(tmp_path / str(strict), [ModelCheckpoint(monitor="val_loss"), export_cb], epochs=1)
        if strict:
            with pytest.raises(ExportError, match=r"strict=True.*temperature"):
                trainer.fit(NotExportable(), *digits_loaders())
        else:
            with pytest.warns(UserWarning, match="temperature"):
                trainer.fit(NotExportable(), *digits_loaders())
            assert trainer.state.finished
        assert export_cb.manifest is not None and not export_cb.manifest["ok"]


class _FailsAtEpoch(DigitsClassifier):
    def __init__(self, error: type[BaseException]) -> None:
        super().__init__()
        self.error = error

    def training_step(self, batch, batch_idx):
        if self.current_epoch == 1:
            raise self.error("stop here")
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_fit_ended_by_exception_or_interrupt_does_not_export(tmp_path, error):
    export_cb = ModelExport(preflight=False)
    trainer = _trainer(tmp_path, [ModelCheckpoint(dirpath=tmp_path / "ckpt"), export_cb])
    try:
        trainer.fit(_FailsAtEpoch(error), *digits_loaders())
    except (RuntimeError, SystemExit):
        pass
    assert list((tmp_path / "ckpt").glob("*.ckpt"))  # a checkpoint existed to export
    assert export_cb.manifest is None
    assert not list((tmp_path / "ckpt").glob("*.export.json"))


def test_headline_figures_go_to_the_logger(tmp_path):
    pl.seed_everything(0)
    logger = CSVLogger(tmp_path, name="run")
    trainer = pl.Trainer(
        default_root_dir=tmp_path, max_epochs=1, logger=logger, enable_progress_bar=False, accelerator="cpu",
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt"), ModelExport(formats=["onnx", "torchscript"])],
    )  # fmt: skip
    trainer.fit(DigitsClassifier(), *digits_loaders())
    with open(Path(logger.log_dir) / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("export/onnx_ok")]
    assert len(rows) == 1
    assert float(rows[0]["export/onnx_ok"]) == 1.0 and float(rows[0]["export/torchscript_ok"]) == 1.0
    assert 0.0 <= float(rows[0]["export/onnx_max_abs_diff"]) < 1e-5
