"""ExecuTorch (`.pte`) and OpenVINO (IR) artifacts: made, verified in their own runtimes, run by load() at shapes
the export never saw, and compared with eager; ExecuTorch's bounds recorded and enforced by name."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys

import lightning.pytorch as pl
import numpy as np
import openvino
import pytest
import torch
import torchvision
from google.protobuf import text_format
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning_models import DigitsClassifier, digits_loaders
from machine import HAS_BF16, needs_bf16
from torch import nn
from tritonclient.grpc import model_config_pb2

from lightning_deploy import ModelExport, export, load
from lightning_deploy.errors import ConfigurationError, LoadError, StructureError
from lightning_deploy.serving.triton import write_model_repository

FORMATS = ["executorch", "openvino"]


@dataclasses.dataclass
class Scores:
    logits: torch.Tensor
    probs: torch.Tensor


class DictToDataclass(nn.Module):
    """Takes ``{"x", "extra"}``, returns a dataclass."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.x_in, self.extra_in, self.head = nn.Linear(8, 16), nn.Linear(4, 16), nn.Linear(16, 3)

    def forward(self, batch: dict) -> Scores:
        logits = self.head(torch.relu(self.x_in(batch["x"]) + self.extra_in(batch["extra"])))
        return Scores(logits, logits.softmax(-1))


def _mlp_inputs(batch: int, seed: int = 0) -> tuple[dict]:
    generator = torch.Generator().manual_seed(seed)
    return ({"x": torch.randn(batch, 8, generator=generator), "extra": torch.randn(batch, 4, generator=generator)},)


def _encoder() -> nn.Module:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True, dropout=0.0)
    return nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)


def _leaves(value):
    return [value] if isinstance(value, torch.Tensor) else [v for v in dataclasses.astuple(value)]


# (name, model, export sample, dynamic_axes, an unseen sample)
CASES = [
    ("dict-dataclass-mlp", DictToDataclass, _mlp_inputs(4), None, _mlp_inputs(11, seed=1)),
    ("resnet18", lambda: torchvision.models.resnet18(weights=None, num_classes=10), torch.randn(2, 3, 64, 64), None,
     torch.rand(5, 3, 64, 64)),
    ("transformer-encoder", _encoder, torch.randn(2, 12, 32), {"src": {1: "seq"}}, torch.randn(3, 17, 32)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "make", "sample", "axes", "unseen"), CASES, ids=[c[0] for c in CASES])
def test_both_formats_verify_and_load_matches_eager_at_an_unseen_shape(tmp_path, name, make, sample, axes, unseen):
    model = make().eval()
    manifest = export(model, sample, tmp_path, name, formats=FORMATS, dynamic_axes=axes)
    entries = {a["format"]: a for a in manifest["artifacts"]}
    for fmt in FORMATS:
        entry = entries[fmt]
        assert entry["ok"] and entry["verified"], (fmt, entry["error"])
        assert entry["checks_passed"] == len(entry["checks"]) >= 2
        assert len({json.dumps(shapes) for shapes in entry["checked_shapes"][:2]}) == 2  # two shapes, not one
        assert entry["max_abs_diff"] < 1e-4  # float32 (OpenVINO's bf16 default differs by ~1e-2 here)
    assert entries["openvino"]["derived"] == {"converted_from": "torch.export program"}
    assert entries["openvino"]["files"] == [f"{name}.openvino.bin", f"{name}.openvino.xml"]
    assert entries["executorch"]["derived"]["delegated_calls"] >= 1  # XNNPACK took part of the graph

    with torch.no_grad():
        want = model(*unseen) if isinstance(unseen, tuple) else model(unseen)
    for fmt in FORMATS:
        exported = load(tmp_path / f"{name}.export.json", format=fmt)
        got = exported(*unseen) if isinstance(unseen, tuple) else exported(unseen)
        assert type(got) is type(want)
        for g, w in zip(_leaves(got), _leaves(want)):
            torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)


def test_executorch_bounds_are_recorded_and_a_bigger_input_is_refused_by_name(tmp_path):
    model = _encoder().eval()
    manifest = export(model, torch.randn(2, 12, 32), tmp_path, "enc", formats=["executorch"],
                      dynamic_axes={"src": {1: "seq"}}, executorch_bounds={"batch": 8})  # fmt: skip
    entry = manifest["artifacts"][0]
    assert entry["ok"], entry["error"]
    assert entry["bounds"] == {"src": {"0": 8, "1": 24}}  # seq: twice the export sample's 12
    assert entry["ranges"] == {"src": {"0": [1, 8], "1": [1, 24]}}  # what load() enforces, every format alike
    assert manifest["options"]["executorch_bounds"] == {"batch": 8}

    exported = load(tmp_path / "enc.pte")
    x = torch.randn(8, 24, 32)  # both at their bounds: runs, and right
    torch.testing.assert_close(exported(x), model(x).detach(), atol=1e-4, rtol=1e-4)
    with pytest.raises(StructureError, match=r"input 'src': dim 0 is 9, outside the sizes .* \(<= 8;"):
        exported(torch.randn(9, 12, 32))
    with pytest.raises(StructureError, match=r"input 'src': dim 1 is 25, outside the sizes .* \(<= 24;"):
        exported(torch.randn(2, 25, 32))
    command = [sys.executable, "-m", "lightning_deploy.cli", "show", str(tmp_path / "enc.export.json")]
    show = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert show.returncode == 0, show.stderr
    assert "accepts src[0] <= 8, src[1] <= 24" in show.stdout


def test_a_data_check_past_a_given_bound_fails_the_artifact_naming_the_bound(tmp_path):
    manifest = export(DictToDataclass(), _mlp_inputs(4), tmp_path, "m", formats=["executorch"],
                      executorch_bounds={"batch": 6}, check_samples={"big batch": _mlp_inputs(9)})  # fmt: skip
    entry = manifest["artifacts"][0]
    assert not entry["ok"]
    assert entry["checks_passed"] == len(entry["checks"]) - 1  # the export, second and synthetic samples passed
    assert "failed at the big batch" in entry["error"]
    assert "input 'batch.x': dim 0 is 9, outside the sizes this artifact accepts there (<= 6;" in entry["error"]


def test_a_bound_below_the_verification_samples_is_refused_before_export(tmp_path):
    # the second sample grows the batch from 4 to 6: a bound of 5 could not be verified
    with pytest.raises(ConfigurationError, match=r"'batch' is bounded by 5, but .* give it 6.*at least 6"):
        export(DictToDataclass(), _mlp_inputs(4), tmp_path, "m", formats=["executorch"], executorch_bounds={"batch": 5})
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"formats": ["onnx"], "executorch_bounds": {"batch": 8}}, r"executorch_bounds.*executorch format only"),
        ({"formats": ["executorch"], "executorch_bounds": {"seq": 8}}, r"names 'seq', not a dynamic axis"),
        ({"formats": ["executorch"], "executorch_bounds": {"batch": 1}}, r"whole number >= 2"),
    ],
)
def test_bad_executorch_bounds_are_refused_before_training(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        ModelExport(**kwargs)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_format_whose_package_is_missing_is_refused_naming_the_extra(monkeypatch, fmt):
    monkeypatch.setitem(sys.modules, fmt, None)  # how Python itself marks a module as not importable
    with pytest.raises(ConfigurationError, match=rf"needs the {fmt} package.*pip install 'lightning-deploy\[{fmt}\]'"):
        ModelExport(formats=[fmt])


def test_digits_fit_exports_both_formats_verified_on_validation_batches(tmp_path):
    pl.seed_everything(0)
    model = DigitsClassifier(best_epoch=1)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val_score", mode="max", save_top_k=1)
    trainer = pl.Trainer(
        default_root_dir=tmp_path, max_epochs=2, callbacks=[checkpoint, ModelExport(formats=FORMATS)], logger=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
    )  # fmt: skip
    trainer.fit(model, *digits_loaders())
    best = trainer.checkpoint_callback.best_model_path
    stem = best.removesuffix(".ckpt")
    manifest = json.loads(open(stem + ".export.json").read())
    for entry in manifest["artifacts"]:
        assert entry["ok"], (entry["format"], entry["error"])
        sources = [check["source"] for check in entry["checks"]]
        assert sum(source.startswith("validation batch") for source in sources) == 2, sources
        assert entry["checks_passed"] == len(sources)
    bounds = {e["format"]: e.get("bounds") for e in manifest["artifacts"]}
    assert bounds["executorch"] == {"x": {"0": 256}}  # the default 64, raised to the validation batch of 256

    best_model = DigitsClassifier()
    best_model.load_state_dict(torch.load(best, weights_only=False)["state_dict"])
    x = torch.rand(7, 64)
    want = best_model.eval()(x).detach()
    for suffix in (".pte", ".openvino.xml"):
        torch.testing.assert_close(load(stem + suffix)(x), want, atol=1e-5, rtol=1e-5)
    with pytest.raises(LoadError, match="OpenVINO runs on Intel's devices"):
        load(stem + ".openvino.xml", device="cuda")


def test_triton_entry_for_openvino_runs_under_its_names(tmp_path):
    model = DictToDataclass().eval()
    export(model, _mlp_inputs(4), tmp_path, "m", formats=["openvino"])
    folder = write_model_repository(tmp_path / "m.export.json", tmp_path / "repository")
    config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.backend == "openvino" and not config.platform
    assert sorted(p.name for p in (folder / "1").iterdir()) == ["model.bin", "model.xml"]
    assert [t.name for t in config.input] == ["batch.x", "batch.extra"]
    # OpenVINO reads model.xml with model.bin beside it, and finds the tensors by the config's names
    model_file = str(folder / "1" / "model.xml")
    compiled = openvino.Core().compile_model(model_file, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    (sample,) = _mlp_inputs(6, seed=3)
    results = compiled({"batch.x": sample["x"].numpy(), "batch.extra": sample["extra"].numpy()})
    by_name = {next(iter(port.get_names())): value for port, value in results.items()}
    assert sorted(by_name) == sorted(t.name for t in config.output)
    np.testing.assert_allclose(by_name["out.logits"], model(sample).logits.detach().numpy(), atol=1e-5)


def test_bounds_are_what_the_program_was_planned_for_not_what_was_asked(tmp_path):
    """ExecuTorch planned resnet18 for a batch of 15 when asked for 64: the entry and load() say 15, with a warning."""
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    manifest = export(model, torch.randn(2, 3, 64, 64), tmp_path, "r", formats=["executorch"])
    entry = manifest["artifacts"][0]
    assert entry["ok"], entry["error"]
    planned = entry["bounds"]["x"]["0"]
    assert 3 <= planned < 64  # the checks reach batch 3
    assert any("planned for smaller sizes than asked" in w for w in entry["warnings"])
    exported = load(tmp_path / "r.pte")
    x = torch.rand(planned, 3, 64, 64)
    torch.testing.assert_close(exported(x), model(x).detach(), atol=1e-4, rtol=1e-4)
    assert entry["ranges"]["x"]["0"] == [1, planned]
    with pytest.raises(StructureError, match=rf"dim 0 is {planned + 1}, outside the sizes .* \(<= {planned};"):
        exported(torch.rand(planned + 1, 3, 64, 64))


@needs_bf16
def test_openvino_bf16_runs_in_bf16_verified_at_its_own_tolerance_and_only_when_named(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    images = lambda batch, seed: torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    with torch.no_grad():
        data = [(x, model(x).argmax(-1)) for x in (images(8, seed) for seed in range(4))]  # labelled by eager's top-1
    manifest = export(model, images(2, 10), tmp_path, "r", formats=["openvino", "openvino-bf16"], accuracy_data=data)
    f32, bf16 = manifest["artifacts"]
    assert f32["ok"] and bf16["ok"], bf16["error"]
    assert bf16["tolerance"]["rtol"] == 0.02 and bf16["derived"]["precision"] == "bfloat16"
    assert bf16["max_abs_diff"] > 50 * f32["max_abs_diff"]  # it really ran in bfloat16
    assert bf16["accuracy"]["samples"] == 32 and abs(bf16["accuracy"]["delta"]) <= 0.25
    assert sorted(bf16["files"]) == ["r.bf16.openvino.bin", "r.bf16.openvino.xml"]
    unseen = images(3, 99)
    with torch.no_grad():
        want = model(unseen)
    got = load(tmp_path / "r.export.json", format="openvino-bf16")(unseen)
    scale = want.abs().max()
    assert 1e-4 * scale < (got - want).abs().max() < 0.02 * scale
    # the fastest by its timing, yet load(manifest) runs the float32 one unless bf16 is named
    edited = json.loads((tmp_path / "r.export.json").read_text())
    edited["artifacts"][1]["ms_per_call"] = edited["artifacts"][0]["ms_per_call"] / 10
    (tmp_path / "edited.export.json").write_text(json.dumps(edited))
    assert load(tmp_path / "edited.export.json").format == "openvino"


def test_bf16_is_refused_by_name_on_a_cpu_without_it(tmp_path, monkeypatch):
    """ModelExport, export() and load() refuse bf16 on a CPU without it, before any work.

    On such a CPU this is the product's own detection (OpenVINO's capabilities); on one with
    bf16, a CPU without it is stood in for. The bf16 artifact is what a CPU with bf16 leaves
    for load() to meet here: the float32 IR marked by the product's own pass, listed in the
    manifest as that CPU's export lists it (no CPU without bf16 can export one).
    """
    from lightning_deploy.exporting import options
    from lightning_deploy.exporting.methods.openvino_ir import to_bf16
    from lightning_deploy.runtime.backends import openvino as openvino_backend

    model = DictToDataclass().eval()
    manifest = export(model, _mlp_inputs(4), tmp_path, "m", formats=["openvino"])
    to_bf16(tmp_path / "m.openvino.xml", tmp_path / "m.bf16.openvino.xml")
    files = ("m.bf16.openvino.xml", "m.bf16.openvino.bin")
    sha = {name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() for name in files}
    bf16 = {**manifest["artifacts"][0], "format": "openvino-bf16", "path": "m.bf16.openvino.xml",
            "files": sorted(sha), "sha256": sha["m.bf16.openvino.xml"],
            "side_files_sha256": {"m.bf16.openvino.bin": sha["m.bf16.openvino.bin"]}}  # fmt: skip
    manifest["artifacts"].append(bf16)
    (tmp_path / "m.export.json").write_text(json.dumps(manifest))
    if HAS_BF16:
        monkeypatch.setattr(options, "has_bf16", lambda: False)
        monkeypatch.setattr(openvino_backend, "has_bf16", lambda: False)
    else:
        assert "BF16" not in openvino_backend.cpu_capabilities()
    with pytest.raises(ConfigurationError, match=r"ModelExport\(formats=.*no bfloat16 arithmetic.*HINT: drop"):
        ModelExport(formats=["openvino", "openvino-bf16"])
    with pytest.raises(ConfigurationError, match=r"export\(formats=.*asks for openvino-bf16.*no bfloat16"):
        export(model, _mlp_inputs(4), tmp_path / "again", "m", formats=["openvino", "openvino-bf16"])
    assert not (tmp_path / "again").exists()  # refused before anything was written
    with pytest.raises(LoadError, match=r"no bfloat16 arithmetic.*HINT: use the float32 'openvino' artifact"):
        load(tmp_path / "m.export.json", format="openvino-bf16")
    # the float32 IR beside it still runs
    got = load(tmp_path / "m.export.json", format="openvino")(*_mlp_inputs(3, seed=5))
    with torch.no_grad():
        want = model(*_mlp_inputs(3, seed=5))
    np.testing.assert_allclose(got.logits, want.logits.numpy(), atol=1e-4, rtol=1e-4)
