"""Size ranges: the sizes each artifact accepts on its dynamic dims, recorded, checked inside, shown, enforced, served.

torchvision classifiers (``weights=None``) exported at 64x64 with dynamic height and width: the
``.pt2`` program guards against a 1x1 last feature map, so it refuses images below 33 pixels,
which its ONNX file (no guards) takes. A model needing 9 pixels gets its range from the eager model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import numpy as np
import pytest
import torch
import torchvision
from google.protobuf import text_format
from servers import running_server, serve_cli
from torch import nn
from tritonclient.grpc import model_config_pb2

from lightning_deploy import StructureError, export, load
from lightning_deploy.exporting.ranges import probe_axis
from lightning_deploy.serving.triton import write_model_repository
from lightning_deploy.verification.rerun import verify

HEIGHT_WIDTH = {"x": {2: "height", 3: "width"}}


def _classifier(name: str) -> nn.Module:
    """Random weights, batch norms' statistics taken from one batch as training would set them.

    Untouched, mobilenet_v3_small's and efficientnet_b0's outputs are 1e-10 and 1e-13: every
    comparison would be vacuous.
    """
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None, num_classes=10)
    for norm in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        norm.momentum = None  # a cumulative average: one batch sets the statistics
    with torch.no_grad():
        model.train()(torch.randn(8, 3, 64, 64))
    return model.eval()


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mobilenet")
    model = _classifier("mobilenet_v3_small")
    manifest = export(model, torch.randn(2, 3, 64, 64), folder, "net", formats=["pt2", "onnx"],
                      dynamic_axes=HEIGHT_WIDTH)  # fmt: skip
    return folder, model, manifest


def test_the_pt2_programs_minimum_is_recorded_checked_inside_and_enforced(mobilenet):
    folder, model, manifest = mobilenet
    pt2, onnx = manifest["artifacts"]
    assert pt2["ok"] and onnx["ok"], (pt2["error"], onnx["error"])
    assert pt2["ranges"] == {"x": {"2": [33, None], "3": [33, None]}}  # the program's guards; batch 1 is taken
    assert onnx["ranges"] is None  # the ONNX graph has no guards: it was checked at 16x16, and passed
    assert pt2["checks"][2]["source"].endswith("at the artifact's smallest sizes (height >= 33, width >= 33)")
    assert pt2["checks"][2]["shapes"] == [[1, 3, 33, 33]] and pt2["checks"][2]["ok"]
    assert onnx["checks"][2]["shapes"] == [[1, 3, 16, 16]] and onnx["checks"][2]["ok"]
    program, graph = load(folder / "net.pt2"), load(folder / "net.onnx")
    for shape in [(1, 3, 33, 33), (3, 3, 40, 72)]:
        x = torch.randn(shape)
        torch.testing.assert_close(program(x), model(x), atol=1e-4, rtol=1e-3)
    with pytest.raises(StructureError, match=r"input 'x': dim 2 is 32, outside the sizes this artifact accepts there"
                                             r" \(>= 33; the manifest's ranges\)"):  # fmt: skip
        program(torch.randn(1, 3, 32, 64))
    with pytest.raises(StructureError, match=r"dim 3 is 20, outside .*>= 33"):
        program(np.zeros((1, 3, 64, 20), np.float32))
    x = torch.randn(2, 3, 16, 24)  # what the program refuses, the ONNX file runs right
    torch.testing.assert_close(graph(x), model(x), atol=1e-4, rtol=1e-3)


def test_show_names_the_ranges_and_verify_runs_each_artifact_inside_its_own(mobilenet, tmp_path):
    folder, _, manifest = mobilenet
    command = [sys.executable, "-m", "lightning_deploy.cli", "show", str(folder / "net.export.json")]
    show = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "240"})
    assert show.returncode == 0, show.stderr
    assert "accepts x[2] >= 33, x[3] >= 33" in show.stdout
    shipped = [check["source"] for check in manifest["samples"]["checks"]]
    assert len(shipped) == 4 and shipped[3].endswith("(height >= 33, width >= 33)")  # the check made for the .pt2
    result = verify(folder / "net.export.json", record=False)
    assert result.ok, result.failures
    rows = {row["format"]: row for row in result.artifacts}
    assert rows["pt2"]["checks_passed"] == 3 and rows["onnx"]["checks_passed"] == 4
    (skipped,) = rows["pt2"]["skipped"]  # the 16x16 synthetic sample is the ONNX file's, outside the program's range
    assert skipped["shapes"] == [[1, 3, 16, 16]] and skipped["reason"] == "outside its ranges"
    assert "skipped" not in rows["onnx"]


def test_a_range_learned_from_the_eager_model_reaches_triton_and_the_served_metadata(tmp_path):
    """Conv2d(3, 4, 9) fails at the synthetic 4x4: 9 is every artifact's minimum, in Triton's config and OIP's."""
    model = nn.Conv2d(3, 4, 9)
    manifest = export(model, torch.randn(2, 3, 16, 16), tmp_path, "conv", formats=["onnx"],
                      dynamic_axes={"input": {2: "height", 3: "width"}})  # fmt: skip
    ranges = {"input": {"2": [9, None], "3": [9, None]}}
    assert manifest["artifacts"][0]["ranges"] == ranges
    entry = write_model_repository(tmp_path / "conv.export.json", tmp_path / "repository")
    config = text_format.Parse((entry / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert json.loads(config.parameters["lightning_deploy.ranges"].string_value) == ranges
    with running_server(serve_cli(tmp_path / "conv.export.json"), tmp_path) as (_, url):
        meta = httpx.get(f"{url}/v2/models/conv", timeout=30).json()
        assert meta["parameters"] == {"ranges": ranges}
        small = {"inputs": [{"name": "input", "shape": [1, 3, 8, 12], "datatype": "FP32", "data": [0.0] * 288}]}
        refused = httpx.post(f"{url}/v2/models/conv/infer", json=small, timeout=30)
        assert refused.status_code == 400 and "dim 2 is 8, outside" in refused.text and ">= 9" in refused.text
        x = np.random.default_rng(0).standard_normal((1, 3, 9, 10)).astype(np.float32)
        inputs = [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]
        answer = httpx.post(f"{url}/v2/models/conv/infer", json={"inputs": inputs}, timeout=30).json()
        (output,) = answer["outputs"]
        want = model(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(np.reshape(output["data"], output["shape"]), want, atol=1e-5, rtol=1e-4)


def test_probe_axis_finds_both_ends_of_an_interval():
    asked = []

    def accepts(size):
        asked.append(size)
        return 5 <= size <= 17

    assert probe_axis(accepts, 10) == (5, 17)
    assert len(asked) < 80  # a bisection, not a walk: about log2 of the searched range per end
    assert probe_axis(lambda size: size >= 5, 10) == (5, None)
    assert probe_axis(lambda size: size >= 5, 10, largest=None, smallest=3) == (5, None)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, minimum",
    [("resnet18", 33), ("mobilenet_v3_small", 33), ("efficientnet_b0", 33), ("convnext_tiny", 64)],
)
def test_the_four_classifiers_pt2_with_dynamic_height_and_width(tmp_path, name, minimum):
    model = _classifier(name)
    manifest = export(model, torch.randn(2, 3, 64, 64), tmp_path, "net", formats=["pt2"], dynamic_axes=HEIGHT_WIDTH)
    (pt2,) = manifest["artifacts"]
    assert pt2["ok"], pt2["error"]
    assert pt2["ranges"] == {"x": {"2": [minimum, None], "3": [minimum, None]}}
    assert [check["shapes"][0][2:] for check in pt2["checks"]] == [[64, 64], [96, 96], [minimum, minimum]]
    program = load(tmp_path / "net.pt2")
    x = torch.randn(1, 3, minimum, minimum + 8)
    torch.testing.assert_close(program(x), model(x), atol=1e-4, rtol=1e-3)
    with pytest.raises(StructureError, match=rf"dim 2 is {minimum - 1}, outside .*>= {minimum}"):
        program(torch.randn(1, 3, minimum - 1, minimum))
