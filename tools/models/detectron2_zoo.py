"""detectron2's reference models (its deployment table) with random weights, made non-degenerate.

detectron2 is not on the package registry: ``../shared/scripts/build-detectron2 PYTHON`` builds it
once (about 6 minutes) and prints the folder to put on ``sys.path``; :func:`detectron2_root`
runs it (or reads ``DETECTRON2_ROOT``) and returns that folder, or ``None`` where the script is
not there. Weights cannot be downloaded here: models are built from their configs with random
weights, made non-degenerate (:func:`build`): frozen norms calibrated on a random image (features
otherwise grow to thousands), and the class-score and mask layers scaled up so that scores spread
(100 distinct detections on a random image) and mask logits leave 0.
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
    "panoptic_fpn": ("configs/COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml",
                     "roi_heads.box_predictor.cls_score"),
}  # fmt: skip
SCORE_SCALE = 10.0
# Untrained mask logits sit near 0, so binary masks are a coin flip at 0.5 that float rounding decides
# (one pixel in 100 masks differed between eager and ONNX Runtime): they are spread like the scores.
MASK_LAYERS = (
    "roi_heads.mask_head.predictor",
    "roi_heads.mask_head.coarse_head.prediction",
    "roi_heads.mask_head.point_head.predictor",
    "roi_heads.keypoint_head.score_lowres",
)
BUILD_SCRIPT = Path(__file__).resolve().parents[3] / "shared" / "scripts" / "build-detectron2"


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
        calibrate_frozen_norms(model, seed)
        spread = [score_layer, *(layer for layer in MASK_LAYERS if _has(model, layer))]
        for module in (m for layer in spread for m in model.get_submodule(layer).modules()):
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)):
                module.weight.mul_(SCORE_SCALE)
        if name == "retinanet":  # its prior (0.01) keeps untrained sigmoid scores under the 0.05 threshold
            model.head.cls_score.bias.fill_(-2.0)
    return model


def _has(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def calibrate_frozen_norms(model: nn.Module, seed: int = 0) -> None:
    """Set every ``FrozenBatchNorm2d``'s statistics to those of its input on random images, in one pass.

    detectron2's ResNets freeze their norms at identity, which with random convolutions lets
    features grow to thousands (box logits then saturate and regressed boxes leave the image):
    the same repair as re-estimating BatchNorm statistics for torchvision's models. Residual
    branches are damped (their last norm's weight scaled by 0.2) so that the sums stay sane.
    """
    from detectron2.layers import FrozenBatchNorm2d
    from detectron2.modeling.backbone.resnet import BottleneckBlock

    def set_statistics(norm: nn.Module, inputs: tuple[torch.Tensor]) -> None:
        x = inputs[0].transpose(0, 1).flatten(1)
        norm.running_mean.copy_(x.mean(1))
        norm.running_var.copy_(x.var(1) + norm.eps)

    norms = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    hooks = [n.register_forward_pre_hook(set_statistics) for n in norms]
    try:
        model([{"image": image(224, 320, seed)}])
    finally:
        for hook in hooks:
            hook.remove()
    for block in model.modules():
        if isinstance(block, BottleneckBlock):
            block.conv3.norm.weight.mul_(0.2)


def image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A random BGR image in detectron2's input form: float CHW, values 0 to 255."""
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed)) * 255
