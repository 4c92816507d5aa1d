"""The opt-in faster ONNX formats, ``onnx-optimized`` and ``onnx-int8``: made, verified, loaded, measured."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import numpy as np
import onnx
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning_models import DigitsClassifier, digits_loaders
from torch import nn

from lightning_deploy import ConfigurationError, ModelExport, export, load
from lightning_deploy.exporting.methods.onnx_passes import vnni_flag

FASTER = ["onnx", "onnx-optimized", "onnx-int8"]


class MaskedEncoder(nn.Module):
    """A TransformerEncoder over ``{"x", "padding_mask"}``: attention that the optimiser can fuse."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 5)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hidden = self.encoder(batch["x"], src_key_padding_mask=batch["padding_mask"])
        return {"tags": self.head(hidden).masked_fill(batch["padding_mask"].unsqueeze(-1), 0.0)}


def _batch(size: int, seq: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(size * 100 + seq)
    mask = torch.zeros(size, seq, dtype=torch.bool)
    mask[size // 2 :, seq - seq // 4 :] = True
    return {"x": torch.randn(size, seq, 32, generator=generator), "padding_mask": mask}


@pytest.fixture(scope="module")
def encoder_export(tmp_path_factory):
    torch.manual_seed(0)
    model = MaskedEncoder().eval()
    dirpath = tmp_path_factory.mktemp("encoder")
    axes = {"batch.x": {1: "seq"}, "batch.padding_mask": {1: "seq"}}
    manifest = export(model, (_batch(2, 16),), dirpath, "model", formats=FASTER, dynamic_axes=axes)
    return model, dirpath, {a["format"]: a for a in manifest["artifacts"]}


def _ops(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def _weight_bytes(path) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for tensor in onnx.load(str(path)).graph.initializer:
        array = onnx.numpy_helper.to_array(tensor)
        sizes[str(array.dtype)] = sizes.get(str(array.dtype), 0) + array.nbytes
    return sizes


def test_every_faster_format_verified_at_two_shapes(encoder_export):
    _, dirpath, artifacts = encoder_export
    assert [a for a in artifacts] == FASTER
    for fmt, artifact in artifacts.items():
        assert artifact["ok"] and artifact["verified"], (fmt, artifact["error"])
        assert artifact["checked_shapes"][:2] == [[[2, 16, 32], [2, 16]], [[3, 24, 32], [3, 24]]]
        assert (dirpath / artifact["path"]).is_file()
    assert artifacts["onnx-optimized"]["path"] == "model.optimized.onnx"
    assert artifacts["onnx-int8"]["path"] == "model.int8.onnx"
    assert artifacts["onnx-int8"]["tolerance"] == {"atol": 1e-4, "rtol": 0.05}
    assert artifacts["onnx"]["tolerance"] == {"atol": 1e-4, "rtol": 1e-3}


def test_optimized_onnx_fuses_attention_and_matches_eager_at_a_third_shape(encoder_export):
    model, dirpath, artifacts = encoder_export
    artifact = artifacts["onnx-optimized"]
    assert artifact["derived"]["fusions"]["sdpa_via_mha"] == 2  # one per encoder layer
    assert "MultiHeadAttention" in _ops(dirpath / artifact["path"])
    assert "MultiHeadAttention" not in _ops(dirpath / "model.onnx")
    assert artifact["max_rel_diff"] <= 1e-5
    batch = _batch(5, 40)
    got = load(dirpath / artifact["path"])(batch)
    with torch.no_grad():
        want = model(batch)
    np.testing.assert_allclose(got["tags"], want["tags"].numpy(), atol=1e-5, rtol=0)


def test_int8_onnx_has_int8_weights_and_stays_within_its_tolerance(encoder_export):
    model, dirpath, artifacts = encoder_export
    artifact = artifacts["onnx-int8"]
    ops = _ops(dirpath / artifact["path"])
    assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops
    assert artifact["derived"]["quantized_matmuls"] >= 8  # q/k/v in, out, two feed-forward per layer
    # signed weights where this CPU has VNNI (exact, faster there), unsigned elsewhere
    weight_dtype = "int8" if vnni_flag() else "uint8"
    assert artifact["derived"]["weights"].startswith(f"{weight_dtype} per channel")
    plain, int8 = _weight_bytes(dirpath / "model.onnx"), _weight_bytes(dirpath / artifact["path"])
    assert int8[weight_dtype] > 0.9 * plain["float32"] / 4  # the weights, one byte each
    assert int8["float32"] < 0.1 * plain["float32"]  # only biases and scales stay float
    assert 1e-4 < artifact["max_rel_diff"] <= 0.05  # really quantised, and within its own tolerance
    batch = _batch(5, 40)
    got = load(dirpath / artifact["path"])(batch)["tags"]
    with torch.no_grad():
        want = model(batch)["tags"].numpy()
    scale = np.abs(want).max()
    assert 1e-4 * scale < np.abs(got - want).max() <= 0.05 * scale


def test_load_of_the_manifest_takes_the_faster_float_file_and_int8_only_by_name(encoder_export):
    _, dirpath, manifest = encoder_export
    timings = {fmt: entry["ms_per_call"] for fmt, entry in manifest.items()}
    assert load(dirpath / "model.export.json").format == min(("onnx", "onnx-optimized"), key=timings.get)
    assert load(dirpath / "model.export.json", format="onnx-optimized").format == "onnx-optimized"
    assert load(dirpath / "model.export.json", format="onnx-int8").format == "onnx-int8"
    assert load(dirpath / "model.int8.onnx").format == "onnx-int8"


def test_int8_fails_verification_at_a_tolerance_it_cannot_meet(tmp_path):
    torch.manual_seed(0)
    manifest = export(MaskedEncoder(), (_batch(2, 8),), tmp_path, "model", formats=["onnx-int8"], method="export",
                      int8_rtol=1e-6)  # fmt: skip
    (artifact,) = manifest["artifacts"]
    assert not artifact["ok"] and not artifact["verified"]
    assert "output 'out.tags'" in artifact["error"] and "rtol 1e-06" in artifact["error"]
    with pytest.raises(Exception, match="failed at export"):
        load(tmp_path / "model.int8.onnx")


def test_int8_of_a_model_without_matmul_is_an_error_not_a_float_copy(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    manifest = export(model, torch.randn(2, 3, 16, 16), tmp_path, "model", formats=["onnx-int8"])
    (artifact,) = manifest["artifacts"]
    assert not artifact["ok"] and "no MatMul or Gemm" in artifact["error"]
    assert not (tmp_path / "model.int8.onnx").exists()


def test_bad_int8_rtol_is_named():
    with pytest.raises(ConfigurationError, match="int8_rtol"):
        ModelExport(formats=["onnx-int8"], int8_rtol=-1.0)


def test_callback_records_int8_accuracy_on_the_validation_loader(tmp_path):
    pl.seed_everything(0)
    model = DigitsClassifier(lr=0.2)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_top_k=1)
    callback = ModelExport(formats=["onnx", "onnx-int8"], preflight=False)
    trainer = pl.Trainer(default_root_dir=tmp_path, max_epochs=3, callbacks=[checkpoint, callback], logger=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")  # fmt: skip
    train, val = digits_loaders()
    trainer.fit(model, train, val)
    best = tmp_path / checkpoint.best_model_path.rsplit("/", 1)[1]
    manifest = json.loads(best.with_suffix(".export.json").read_text())
    artifacts = {a["format"]: a for a in manifest["artifacts"]}
    accuracy = artifacts["onnx-int8"]["accuracy"]
    assert artifacts["onnx"]["accuracy"] is None

    best_model = DigitsClassifier()
    best_model.load_state_dict(torch.load(best, weights_only=False)["state_dict"])
    int8 = load(best.with_suffix(".int8.onnx"))
    eager_correct = int8_correct = 0
    for x, y in val:
        with torch.no_grad():
            eager_correct += int((best_model.eval()(x).argmax(-1) == y).sum())
        int8_correct += int((int8(x).argmax(-1) == y).sum())
    assert accuracy["samples"] == len(val.dataset) == 397
    assert accuracy["eager"] == pytest.approx(eager_correct / 397) and accuracy["eager"] > 0.8
    assert accuracy["artifact"] == pytest.approx(int8_correct / 397)
    assert accuracy["delta"] == pytest.approx(accuracy["artifact"] - accuracy["eager"])
    assert abs(accuracy["delta"]) <= 0.02


def test_accuracy_data_of_another_form_is_recorded_not_fatal(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4))
    unlabelled = [torch.randn(5, 8)]
    manifest = export(model, torch.randn(2, 8), tmp_path, "model", formats=["onnx-int8"], accuracy_data=unlabelled)
    (artifact,) = manifest["artifacts"]
    assert artifact["ok"]
    assert "not (input_sample, integer labels [N])" in artifact["accuracy"]["error"]


class SmallCNN(nn.Module):
    """Three convolutions and a linear head: what dynamic int8 leaves float, and static int8 quantises.

    Wide enough (64x64 images, 32 and 64 channels) that the convolutions are most of the work,
    so static int8 is the faster file here, as on resnet18.
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(64, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def test_labelled_data_calibrates_static_int8_of_convolutions(tmp_path):
    """With accuracy_data, int8 is static QDQ: Conv and Gemm quantised with calibrated ranges, checked at int8_rtol.

    Dynamic int8 (the head alone) verifies too; both are timed and the faster here is kept. That
    has been static on every CPU measured (with VNNI and without), but which one wins is this
    CPU's timing, so the file is checked as the variant the manifest says was kept.
    """
    model = SmallCNN().eval()
    generator = torch.Generator().manual_seed(4)
    images = [torch.rand(8, 3, 64, 64, generator=generator) for _ in range(10)]
    with torch.no_grad():
        labelled = [(x, model(x).argmax(-1)) for x in images]
    manifest = export(model, images[0][:2], tmp_path, "cnn", formats=["onnx-int8"], accuracy_data=labelled)
    (artifact,) = manifest["artifacts"]
    assert artifact["ok"] and artifact["verified"], artifact["error"]
    (static, dynamic) = artifact["attempts"]
    assert (static["variant"], static["ok"], dynamic["variant"], dynamic["ok"]) == ("static", True, "dynamic", True)
    derived = artifact["derived"]
    kept, other = (static, dynamic) if derived["pass"].startswith("onnxruntime quantize_static") else (dynamic, static)
    assert 0 < kept["ms_per_call"] <= other["ms_per_call"]
    assert derived["chosen"].startswith(f"faster here: {kept['ms_per_call']} ms")
    ops = _ops(tmp_path / artifact["path"])
    weight_dtype = "int8" if vnni_flag() else "uint8"
    if kept is static:
        assert derived["pass"].startswith("onnxruntime quantize_static (QDQ")
        assert derived["calibration_batches"] == 11  # CALIBRATION_BATCHES (8) of the 10, and the 3 checks' samples
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops and "Conv" in ops
        assert _weight_bytes(tmp_path / artifact["path"]).get(weight_dtype, 0) > 0, "the convolutions' weights"
    else:
        assert derived["pass"].startswith("onnxruntime quantize_dynamic")
        assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops and "Conv" in ops  # the head alone
    assert 1e-4 < artifact["max_rel_diff"] <= 0.05
    accuracy = artifact["accuracy"]
    assert accuracy["samples"] == 80 and accuracy["eager"] == 1.0 and abs(accuracy["delta"]) <= 0.05
    # through load() at a batch the export never saw
    batch = torch.rand(5, 3, 64, 64, generator=generator)
    with torch.no_grad():
        want = model(batch).numpy()
    got = load(tmp_path / artifact["path"])(batch.numpy())
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()


def test_static_int8_that_does_not_verify_falls_back_to_dynamic(tmp_path):
    """Calibrated on data far from the export sample (zeros, as DigitsMLP's example_input_array), static int8
    clips the sample; dynamic int8 is tried next and kept, and both attempts are in the manifest."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    generator = torch.Generator().manual_seed(6)
    data = [(torch.rand(8, 64, generator=generator) * 16, torch.zeros(8, dtype=torch.long)) for _ in range(8)]
    manifest = export(model, torch.zeros(4, 64), tmp_path, "mlp", formats=["onnx-int8"], accuracy_data=data)
    (artifact,) = manifest["artifacts"]
    assert [(a["variant"], a["ok"]) for a in artifact["attempts"]] == [("static", False), ("dynamic", True)]
    assert "mismatch" in artifact["attempts"][0]["error"]
    assert artifact["ok"] and artifact["derived"]["pass"] == "onnxruntime quantize_dynamic"
