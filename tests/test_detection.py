"""A model the dynamo exporter cannot export: ONNX comes from the recorded fallback."""

from __future__ import annotations

import pytest
import torch

from lightning_deploy import export, load


def test_fasterrcnn_onnx_falls_back_to_trace_and_loads_as_list_of_dicts(tmp_path):
    detection = pytest.importorskip("torchvision.models.detection")
    model = detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None)
    images = [torch.rand(3, 240, 320), torch.rand(3, 240, 320)]
    manifest = export(
        model,
        (images,),
        tmp_path,
        "frcnn",
        formats=["onnx"],
        dynamic_batch=False,
        dynamic_axes={"images": {1: "height", 2: "width"}},
    )
    (onnx,) = manifest["artifacts"]
    first = onnx["attempts"][0]
    assert first["method"] == "export" and not first["ok"]
    assert first["error"]  # the dynamo exporter's own error, kept in the manifest
    assert onnx["method"] == "trace" and (tmp_path / "frcnn.onnx").is_file()
    assert [shapes[0] for shapes in onnx["checked_shapes"]] == [[3, 240, 320], [3, 256, 384]]
    assert manifest["outputs"]["names"][:3] == ["out.0.boxes", "out.0.labels", "out.0.scores"]
    # Whether the degenerate weights=None model verifies is the model-coverage work; here the
    # fallback must have produced a runnable artifact with the model's own output structure.
    runner = load(tmp_path / "frcnn.onnx", verified_only=False)
    out = runner([torch.rand(3, 200, 300), torch.rand(3, 200, 300)])
    assert isinstance(out, list) and len(out) == 2
    assert all(set(d) == {"boxes", "labels", "scores"} for d in out)
    assert out[0]["boxes"].shape[-1] == 4 and out[0]["scores"].dim() == 1


@pytest.mark.parametrize(("method", "formats"), [("trace", ["torchscript"]), ("script", ["torchscript"]),
                                               ("auto", ["onnx"])])  # fmt: skip
def test_fasterrcnn_verified_with_detections_present(tmp_path, method, formats):
    pytest.importorskip("torchvision")
    from zoo import build_detection

    model = build_detection("fasterrcnn_mobilenet_v3_large_320_fpn")
    images = [torch.rand(3, 240, 320, generator=torch.Generator().manual_seed(1))]
    with torch.no_grad():
        scores = model(images)[0]["scores"]
    assert len(scores) > 0 and scores.unique().numel() == len(scores)  # non-degenerate
    manifest = export(model, (images,), tmp_path, "frcnn", formats=formats, method=method, dynamic_batch=False,
                      dynamic_axes={"images": {1: "height", 2: "width"}})  # fmt: skip
    (artifact,) = manifest["artifacts"]
    assert artifact["ok"], artifact["error"]
    assert artifact["method"] == ("trace" if method == "auto" else method)  # ONNX: dynamo fails, trace verifies
    assert [s[0] for s in artifact["checked_shapes"]] == [[3, 240, 320], [3, 256, 384]]
    assert artifact["detections"]["matched"] > 0
