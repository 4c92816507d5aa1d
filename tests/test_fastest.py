"""Every verified artifact is timed at export; load(manifest) runs the fastest, and show marks it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from models import StructuredModel, structured_sample

from lightning_deploy import export, load


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fastest")
    formats = ["onnx", "torchscript", "pt2", "onnx-int8"]
    manifest = export(StructuredModel(), structured_sample(2), folder, "model", formats=formats)
    return folder, manifest


def _with_timings(folder, manifest, timings, name):
    """A copy of the manifest beside the artifacts, its ``ms_per_call`` replaced (``None``: removed)."""
    edited = json.loads(json.dumps(manifest))
    for entry in edited["artifacts"]:
        if entry["format"] in timings:
            entry["ms_per_call"] = timings[entry["format"]]
    path = folder / f"{name}.export.json"
    path.write_text(json.dumps(edited))
    return path


def test_every_verified_artifact_records_its_time_through_load(exported):
    _, manifest = exported
    for entry in manifest["artifacts"]:
        assert entry["verified"] and entry["ms_per_call"] > 0, entry["format"]
    assert manifest["artifacts"][1]["ms_per_call"] != manifest["artifacts"][2]["ms_per_call"]


def test_load_of_a_manifest_runs_the_fastest_verified_full_precision_artifact(exported):
    folder, manifest = exported
    cases = [
        ({"onnx": 0.9, "torchscript": 0.5, "pt2": 0.7, "onnx-int8": 0.1}, {}, "torchscript"),  # int8 only by name
        ({"onnx": 0.9, "torchscript": 0.5, "pt2": 0.2, "onnx-int8": 0.1}, {}, "pt2"),
        ({"onnx": 0.9, "torchscript": None, "pt2": 0.2}, {}, "onnx"),  # a timing missing: the fixed preference
        ({"onnx": 0.9, "torchscript": 0.5, "pt2": 0.2}, {"device": "cpu"}, "pt2"),
    ]
    with torch.no_grad():
        want = StructuredModel().eval()(*structured_sample(5)).logits
    for index, (timings, options, chosen) in enumerate(cases):
        path = _with_timings(folder, manifest, timings, f"case{index}")
        model = load(path, **options)
        assert model.format == chosen, (timings, model.format)
        torch.testing.assert_close(model(*structured_sample(5)).logits, want, rtol=1e-4, atol=1e-5)
    assert load(_with_timings(folder, manifest, cases[0][0], "named"), format="onnx-int8").format == "onnx-int8"


def test_timings_of_a_cpu_export_do_not_choose_for_a_gpu_run(exported):
    """Times taken on the CPU say nothing about a GPU: there the fixed preference decides (onnx first)."""
    from lightning_deploy.artifact.resolve import resolve_artifact

    folder, manifest = exported
    path = _with_timings(folder, manifest, {"onnx": 0.9, "torchscript": 0.5, "pt2": 0.2}, "gpu")
    assert resolve_artifact(path).entry.format == "pt2"
    assert resolve_artifact(path, device="cuda").entry.format == "onnx"


def test_show_marks_the_artifact_load_runs(exported):
    folder, manifest = exported
    path = _with_timings(folder, manifest, {"onnx": 0.9, "torchscript": 0.5, "pt2": 0.2}, "shown")
    show = subprocess.run([sys.executable, "-m", "lightning_deploy.cli", "show", str(path)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert show.returncode == 0, show.stderr
    rows = show.stdout.split("│ pt2")
    assert len(rows) == 2 and "load() default" in rows[1].split("├")[0].split("\n")[1], show.stdout
    assert show.stdout.count("load() default") == 1
    assert "0.200" in show.stdout and "0.500" in show.stdout
