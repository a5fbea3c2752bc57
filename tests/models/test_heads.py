"""Tests of the semantic heads: shapes, gradients, GroupNorm placement, small inputs."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segfusion.models.heads import MiniDL, box_average, build_semantic_head
from segfusion.specs import HEADS

IN_CH, CH, NUM_CLASSES = 16, 16, 5


def fpn_features(batch: int, image_hw: tuple[int, int], channels: int = IN_CH, seed: int = 0) -> OrderedDict:
    """Random FPN-like features with torchvision's level sizes (ceil division by 4, 8, 16, 32)."""
    gen = torch.Generator().manual_seed(seed)
    h, w = image_hw
    feats = OrderedDict()
    for k, stride in enumerate((4, 8, 16, 32)):
        feats[str(k)] = torch.randn(batch, channels, -(-h // stride), -(-w // stride), generator=gen)
    feats["pool"] = torch.randn(batch, channels, 1, 1, generator=gen)
    return feats


def canvas_for(feats: OrderedDict, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    b, _, h, w = feats["0"].shape
    return torch.rand(b, num_classes, h, w, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("imp", [False, True])
@pytest.mark.parametrize("kind", sorted(HEADS))
def test_shape_and_backward(kind, imp):
    feats = fpn_features(2, (64, 128))
    for v in feats.values():
        v.requires_grad_(True)
    canvas = canvas_for(feats).requires_grad_(True) if imp else None
    head = build_semantic_head(kind, IN_CH, NUM_CLASSES, imp, channels=CH)
    out = head(feats, canvas)
    assert out.shape == (2, NUM_CLASSES, 16, 32)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    assert feats["0"].grad is not None or kind == "ppm"  # ppm reads only P5
    assert feats["3"].grad is not None or kind == "p2"  # p2 reads only P2
    if imp:
        assert canvas.grad is not None and canvas.grad.abs().sum() > 0
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_odd_input_size(kind):
    # 50 x 90 is no multiple of 32: P2 is 13 x 23 and the output must match it.
    feats = fpn_features(1, (50, 90))
    head = build_semantic_head(kind, IN_CH, NUM_CLASSES, imp=True, channels=CH)
    with torch.no_grad():
        out = head(feats, canvas_for(feats))
    assert out.shape == (1, NUM_CLASSES, 13, 23)


def _norms(module: nn.Module) -> list[nn.GroupNorm]:
    return [m for m in module.modules() if isinstance(m, nn.GroupNorm)]


def test_group_norm_placement():
    assert _norms(build_semantic_head("p2", 64, 19, imp=False, channels=64)) == []
    assert _norms(build_semantic_head("p2", 64, 19, imp=True, channels=64)) == []
    fpn = build_semantic_head("fpn", 64, 19, imp=True, channels=64)
    tower_norms = _norms(fpn.predictor)
    assert len(tower_norms) == 4  # the 4 conv3x3 of Fig. 4's IMP tower
    assert all(g.num_groups == 32 and g.num_channels == 64 for g in tower_norms)
    assert len(_norms(build_semantic_head("fpn", 64, 19, imp=False, channels=64))) == 1 + 1 + 2 + 3
    # group_norm overrides the kind's default, both ways.
    assert _norms(build_semantic_head("fpn", 64, 19, imp=True, channels=64, group_norm=False)) == []
    assert len(_norms(build_semantic_head("p2", 64, 19, imp=True, channels=64, group_norm=True))) == 5
    # narrow layers get a group count that divides them
    assert all(
        g.num_channels % g.num_groups == 0
        for g in _norms(build_semantic_head("minidl", 24, 3, True, channels=24))
    )


def test_fpn_imp_tower_input_width():
    head = build_semantic_head("fpn", 64, 19, imp=True, channels=128)
    first = head.predictor.net[0][0]
    assert isinstance(first, nn.Conv2d) and first.in_channels == 128 + 19 and first.kernel_size == (3, 3)
    last = head.predictor.net[-1]
    assert last.kernel_size == (1, 1) and last.out_channels == 19


def test_parameter_counts_differ():
    counts = {
        (kind, imp): sum(p.numel() for p in build_semantic_head(kind, 64, 19, imp, channels=64).parameters())
        for kind in HEADS
        for imp in (False, True)
    }
    assert len(set(counts.values())) == len(counts)
    for kind in HEADS:
        assert counts[(kind, True)] > counts[(kind, False)]
    # asp_rp concatenates 4 x channels at 1/4: its classifier alone is 4 x wider than fpn's.
    assert build_semantic_head("asp_rp", 64, 19, False, channels=64).predictor.net.in_channels == 256


def test_minidl_on_maps_smaller_than_kernel():
    # P5 of a 64 x 128 image is 2 x 4, far below the 64 x 64 pooling kernel.
    module = MiniDL(8, 8, group_norm=True, pool=64)
    x = torch.randn(2, 8, 2, 4)
    pooled = module.pooled(x)
    assert pooled.shape == x.shape
    # the kernel is clamped to the whole map: every position holds the global mean
    torch.testing.assert_close(pooled, x.mean(dim=(2, 3), keepdim=True).expand_as(x))
    assert module(x).shape == (2, 8, 2, 4)


def test_minidl_pooling_replicates_border():
    module = MiniDL(1, 1, group_norm=False, pool=3)
    x = torch.arange(30.0).reshape(1, 1, 5, 6)
    pooled = module.pooled(x)
    inner = F.avg_pool2d(x, 3, stride=1)  # 3 x 4
    assert pooled.shape == x.shape
    torch.testing.assert_close(pooled[..., 1:4, 1:5], inner)
    torch.testing.assert_close(pooled[..., 0, 1:5], inner[..., 0, :])  # top row replicated
    torch.testing.assert_close(pooled[..., :, 0], pooled[..., :, 1])  # left column replicated


def test_box_average_matches_avg_pool():
    x = torch.randn(2, 3, 9, 11, generator=torch.Generator().manual_seed(2))
    for kernel in [(1, 1), (3, 5), (9, 11), (4, 2)]:
        torch.testing.assert_close(
            box_average(x, kernel), F.avg_pool2d(x, kernel, stride=1), atol=1e-5, rtol=1e-5
        )


def test_ppm_deconv_starts_as_bilinear_upsampling():
    head = build_semantic_head("ppm", IN_CH, NUM_CLASSES, imp=False, channels=CH)
    x = torch.rand(1, NUM_CLASSES, 4, 4)
    y = head.deconv(x)
    assert y.shape == (1, NUM_CLASSES, 8, 8)
    # interior of a 2x bilinear deconv of a constant map is that constant
    const = head.deconv(torch.full((1, NUM_CLASSES, 4, 4), 0.7))
    torch.testing.assert_close(const[..., 1:-1, 1:-1], torch.full_like(const[..., 1:-1, 1:-1], 0.7))


def test_canvas_contract():
    feats = fpn_features(1, (64, 128))
    with pytest.raises(ValueError, match="needs the IMP canvas"):
        build_semantic_head("fpn", IN_CH, NUM_CLASSES, True, channels=CH)(feats, None)
    with pytest.raises(ValueError, match="imp=False"):
        build_semantic_head("fpn", IN_CH, NUM_CLASSES, False, channels=CH)(feats, canvas_for(feats))
    with pytest.raises(ValueError, match="IMP canvas must be"):
        build_semantic_head("p2", IN_CH, NUM_CLASSES, True, channels=CH)(
            feats, torch.zeros(1, NUM_CLASSES, 8, 8)
        )
    with pytest.raises(ValueError, match="unknown semantic head kind"):
        build_semantic_head("deeplab", IN_CH, NUM_CLASSES, False)
    with pytest.raises(ValueError, match="lack levels"):
        build_semantic_head("fpn", IN_CH, NUM_CLASSES, False, channels=CH)({"0": feats["0"]}, None)


def test_imp_canvas_changes_output():
    feats = fpn_features(1, (64, 128))
    head = build_semantic_head("fpn", IN_CH, NUM_CLASSES, True, channels=CH).eval()
    with torch.no_grad():
        a = head(feats, torch.zeros(1, NUM_CLASSES, 16, 32))
        b = head(feats, canvas_for(feats))
    assert not torch.allclose(a, b)
