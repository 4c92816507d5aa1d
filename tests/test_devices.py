"""Devices and the AOTInductor artifact: where each runtime runs, how inputs and outputs move.

The placement rules are tested here on the CPU with stated machines (which devices exist);
the AOTInductor package is compiled for real (tens of seconds: one model through ``export()``,
the digits model through the callback). CUDA tests run only where torch sees a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning_models import DigitsClassifier, digits_loaders
from machine import HAS_CXX, needs_cxx
from models import Prediction, StructuredModel, structured_sample
from torch import nn

from lightning_deploy import ConfigurationError, LoadError, ModelExport, export, load
from lightning_deploy.exporting.attempts import verification_device as _verification_device
from lightning_deploy.exporting.plan import device_name, module_device
from lightning_deploy.runtime.backends.onnxruntime import providers_for
from lightning_deploy.runtime.placement import choose_device, normalise_device

ALL = ["torchscript", "onnx", "pt2", "aoti"]
HERE = ALL if HAS_CXX else ALL[:-1]  # aoti compiles C++: without a compiler, the other formats are still tested
CUDA = torch.cuda.is_available()
HINT = "install the GPU build"


def _machine(*devices: str):
    """``has_device`` of a machine that has exactly ``devices``."""
    return lambda device: device in devices


# --- placement: which device each runtime gets -------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "recorded", "machine", "expected"),
    [
        (None, None, (), "cpu"),  # manifests before devices were recorded ran on the CPU
        (None, "cpu", ("cuda",), "cpu"),  # the recorded device, even where a GPU exists
        (None, "cuda", ("cuda",), "cuda"),  # a GPU artifact runs on the GPU where there is one
        (None, "cuda", (), "cpu"),  # ... and on the CPU where there is none
        (None, "cuda:1", ("cuda", "cuda:1"), "cuda:1"),
        (None, "cuda:1", ("cuda",), "cpu"),
        ("cpu", "cuda", ("cuda",), "cpu"),  # asked for: always honoured
        ("cuda", "cpu", ("cuda",), "cuda"),
        ("CUDA:0", "cpu", ("cuda",), "cuda"),  # "cuda:0" is written "cuda"
        ("cuda:1", None, ("cuda", "cuda:1"), "cuda:1"),
    ],
)
def test_choose_device_for_an_ordinary_artifact(requested, recorded, machine, expected):
    assert choose_device(requested, recorded, "onnx", _machine(*machine), HINT) == expected


@pytest.mark.parametrize(
    ("requested", "machine", "message"),
    [
        ("cuda", (), r"load\(device='cuda'\): cuda is not available here\. HINT: install the GPU build"),
        ("cuda:1", ("cuda",), r"load\(device='cuda:1'\): cuda:1 is not available"),
        ("tpu", ("cuda",), r"load\(device='tpu'\): unknown device\. HINT: use 'cpu', 'cuda' or 'cuda:N'"),
        ("cuda:x", ("cuda",), r"unknown device"),
    ],
)
def test_a_device_that_is_absent_or_unknown_is_refused(requested, machine, message):
    with pytest.raises(LoadError, match=message):
        choose_device(requested, "cpu", "torchscript", _machine(*machine), HINT)


def test_a_compiled_package_runs_only_on_the_device_kind_it_was_compiled_for():
    gpu = _machine("cuda", "cuda:1")
    assert choose_device(None, "cuda", "aoti", gpu, HINT) == "cuda"
    assert choose_device("cuda:1", "cuda", "aoti", gpu, HINT) == "cuda:1"  # another GPU of the same kind
    with pytest.raises(LoadError, match=r"compiled for cpu and runs only there.*device='cpu'"):
        choose_device("cuda", "cpu", "aoti", gpu, HINT)
    with pytest.raises(LoadError, match=r"compiled for cuda and runs only there"):
        choose_device("cpu", "cuda", "aoti", gpu, HINT)
    with pytest.raises(LoadError, match=r"compiled for cuda, which this machine lacks"):
        choose_device(None, "cuda", "aoti", _machine(), HINT)  # no silent CPU for a GPU package


def test_normalise_device_and_device_names():
    assert normalise_device(" cuda:0 ") == "cuda" and normalise_device("cuda:3") == "cuda:3"
    assert device_name(torch.device("cuda", 0)) == "cuda" and device_name(torch.device("cuda:2")) == "cuda:2"
    assert device_name(torch.device("cpu")) == "cpu"


def test_onnx_providers_follow_the_device():
    assert providers_for("cpu") == ["CPUExecutionProvider"]
    assert providers_for("cuda:2") == [("CUDAExecutionProvider", {"device_id": 2}), "CPUExecutionProvider"]


def test_the_export_follows_the_module_not_the_sample():
    on_meta = nn.Linear(2, 2, device="meta")
    assert module_device(on_meta, [torch.zeros(1)]) == torch.device("meta")
    assert module_device(nn.ReLU(), [torch.zeros(1, device="meta")]) == torch.device("meta")  # no weights


@pytest.mark.skipif(CUDA, reason="checks this machine's CPU-only ONNX Runtime")
def test_onnx_of_a_gpu_module_is_verified_on_the_cpu_with_a_note_when_onnxruntime_has_no_cuda():
    assert _verification_device("onnx", "cpu") == ("cpu", None)
    device, note = _verification_device("onnx", "cuda")
    assert device == "cpu" and "not on cuda" in note and "pip install onnxruntime-gpu" in note
    assert _verification_device("torchscript", "cpu") == ("cpu", None)


# --- the AOTInductor artifact and load(device=) on this machine --------------------------------


@pytest.fixture(scope="module")
def structured_export(tmp_path_factory):
    model = StructuredModel().eval()
    folder = tmp_path_factory.mktemp("aoti")
    manifest = export(model, structured_sample(2), folder, "model", formats=HERE)
    return model, folder, manifest


@needs_cxx
def test_aoti_of_a_structured_model_is_verified_at_two_shapes(structured_export):
    _, folder, manifest = structured_export
    entries = {a["format"]: a for a in manifest["artifacts"]}
    assert manifest["ok"], [a["error"] for a in manifest["artifacts"]]
    aoti = entries["aoti"]
    assert aoti["path"] == "model.aoti.pt2" and (folder / "model.aoti.pt2").is_file()
    assert aoti["runtime"] == "aotinductor" and aoti["method"] == "export" and aoti["verified"]
    assert [s[0] for s in aoti["checked_shapes"][:2]] == [[2, 8], [3, 8]]
    assert aoti["attempts"][0]["seconds"]["compile"] > 0  # the compile is timed on its own
    assert {a["device"] for a in manifest["artifacts"]} == {"cpu"}
    saved = json.loads((folder / "model.export.json").read_text())
    assert saved["artifacts"][3]["device"] == "cpu"


@needs_cxx
def test_show_lists_the_aoti_package_and_each_device(structured_export):
    _, folder, manifest = structured_export
    command = [sys.executable, "-m", "lightning_deploy.cli", "show", str(folder / "model.export.json")]
    shown = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    rows = [line for line in shown.stdout.splitlines() if line.startswith("│ aoti")]
    assert rows and "export" in rows[0] and "cpu" in rows[0] and "yes" in rows[0], shown.stdout
    assert "model.aoti.pt2" in shown.stdout and manifest["artifacts"][3]["sha256"][:12] in shown.stdout


@pytest.mark.parametrize("fmt", [*ALL[:-1], pytest.param("aoti", marks=needs_cxx)])
def test_every_format_loads_on_the_cpu_with_structured_io(structured_export, fmt):
    model, folder, _ = structured_export
    loaded = load(folder / "model.export.json", format=fmt, device="cpu")
    assert loaded.device == "cpu"
    (sample,) = structured_sample(5)
    got, want = loaded(sample), model(sample)
    assert isinstance(got, Prediction) and got.missing is None and got.stats["nothing"] is None
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got.parts[1].second, want.parts[1].second, atol=1e-5, rtol=1e-4)
    assert got.logits.device.type == "cpu"
    numpy_out = loaded({k: v.numpy() for k, v in sample.items()})  # numpy in, numpy out
    np.testing.assert_allclose(numpy_out.logits, want.logits.detach().numpy(), atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(CUDA, reason="needs a machine without CUDA")
@pytest.mark.parametrize(("fmt", "names"), [("onnx", "CUDAExecutionProvider"), ("torchscript", "cuda"), ("pt2", "cuda"),
                                            pytest.param("aoti", "cuda", marks=needs_cxx)])  # fmt: skip
def test_load_on_cuda_without_cuda_names_the_device_and_the_fix(structured_export, fmt, names):
    _, folder, _ = structured_export
    with pytest.raises(LoadError, match=r"load\(device='cuda'\): cuda is not available here\. HINT") as caught:
        load(folder / "model.export.json", format=fmt, device="cuda")
    assert names in str(caught.value)


@needs_cxx
def test_providers_and_device_together_are_refused(structured_export):
    _, folder, _ = structured_export
    with pytest.raises(LoadError, match=r"pass one of them"):
        load(folder / "model.onnx", device="cpu", providers=["CPUExecutionProvider"])
    with pytest.raises(LoadError, match=r"providers=\.\.\.\) is for ONNX artifacts"):
        load(folder / "model.aoti.pt2", providers=["CPUExecutionProvider"])


def test_aoti_without_a_cxx_compiler_is_refused_before_anything_runs(tmp_path):
    """torch's own compiler search decides; on a machine with a compiler, torch's config names none."""
    from torch._inductor import config

    refused = r"formats asks for aoti, which compiles C\+\+, and torch finds no compiler .*HINT: install g\+\+"
    no_compiler = (None, str(tmp_path / "no-such-g++"))
    with config.patch({"cpp.cxx": no_compiler} if HAS_CXX else {}):
        with pytest.raises(ConfigurationError, match=r"ModelExport\(formats=\['onnx', 'aoti'\]\): " + refused):
            ModelExport(formats=["onnx", "aoti"])
        with pytest.raises(ConfigurationError, match=r"export\(formats=\['aoti'\]\): " + refused):
            export(StructuredModel().eval(), structured_sample(2), tmp_path / "out", "model", formats=["aoti"])
    assert not (tmp_path / "out").exists()


@needs_cxx
def test_the_callback_compiles_aoti_for_the_best_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = DigitsClassifier(best_epoch=1)
    checkpoints = ModelCheckpoint(dirpath=tmp_path, monitor="val_score", mode="max")
    callback = ModelExport(formats=["aoti", "torchscript"], preflight=True, strict=True)
    trainer = pl.Trainer(max_epochs=2, callbacks=[checkpoints, callback], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")  # fmt: skip
    trainer.fit(model, *digits_loaders())
    best = checkpoints.best_model_path
    stem = best.rsplit("/", 1)[1].removesuffix(".ckpt")
    assert "epoch=1" in best
    manifest = callback.manifest
    assert manifest["ok"] and [a["device"] for a in manifest["artifacts"]] == ["cpu", "cpu"]
    rebuilt = DigitsClassifier()
    rebuilt.load_state_dict(torch.load(best, weights_only=False)["state_dict"])
    loaded = load(tmp_path / f"{stem}.aoti.pt2")
    x = torch.randn(7, 64)
    torch.testing.assert_close(loaded(x), rebuilt(x), atol=1e-5, rtol=1e-4)


# --- on a GPU -----------------------------------------------------------------------------------


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_a_cuda_module_is_exported_verified_and_loaded_on_cuda(tmp_path):
    model = StructuredModel().cuda().eval()
    manifest = export(model, structured_sample(2), tmp_path, "model", formats=ALL)
    entries = {a["format"]: a for a in manifest["artifacts"]}
    assert all(entries[f]["ok"] for f in ALL), [a["error"] for a in manifest["artifacts"]]
    assert {entries[f]["device"] for f in ("torchscript", "pt2", "aoti")} == {"cuda"}
    (sample,) = structured_sample(5)
    for fmt in ("torchscript", "pt2", "aoti"):
        loaded = load(tmp_path / "model.export.json", format=fmt)  # the recorded device by default
        got = loaded(sample)  # CPU inputs are moved to the GPU; outputs stay there
        assert loaded.device == "cuda" and got.logits.device.type == "cuda"
        torch.testing.assert_close(got.logits, model({k: v.cuda() for k, v in sample.items()}).logits,
                                   atol=1e-4, rtol=1e-3)  # fmt: skip
