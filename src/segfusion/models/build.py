"""The builder: specs in, components out, injected into a `PanopticModel` (imports torch).

`build_model(variant, spec, classes)` makes the backbone with FPN, torchvision's Mask R-CNN
detector on it (when the variant has one) and the semantic head (when it has one), and hands
them to `PanopticModel`, which reads no config (torchvision's ``MaskRCNN(backbone, ...,
mask_head=...)`` style). The specs themselves are torch-free (`segfusion.specs`).

The detector's test-time post-processing is built with torchvision's defaults (score >= 0.05,
at most 100 detections) and with the *training* RPN top-n for its eval mode. That is what the
frozen detector uses while stage 2 trains the head on the IMP canvas; `PanopticModel.predict`
swaps in the run's `InferenceSpec`, so inference settings never change training.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from segfusion.models.backbones import build_backbone
from segfusion.models.heads import build_semantic_head
from segfusion.models.panoptic import IMAGE_MEAN, IMAGE_STD, PanopticModel
from segfusion.specs import InferenceSpec, ModelSpec, ModelVariant
from segfusion.types import ClassInfo

TRAINING_DETECTION = InferenceSpec()
"""Post-processing of the detector in eval mode during training (the IMP canvas of stage 2)."""


def build_detector(backbone: nn.Module, spec: ModelSpec, num_things: int) -> MaskRCNN:
    """torchvision's Mask R-CNN on ``backbone`` with the sizes of ``spec``; labels 1..num_things."""
    levels = len(spec.anchor_sizes)
    anchors = AnchorGenerator(tuple((s,) for s in spec.anchor_sizes), ((0.5, 1.0, 2.0),) * levels)
    c = spec.fpn_channels
    ncls = num_things + 1
    return MaskRCNN(
        backbone,
        num_classes=None,
        min_size=spec.min_size,
        max_size=spec.max_size,
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=spec.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=spec.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=spec.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_test=spec.rpn_post_nms_top_n_train,
        rpn_batch_size_per_image=spec.rpn_batch_size_per_image,
        box_head=TwoMLPHead(c * 7 * 7, spec.box_head_dim),
        box_predictor=FastRCNNPredictor(spec.box_head_dim, ncls),
        box_batch_size_per_image=spec.box_batch_size_per_image,
        box_score_thresh=TRAINING_DETECTION.box_score_thresh,
        box_detections_per_img=TRAINING_DETECTION.detections_per_image,
        mask_head=MaskRCNNHeads(c, list(spec.mask_head_layers), 1),
        mask_predictor=MaskRCNNPredictor(spec.mask_head_layers[-1], spec.mask_head_layers[-1], ncls),
    )


def build_model(variant: ModelVariant, spec: ModelSpec, classes: ClassInfo) -> PanopticModel:
    """The `PanopticModel` of ``variant`` with the shape ``spec`` for ``classes``."""
    backbone = build_backbone(spec.backbone, spec.fpn_channels, spec.resolved_norm)
    detector = body = resize = None
    if variant.detector:
        detector = build_detector(backbone, spec, len(classes.thing_indices))
    else:
        body = backbone
        resize = GeneralizedRCNNTransform(spec.min_size, spec.max_size, IMAGE_MEAN, IMAGE_STD)
    head = None
    if variant.trains_stage2:
        head = build_semantic_head(variant.head, spec.fpn_channels, classes.num_classes, variant.imp, spec.head_channels)
    return PanopticModel(variant, spec, classes, detector=detector, body=body, resize=resize, head=head)
