"""export(): real exporters, real runtimes, outputs compared with eager at two shapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from models import NoOnnxOp, Prediction, ShapeBranch, StructuredModel, TwoInputs, ValueBranch, structured_sample

from lightning_deploy import export, load
from lightning_deploy.exporting.methods import EXPORTERS, declared

ALL_FORMATS = ["torchscript", "onnx", "pt2"]


def _batch_sizes(artifact: dict) -> set[int]:
    """The batch sizes of the export sample and the second sample (the synthetic one is smaller still)."""
    return {shapes[0][0] for shapes in artifact["checked_shapes"][:2]}


def _assert_same(got, want, atol=1e-5):
    np.testing.assert_allclose(np.asarray(got), want.detach().numpy(), atol=atol, rtol=0)


@pytest.fixture(scope="module")
def structured_export(tmp_path_factory):
    dirpath = tmp_path_factory.mktemp("structured")
    manifest = export(StructuredModel(), structured_sample(2), dirpath, "model", formats=ALL_FORMATS)
    return dirpath, manifest


def test_structured_model_all_formats_verified(structured_export):
    dirpath, manifest = structured_export
    assert manifest == json.loads((dirpath / "model.export.json").read_text())
    assert manifest["inputs"]["names"] == ["batch.x", "batch.mask"]
    assert manifest["outputs"]["names"] == [
        "out.logits",
        "out.stats.summary.mean",
        "out.stats.summary.max",
        "out.parts.0",
        "out.parts.1.first",
        "out.parts.1.second",
    ]
    by_format = {a["format"]: a for a in manifest["artifacts"]}
    assert set(by_format) == set(ALL_FORMATS)
    for fmt, artifact in by_format.items():
        assert artifact["ok"] and artifact["verified"], (fmt, artifact["error"])
        assert artifact["max_abs_diff"] <= 1e-5
        assert _batch_sizes(artifact) == {2, 3}
        assert (dirpath / artifact["path"]).is_file()
    assert by_format["pt2"]["method"] == "export"
    assert by_format["torchscript"]["method"] == "trace"


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_load_returns_the_model_structure(structured_export, fmt):
    dirpath, manifest = structured_export
    path = dirpath / next(a["path"] for a in manifest["artifacts"] if a["format"] == fmt)
    model = load(path)
    for batch in (1, 5):
        sample = structured_sample(batch)
        want = StructuredModel().eval()(*sample)
        got = model(*sample)
        assert isinstance(got, Prediction)  # the class is importable here, so it is the class itself
        assert got.missing is None and got.stats["nothing"] is None
        assert isinstance(got.parts, list) and type(got.parts[1]).__name__ == "Pair"
        _assert_same(got.logits, want.logits)
        _assert_same(got.stats["summary"]["max"], want.stats["summary"]["max"])
        _assert_same(got.parts[1].second, want.parts[1].second)
        numpy_in = ({k: v.numpy() for k, v in sample[0].items()},)
        assert isinstance(model(*numpy_in).logits, np.ndarray)


def test_resnet18_onnx_verified_at_second_batch_and_resolution(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None)
    manifest = export(
        model,
        torch.randn(2, 3, 64, 64),
        tmp_path,
        "resnet18",
        formats=["onnx"],
        dynamic_axes={"x": {2: "height", 3: "width"}},
    )
    (onnx,) = manifest["artifacts"]
    assert onnx["ok"], onnx["error"]
    # export sample, second sample, synthetic sample (smaller, new values)
    assert onnx["checked_shapes"] == [[[2, 3, 64, 64]], [[3, 3, 96, 96]], [[1, 3, 16, 16]]]
    assert [c["source"] for c in onnx["checks"]] == [
        "export sample", "second sample (dynamic dims changed)", "synthetic sample (dynamic dims smaller, new values)"
    ]  # fmt: skip
    assert onnx["checks_passed"] == 3 and all(c["max_abs_diff"] < 1e-3 for c in onnx["checks"])
    assert manifest["inputs"]["dynamic_axes"] == {"x": {"0": "batch", "2": "height", "3": "width"}}
    runner = load(tmp_path / "resnet18.onnx")
    image = torch.randn(1, 3, 80, 112)
    _assert_same(runner(image), model.eval()(image), atol=1e-4)


@pytest.mark.parametrize("model_cls", [ShapeBranch, ValueBranch])
def test_auto_scripts_what_tracing_bakes_in(tmp_path, model_cls):
    model = model_cls()
    manifest = export(model, torch.rand(2, 4) + 0.1, tmp_path, "branchy", formats=["torchscript", "onnx"])
    for artifact in manifest["artifacts"]:
        assert artifact["ok"], artifact["error"]
        assert artifact["method"] == "script"
        trace = next(a for a in artifact["attempts"] if a["method"] == "trace")
        assert trace["tracer_warnings"] or not trace["ok"]  # why tracing was not kept
    for path in ("branchy.torchscript.pt", "branchy.onnx"):
        runner = load(tmp_path / path)
        for x in (torch.rand(2, 4) + 0.1, -torch.rand(2, 4) - 0.1, torch.rand(5, 4) + 0.1, -torch.rand(5, 4) - 0.1):
            _assert_same(runner(x), model(x))


def test_shape_branch_trace_fails_at_second_shape_and_is_recorded(tmp_path):
    manifest = export(ShapeBranch(), torch.rand(2, 4), tmp_path, "m", formats=["torchscript"])
    trace = manifest["artifacts"][0]["attempts"][0]
    assert trace["method"] == "trace" and not trace["ok"]
    assert "mismatch in torch.jit" in trace["error"] and "output 'out'" in trace["error"]


def test_batch_one_sample_is_exported_at_two_and_checked_at_one(tmp_path):
    manifest = export(TwoInputs(), (torch.randn(1, 4), torch.randn(1, 3)), tmp_path, "m", formats=["onnx", "pt2"])
    assert manifest["inputs"]["shapes"] == [[2, 4], [2, 3]]
    for artifact in manifest["artifacts"]:
        assert artifact["ok"], artifact["error"]
        assert _batch_sizes(artifact) == {1, 2}


def test_failing_format_does_not_stop_the_others(tmp_path):
    manifest = export(NoOnnxOp(), torch.randn(2, 3, 3), tmp_path, "m", formats=["onnx", "torchscript"])
    onnx, torchscript = manifest["artifacts"]
    assert not onnx["ok"] and onnx["sha256"] is None and onnx["error"]
    assert [a["method"] for a in onnx["attempts"]] == ["export", "trace", "script"]
    assert all(a["error"] for a in onnx["attempts"])
    # the exporter that names the operator it cannot export, not the dynamo exporter's generic failure
    assert onnx["error"] == onnx["attempts"][1]["error"] and "linalg_eigvals" in onnx["error"]
    assert torchscript["ok"], torchscript["error"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.export.json", "m.samples.npz", "m.torchscript.pt"]


def _breaks_mid_write(capture, path, ctx):
    """The trace method's ONNX writer, dying after writing half a file."""
    path.write_bytes(b"half an onnx model")
    raise OSError("disk full")


def test_exporter_raising_mid_write_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr("lightning_deploy.exporting.methods.trace.write_onnx", _breaks_mid_write)
    (tmp_path / "m.onnx").write_bytes(b"an older artifact")
    manifest = export(
        TwoInputs(),
        (torch.randn(2, 4), torch.randn(2, 3)),
        tmp_path,
        "m",
        method="trace",
        formats=["onnx", "torchscript"],
    )
    onnx, torchscript = manifest["artifacts"]
    assert not onnx["ok"] and "disk full" in onnx["error"]
    assert torchscript["ok"]
    assert (tmp_path / "m.onnx").read_bytes() == b"an older artifact"  # not replaced by a broken one
    names = ["m.export.json", "m.onnx", "m.samples.npz", "m.torchscript.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    with pytest.raises(Exception, match="failed at export: OSError: disk full"):
        load(tmp_path / "m.onnx")


def test_exporters_conform_to_one_interface():
    import inspect

    from lightning_deploy.formats import FORMATS

    for method, exporter in EXPORTERS.items():
        assert exporter.method == method
    for fmt in FORMATS:  # every method a format declares has an exporter, and each declared writer exists
        assert fmt.methods and set(fmt.methods) <= set(EXPORTERS), fmt.name
        for method, writer in fmt.writers:
            found = declared(writer)
            assert list(inspect.signature(found).parameters) == ["capture", "path", "ctx"], (fmt.name, method)
        if fmt.derived_by:
            assert list(inspect.signature(declared(fmt.derived_by)).parameters)[:2] == ["source", "target"], fmt.name


def test_bare_export_of_a_lightning_module_makes_torchscript(tmp_path):
    """No Trainer attached: the engine itself applies Lightning's _jit_is_scripting (the `trainer` property raises)."""
    from lightning_models import DigitsClassifier

    torch.manual_seed(0)
    model = DigitsClassifier()
    with pytest.raises(RuntimeError, match="not attached to a `Trainer`"):
        model.trainer  # noqa: B018 - what tracing and scripting would read
    manifest = export(model, torch.randn(4, 64), tmp_path, "digits", formats=["torchscript"])
    assert manifest["ok"], manifest["artifacts"][0]["error"]
    x = torch.randn(5, 64)
    torch.testing.assert_close(load(tmp_path / "digits.torchscript.pt")(x), model(x), atol=1e-5, rtol=1e-4)


def test_torchscript_is_said_deprecated_once_in_our_words_not_by_torch_on_every_save(tmp_path):
    import warnings

    from lightning_deploy.formats import by_name

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest = export(torch.nn.Linear(4, 2), torch.randn(2, 4), tmp_path, "m", formats=["torchscript"])
    assert not [w for w in caught if "torch.jit.save" in str(w.message)], [str(w.message) for w in caught]
    (entry,) = manifest["artifacts"]
    assert entry["ok"] and by_name("torchscript").notice in entry["warnings"]
    show = [sys.executable, "-m", "lightning_deploy.cli", "show", str(tmp_path / "m.export.json")]
    shown = subprocess.run(show, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "400"})
    assert f"torchscript: {by_name('torchscript').notice}." in shown.stdout
