"""A real two-process DDP run on CPU (gloo): one artifact set, and no hang when export fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "ddp_fit.py"


def _run(root: Path, kind: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    return subprocess.run([sys.executable, str(SCRIPT), str(root), kind], capture_output=True, text=True,
                          timeout=300, env=env)  # fmt: skip


@pytest.mark.parametrize("kind", ["good", "broken"])
def test_ddp_exports_once_and_never_hangs(tmp_path, kind):
    result = _run(tmp_path, kind)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0 finished" in result.stdout and "rank 1 finished" in result.stdout
    manifests = sorted(tmp_path.rglob("*.export.json"))
    assert len(manifests) == 1  # exactly one set, next to the one best checkpoint
    manifest = json.loads(manifests[0].read_text())
    ckpt_dir = tmp_path / "ckpt"
    assert manifests[0].parent == ckpt_dir
    assert not list(ckpt_dir.glob(".*staging*"))
    if kind == "good":
        assert manifest["ok"]
        assert sorted(p.suffix for p in ckpt_dir.iterdir()) == [".ckpt", ".json", ".onnx", ".pt"]
    else:
        assert not manifest["ok"] and "temperature" in manifest["artifacts"][0]["error"]
