"""Operator libraries an artifact calls are recorded (``requires``) and imported by load()."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

torchvision = pytest.importorskip("torchvision")


class Suppress(nn.Module):
    """Boxes kept by torchvision's NMS, zeroed elsewhere (fixed shape: the kept mask, not the indices)."""

    def forward(self, boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        keep = torchvision.ops.nms(boxes, scores, 0.5)
        mask = torch.zeros_like(scores).index_fill(0, keep, 1.0)
        return boxes * mask.unsqueeze(-1)


def _boxes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(n, 2, generator=generator) * 50
    size = 10 + torch.rand(n, 2, generator=generator) * 20
    return torch.cat([corner, corner + size], -1), torch.rand(n, generator=generator)


def test_torchvision_ops_are_recorded_and_load_imports_them_in_a_fresh_process(tmp_path):
    from lightning_deploy import export

    manifest = export(Suppress(), _boxes(12, 0), tmp_path, "nms", formats=["torchscript", "pt2"])
    for artifact in manifest["artifacts"]:
        assert artifact["ok"], artifact["error"]
        assert artifact["requires"] == ["torchvision"], artifact["format"]
    boxes, scores = _boxes(17, 1)
    torch.save({"boxes": boxes, "scores": scores, "want": Suppress()(boxes, scores)}, tmp_path / "case.pt")
    script = (
        "import sys, torch\n"
        "from lightning_deploy import load\n"
        f"case = torch.load({str(tmp_path / 'case.pt')!r})\n"
        "assert 'torchvision' not in sys.modules\n"
        f"model = load({str(tmp_path / 'nms.torchscript.pt')!r})\n"
        "assert 'torchvision' in sys.modules  # imported by load(), for its operators\n"
        "torch.testing.assert_close(model(case['boxes'], case['scores']), case['want'])\n"
        "print('ran')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "ran" in result.stdout, result.stderr[-2000:]

    show = [sys.executable, "-m", "lightning_deploy.cli", "show", str(tmp_path / "nms.export.json")]
    shown = subprocess.run(show, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert "requires torchvision" in shown.stdout, shown.stdout


def test_a_missing_operator_library_is_a_load_error_naming_the_package(tmp_path):
    from lightning_deploy import LoadError, export, load

    export(nn.Linear(3, 2), torch.randn(2, 3), tmp_path, "m", formats=["torchscript"])
    manifest_file = tmp_path / "m.export.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["artifacts"][0]["requires"] = ["no_such_operator_library"]
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(LoadError, match="pip install no_such_operator_library"):
        load(tmp_path / "m.torchscript.pt")
