"""Model builders for the coverage table and tests: torchvision models made sane and non-degenerate.

torchvision's detection models built with ``weights=None`` give every box the same score
(docs/design.md, "Untrained detectors"), which turns any comparison into a tie-break. ``non_degenerate`` re-estimates
BatchNorm statistics on a few random images and scales the class-score weights, so that
detections are present with distinct scores.

A random ResNet-50 is also chaotic: it amplifies a 7e-5 relative change of its input to
1.6e-3 at the FPN. ONNX Runtime's bilinear Resize maps pixels by ``1 / scale`` where eager
``interpolate`` recomputes ``in / out`` (``recompute_scale_factor``), which moves pixels of
the resized image by about 1e-4; through such a backbone the detection scores then differ by
4e-3. ``build_detection`` therefore damps each residual branch (its last BatchNorm's weight
times 0.2, as "zero-gamma" initialisation does fully), which keeps the backbone's gain near
that of a trained one: the same resize difference stays at 1.5e-4 at the FPN.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DETECTION_BUILDERS", "build_detection", "damp_residuals", "non_degenerate"]

RESIDUAL_DAMPING = 0.2

# The class-score layer and its weight scale, chosen (on 240x320 and 256x384 random images) so
# that detections are present with distinct scores below saturation.
DETECTION_BUILDERS = {
    "fasterrcnn_mobilenet_v3_large_320_fpn": ("roi_heads.box_predictor.cls_score", 20.0),
    "fasterrcnn_resnet50_fpn": ("roi_heads.box_predictor.cls_score", 10.0),
    "maskrcnn_resnet50_fpn": ("roi_heads.box_predictor.cls_score", 10.0),
    "keypointrcnn_resnet50_fpn": ("roi_heads.box_predictor.cls_score", 10.0),
    "retinanet_resnet50_fpn": ("head.classification_head.cls_logits", 100.0),
    "fcos_resnet50_fpn": ("head.classification_head.cls_logits", 3.0),
    "ssd300_vgg16": ("head.classification_head.module_list", 0.3),
    "ssdlite320_mobilenet_v3_large": ("head.classification_head.module_list", 10.0),
}


@torch.no_grad()
def non_degenerate(
    model: nn.Module, score_layer: str | None = None, scale: float = 1.0, size: int = 320, seed: int = 0
) -> nn.Module:
    """Re-estimate BatchNorm statistics on random images and rescale the class-score weights."""
    generator = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches below
    if norms:
        model.train()
        backbone = getattr(model, "backbone", model)
        for _ in range(4):
            images = torch.rand(2, 3, size, size, generator=generator)
            if hasattr(model, "transform"):  # the backbone sees normalised, resized images
                model.transform.eval()
                images = model.transform(list(images))[0].tensors
            backbone(images)
    model.eval()
    for module in model.get_submodule(score_layer).modules() if score_layer else ():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            module.weight.mul_(scale)
    return model


@torch.no_grad()
def damp_residuals(model: nn.Module, factor: float = RESIDUAL_DAMPING) -> nn.Module:
    """Scale the last BatchNorm weight of every ResNet residual branch by ``factor``."""
    from torchvision.models.resnet import BasicBlock, Bottleneck

    for block in model.modules():
        if isinstance(block, Bottleneck):
            block.bn3.weight.mul_(factor)
        elif isinstance(block, BasicBlock):
            block.bn2.weight.mul_(factor)
    return model


def build_detection(name: str, seed: int = 0, **kwargs: object) -> nn.Module:
    """A torchvision detection model with no downloaded weights, made non-degenerate."""
    from torchvision.models import detection

    torch.manual_seed(seed)
    model = getattr(detection, name)(weights=None, weights_backbone=None, **kwargs)
    score_layer, scale = DETECTION_BUILDERS[name]
    return non_degenerate(damp_residuals(model), score_layer, scale, seed=seed)
