"""The README's main job runs as a real subprocess and reports verified artifacts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parents[1] / "examples" / "export_structured.py"


def test_main_job_exports_and_prints_the_table(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--out", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "tagger.export.json").read_text())
    assert [a["format"] for a in manifest["artifacts"]] == ["torchscript", "onnx", "pt2"]
    assert all(a["ok"] and a["max_abs_diff"] <= 1e-5 for a in manifest["artifacts"])
    for artifact in manifest["artifacts"]:
        assert artifact["path"] in result.stdout
    assert "Scores(logits (3, 20, 5)" in result.stdout


def test_digits_main_job_trains_and_exports_the_best_checkpoint(tmp_path):
    script = EXAMPLE.parent / "train_digits.py"
    result = subprocess.run(
        [sys.executable, str(script), "--root", str(tmp_path), "--epochs", "2"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (manifest_path,) = (tmp_path / "checkpoints").glob("*.export.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["ok"] and manifest["checkpoint"].endswith(".ckpt")
    assert (tmp_path / "checkpoints" / manifest["checkpoint"]).is_file()
    assert "best checkpoint:" in result.stdout and manifest["checkpoint"] in result.stdout
