"""detectron2's reference models (its deployment table) with random weights, made non-degenerate.

detectron2 is not on the package registry: ``../shared/scripts/build-detectron2 PYTHON`` builds it
once (about 6 minutes) and prints the folder to put on ``sys.path``; :func:`detectron2_root`
runs it (or reads ``DETECTRON2_ROOT``) and returns that folder, or ``None`` where the script is
not there. Weights cannot be downloaded here: models are built from their configs with random
weights. Untrained, every class scores about 1/81 after the softmax, under the 0.05 threshold,
so nothing is detected; the class-score layer is scaled up so that scores spread and 100
distinct detections come out of a random image (:func:`build`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

# name -> (config file under the build folder, the layer whose class scores are spread)
MODELS = {
    "mask_rcnn": ("configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml", "roi_heads.box_predictor.cls_score"),
    "keypoint_rcnn": ("configs/COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x.yaml", "roi_heads.box_predictor.cls_score"),
    "cascade_rcnn": ("configs/Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml", "roi_heads.box_predictor"),
    "retinanet": ("configs/COCO-Detection/retinanet_R_50_FPN_1x.yaml", "head.cls_score"),
    "pointrend": ("projects/PointRend/configs/InstanceSegmentation/pointrend_rcnn_R_50_FPN_1x_coco.yaml",
                  "roi_heads.box_predictor.cls_score"),
    "panoptic_fpn": ("configs/COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml", "roi_heads.box_predictor.cls_score"),
}  # fmt: skip
SCORE_SCALE = 100.0
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "shared" / "scripts" / "build-detectron2"


def detectron2_root() -> Path | None:
    """The built detectron2 folder (put on ``sys.path``), building it once; ``None`` where it cannot be built here."""
    if os.environ.get("DETECTRON2_ROOT"):
        root = Path(os.environ["DETECTRON2_ROOT"])
    elif BUILD_SCRIPT.is_file():
        done = subprocess.run(["bash", str(BUILD_SCRIPT), sys.executable], capture_output=True, text=True)
        if done.returncode != 0:
            return None
        root = Path(done.stdout.strip().splitlines()[-1])
    else:
        return None
    for path in (root, root / "projects" / "PointRend"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    return root


def build(name: str, root: Path, seed: int = 0, proposals: int | None = None) -> nn.Module:
    """detectron2's model ``name`` on the CPU, random weights with spread class scores, in eval mode.

    ``proposals`` overrides the RPN's post-NMS proposal count at test time (detectron2: 1000).
    """
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    config, score_layer = MODELS[name]
    cfg = get_cfg()
    if name == "pointrend":
        from point_rend import add_pointrend_config

        add_pointrend_config(cfg)
    cfg.merge_from_file(str(root / config))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    if proposals is not None:
        cfg.MODEL.RPN.POST_NMS_TOPK_TEST = proposals
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for module in model.get_submodule(score_layer).modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                module.weight.mul_(SCORE_SCALE)
    if name == "panoptic_fpn":
        model.combine_on = False  # the panoptic merge returns Python ints (segments_info): run it on the host
    return model


def image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A random BGR image in detectron2's input form: float CHW, values 0 to 255."""
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed)) * 255
