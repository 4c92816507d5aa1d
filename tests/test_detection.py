"""A model the dynamo exporter cannot export: ONNX comes from the recorded fallback."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

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
    assert [shapes[0] for shapes in onnx["checked_shapes"]] == [[3, 240, 320], [3, 256, 384], [3, 48, 64]]
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
    assert [s[0] for s in artifact["checked_shapes"][:2]] == [[3, 240, 320], [3, 256, 384]]
    # Scripted TorchScript takes the list itself: also checked with a second image in it.
    assert [len(s) for s in artifact["checked_shapes"]] == ([1, 1, 1, 2] if method == "script" else [1, 1, 1])
    assert artifact["detections"]["matched"] > 0


class _Detector(pl.LightningModule):
    """Faster R-CNN (mobilenet, non-degenerate) trained a couple of steps on synthetic boxes."""

    def __init__(self) -> None:
        super().__init__()
        from zoo import build_detection

        self.model = build_detection("fasterrcnn_mobilenet_v3_large_320_fpn").train()  # Lightning keeps modes
        self.example_input_array = ([torch.rand(3, 240, 320, generator=torch.Generator().manual_seed(1))],)

    def forward(self, images):
        return self.model(images)

    def training_step(self, batch, batch_idx):
        images, targets = batch
        return sum(self.model(list(images), list(targets)).values())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-4)


def _synthetic_boxes(n: int = 4):
    generator = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(n):
        corner = torch.randint(0, 150, (2,), generator=generator).float()
        box = torch.cat([corner, corner + 60]).unsqueeze(0)
        samples.append((torch.rand(3, 240, 320, generator=generator), {"boxes": box, "labels": torch.tensor([1])}))
    return DataLoader(samples, batch_size=2, collate_fn=lambda batch: tuple(zip(*batch)))


def test_detection_model_end_to_end_through_the_callback(tmp_path):
    pytest.importorskip("torchvision")
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_deploy import ModelExport

    exporter = ModelExport(formats=["onnx", "torchscript"], dynamic_batch=False, preflight=False,
                           dynamic_axes={"images": {1: "height", 2: "width"}})  # fmt: skip
    callbacks = [ModelCheckpoint(dirpath=tmp_path / "ckpt"), exporter]
    trainer = pl.Trainer(default_root_dir=tmp_path, max_epochs=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=callbacks)  # fmt: skip
    trainer.fit(_Detector(), _synthetic_boxes())
    manifest = exporter.manifest
    assert manifest["ok"], [a["error"] for a in manifest["artifacts"]]
    assert manifest["checkpoint"].endswith(".ckpt")
    for artifact in manifest["artifacts"]:
        assert artifact["detections"]["matched"] > 0, artifact
    detections = load(tmp_path / "ckpt" / manifest["artifacts"][0]["path"])([torch.rand(3, 200, 280)])
    assert isinstance(detections, list) and set(detections[0]) == {"boxes", "labels", "scores"}
