"""The IMP canvas inside the panoptic model: detached by default, end-to-end on request."""

from __future__ import annotations

import pytest
import torch

from segfusion.datasets.cityscapes import cityscapes_classes
from segfusion.models.build import build_model
from segfusion.specs import ModelSpec, resolve_variant


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 128, generator=gen) for _ in range(2)]
    targets = [
        {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros(0, 64, 128, dtype=torch.uint8),
            "semantic": torch.randint(0, 19, (64, 128), generator=gen),
        }
        for _ in range(2)
    ]
    return images, targets


def mask_head_gradient(batch, imp_end_to_end: bool) -> float:
    """Stage-2 style step (detector losses off): the semantic loss's gradient on the mask predictor."""
    torch.manual_seed(0)
    arch = ModelSpec(min_size=(64,), max_size=128)
    model = build_model(resolve_variant("panoptic_fpn_imp"), arch, cityscapes_classes())
    model.freeze(["backbone", "rpn"])
    model.train()
    images, targets = batch
    losses = model.losses(images, targets, train_detector=False, imp_end_to_end=imp_end_to_end)
    assert set(losses) == {"loss_semantic"} and torch.isfinite(losses["loss_semantic"])
    losses["loss_semantic"].backward()
    head_grad = sum(p.grad.abs().sum() for p in model.head.parameters() if p.grad is not None)
    assert head_grad > 0  # the head always learns
    predictor = model.detector.roi_heads.mask_predictor
    return float(sum(p.grad.abs().sum() for p in predictor.parameters() if p.grad is not None))


def test_detached_canvas_leaves_the_mask_head_alone(batch):
    assert mask_head_gradient(batch, imp_end_to_end=False) == 0.0


def test_end_to_end_canvas_trains_the_mask_head(batch):
    # IMP Sec. 3.1: the projection is differentiable, so the semantic loss reaches the masks.
    assert mask_head_gradient(batch, imp_end_to_end=True) > 0.0
