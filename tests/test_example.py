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
