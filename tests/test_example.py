"""The README's main job runs as a real subprocess and reports verified artifacts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parents[1] / "examples" / "export_structured.py"
INDEX = Path(__file__).parents[1] / "docs" / "index.md"


def _report_columns(text: str) -> list[str]:
    """The column names of the first rich table in ``text`` (a name wrapped over header lines joined again)."""
    lines = text.splitlines()
    top = next(i for i, line in enumerate(lines) if line.lstrip().startswith("┏"))
    bottom = next(i for i in range(top, len(lines)) if lines[i].lstrip().startswith("┡"))
    pieces = [[cell.strip() for cell in line.split("┃")[1:-1]] for line in lines[top + 1 : bottom]]
    return [" ".join(part for part in column if part) for column in zip(*pieces, strict=True)]


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
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (manifest_path,) = (tmp_path / "checkpoints").glob("*.export.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["ok"] and manifest["checkpoint"].endswith(".ckpt")
    assert (tmp_path / "checkpoints" / manifest["checkpoint"]).is_file()
    assert "best checkpoint:" in result.stdout and manifest["checkpoint"] in result.stdout
    # the front page's sample output is this script's: the same report columns
    assert _report_columns(INDEX.read_text(encoding="utf-8")) == _report_columns(result.stdout), result.stdout
