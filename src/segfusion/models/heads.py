"""Semantic segmentation heads on FPN features, each optionally fed the IMP canvas.

Every head maps the torchvision FPN output ``features`` (an OrderedDict with keys
"0", "1", "2", "3" = P2..P5 at strides 4, 8, 16, 32, all ``in_channels`` wide; a "pool"
entry is ignored) to logits ``(B, num_classes, h, w)`` at the size (h, w) of P2 (stride 4).
Internally a head builds a stride-4 feature map and then *predicts* from it:

* without IMP, with the head's own classifier (a 1x1 conv; for ``ppm`` the JSIS
  hybrid upsampling, see `PPMHead`);
* with IMP (IMP paper Sec. 3.2, Fig. 3c and Fig. 4), by concatenating the IMP canvas
  (B, num_classes, h, w) to that feature map and applying 4 conv3x3 (``channels`` wide,
  GroupNorm unless disabled, ReLU) and a conv1x1. Fig. 4 defines this tower for
  Panoptic-FPN-IMP; we use the same tower for every head so IMP is an ablation switch.

Kinds (``build_semantic_head(kind, ...)``):

* ``fpn``: Panoptic FPN semantic branch (IMP Sec. 3.2, Fig. 4).
* ``p2``: Panoptic-P2 (IMP Sec. 3.2, Fig. 3b/3c), no GroupNorm anywhere.
* ``asp_rp``: Costea et al. Sec. 2, ASP on 1/32 and 1/16 plus a refinement pyramid.
* ``minidl``: Seamless Sec. 3.3, one Mini-DeepLab module per FPN level.
* ``ppm``: JSIS-Net Sec. 2.1, pyramid pooling module with hybrid upsampling.

Normalisation: GroupNorm (32 groups, or gcd(32, channels) for narrow layers so that the
64-channel demo works) after every conv3x3 / inner conv1x1 by default; ``p2`` defaults to
none, and ``group_norm`` overrides the default for any kind. Seamless uses iABN and PSPNet
BatchNorm; we use GroupNorm everywhere for batch-size independence (a documented
substitution). Where a level is upsampled, it is resized to the size of the finer level
(not by an exact factor 2), so inputs whose size is not a multiple of 32 still give P2-sized
output.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segfusion.specs import HEADS

__all__ = [
    "head_class",
    "build_semantic_head",
    "SemanticHead",
    "FPNHead",
    "P2Head",
    "ASPRPHead",
    "MiniDLHead",
    "PPMHead",
    "box_average",
]

LEVELS = ("0", "1", "2", "3")  # P2, P3, P4, P5 in torchvision's FPN output


def _groups(channels: int) -> int:
    return math.gcd(32, channels)


def conv_block(
    cin: int, cout: int, kernel: int = 3, dilation: int = 1, group_norm: bool = True
) -> nn.Sequential:
    """conv(kernel, dilation; "same" padding) + GroupNorm (optional) + ReLU."""
    pad = dilation * (kernel - 1) // 2
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=not group_norm)
    ]
    if group_norm:
        layers.append(nn.GroupNorm(_groups(cout), cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize (align_corners=False) of (B, K, h, w) to ``size``; no-op if already there."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def box_average(x: Tensor, kernel: tuple[int, int]) -> Tensor:
    """Average pooling with stride 1 and no padding, via summed-area tables.

    Equals ``F.avg_pool2d(x, kernel, stride=1)`` (output (h - kh + 1, w - kw + 1)) but costs
    O(h w) per channel instead of O(h w kh kw), which matters for Seamless' 64 x 64 kernel.
    """
    kh, kw = kernel
    c = F.pad(x.cumsum(-2), (0, 0, 1, 0))  # (B, K, h+1, w)
    rows = c[..., kh:, :] - c[..., :-kh, :]  # sums over kh rows
    c = F.pad(rows.cumsum(-1), (1, 0))
    return (c[..., kw:] - c[..., :-kw]) / float(kh * kw)


class Predictor(nn.Module):
    """From the head's stride-4 feature map (and the IMP canvas) to logits.

    imp=False: ``classifier`` (default: conv1x1 to num_classes); a canvas is an error.
    imp=True:  concat(features, canvas) -> 4 x [conv3x3(channels) + GroupNorm? + ReLU] ->
               conv1x1(num_classes)  (IMP paper Sec. 3.2, Fig. 4: (128 + C) x H/4 x W/4 in).
    """

    def __init__(
        self,
        feat_channels: int,
        num_classes: int,
        imp: bool,
        channels: int,
        group_norm: bool,
        classifier: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.imp = imp
        self.num_classes = num_classes
        if imp:
            tower: list[nn.Module] = []
            cin = feat_channels + num_classes
            for _ in range(4):
                tower.append(conv_block(cin, channels, 3, group_norm=group_norm))
                cin = channels
            tower.append(nn.Conv2d(channels, num_classes, 1))
            self.net: nn.Module = nn.Sequential(*tower)
        else:
            self.net = classifier if classifier is not None else nn.Conv2d(feat_channels, num_classes, 1)

    def forward(self, feat: Tensor, canvas: Tensor | None) -> Tensor:
        if not self.imp:
            if canvas is not None:
                raise ValueError("semantic head built with imp=False was given an IMP canvas")
            return self.net(feat)
        if canvas is None:
            raise ValueError("semantic head built with imp=True needs the IMP canvas, got None")
        expected = (feat.shape[0], self.num_classes, *feat.shape[-2:])
        if tuple(canvas.shape) != expected:
            raise ValueError(f"IMP canvas must be (B, C, H/4, W/4) = {expected}, got {tuple(canvas.shape)}")
        return self.net(torch.cat([feat, canvas.to(feat.dtype)], dim=1))


class SemanticHead(nn.Module):
    """Base class: ``forward(features, canvas) -> (B, num_classes, h_P2, w_P2)`` logits.

    Subclasses implement ``features_at_4(levels) -> (B, K, h_P2, w_P2)`` and set
    ``self.predictor``.
    """

    kind = ""
    predictor: Predictor

    def features_at_4(self, levels: list[Tensor]) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, features: Mapping[str, Tensor], canvas: Tensor | None = None) -> Tensor:
        missing = [k for k in LEVELS if k not in features]
        if missing:
            raise ValueError(
                f"{type(self).__name__}: FPN features lack levels {missing} (need keys {list(LEVELS)})"
            )
        levels = [features[k] for k in LEVELS]
        out = self.predictor(self.features_at_4(levels), canvas)
        return resize(out, levels[0].shape[-2:])


class FPNHead(SemanticHead):
    """Panoptic FPN semantic branch (IMP paper Sec. 3.2 and Fig. 4; Kirillov et al.).

    Each level reaches stride 4 by stages of conv3x3(channels) + GroupNorm + ReLU + 2x
    bilinear upsampling: P2 one conv and no upsampling, P3 one stage, P4 two, P5 three.
    The four maps are summed (channels x H/4 x W/4) and fed to the predictor.
    """

    GROUP_NORM = True  # default of ``group_norm``

    kind = "fpn"

    def __init__(
        self, in_channels: int, num_classes: int, imp: bool, channels: int = 128, group_norm: bool = True
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList()
        for level in range(4):
            stages = [conv_block(in_channels, channels, 3, group_norm=group_norm)]
            stages += [conv_block(channels, channels, 3, group_norm=group_norm) for _ in range(level - 1)]
            self.branches.append(nn.ModuleList(stages))
        self.predictor = Predictor(channels, num_classes, imp, channels, group_norm)

    def features_at_4(self, levels: list[Tensor]) -> Tensor:
        total = None
        for level, (x, stages) in enumerate(zip(levels, self.branches, strict=True)):
            for s, stage in enumerate(stages):
                x = stage(x)
                if level > 0:  # upsample to the next finer level (2x)
                    x = resize(x, levels[level - s - 1].shape[-2:])
            total = x if total is None else total + x
        assert total is not None
        return total


class P2Head(SemanticHead):
    """Panoptic-P2 / Semantic-P2 (IMP paper Sec. 3.2, Fig. 3b/3c): P2 only.

    conv3x3(channels) + ReLU on P2, then the predictor. "In contrast to FPN-P2 networks,
    all conv3x3 use GroupNorm" (Sec. 3.2): the P2 variants use no GroupNorm, also in their
    IMP tower (group_norm defaults to False for this kind).
    """

    GROUP_NORM = False  # default of ``group_norm``

    kind = "p2"

    def __init__(
        self, in_channels: int, num_classes: int, imp: bool, channels: int = 128, group_norm: bool = False
    ) -> None:
        super().__init__()
        self.conv = conv_block(in_channels, channels, 3, group_norm=group_norm)
        self.predictor = Predictor(channels, num_classes, imp, channels, group_norm)

    def features_at_4(self, levels: list[Tensor]) -> Tensor:
        return self.conv(levels[0])


class ASP(nn.Module):
    """Atrous Spatial Pyramid (Costea et al. Sec. 2, after DeepLabv3): conv1x1 and three
    conv3x3 with dilation 6, 12, 18 in parallel (``channels`` each), concatenated, then
    ``channels`` 1x1 filters."""

    def __init__(
        self, in_channels: int, channels: int, group_norm: bool, rates: Sequence[int] = (6, 12, 18)
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList([conv_block(in_channels, channels, 1, group_norm=group_norm)])
        self.branches.extend(
            conv_block(in_channels, channels, 3, dilation=r, group_norm=group_norm) for r in rates
        )
        self.project = conv_block(channels * (1 + len(rates)), channels, 1, group_norm=group_norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))


class ASPRPHead(SemanticHead):
    """Costea et al. semantic head (Sec. 2 "Unified network architecture").

    ASP on P5 (1/32) and P4 (1/16); two conv3x3 on P3 (1/8) and P2 (1/4); every level gives
    ``channels`` maps. Refinement pyramid: from the coarsest level down, upsample 2x and add
    to the next level's output (each level learns a residue). The four fused maps are
    upsampled to 1/4 and concatenated (4 x 128 = 512 maps), then a 1x1 conv classifies.
    """

    GROUP_NORM = True  # default of ``group_norm``

    kind = "asp_rp"

    def __init__(
        self, in_channels: int, num_classes: int, imp: bool, channels: int = 128, group_norm: bool = True
    ) -> None:
        super().__init__()

        def two_convs() -> nn.Sequential:
            return nn.Sequential(
                conv_block(in_channels, channels, 3, group_norm=group_norm),
                conv_block(channels, channels, 3, group_norm=group_norm),
            )

        self.levels = nn.ModuleList(
            [
                two_convs(),
                two_convs(),
                ASP(in_channels, channels, group_norm),
                ASP(in_channels, channels, group_norm),
            ]
        )
        self.predictor = Predictor(4 * channels, num_classes, imp, channels, group_norm)

    def features_at_4(self, levels: list[Tensor]) -> Tensor:
        outs = [m(x) for m, x in zip(self.levels, levels, strict=True)]
        fused = [outs[3]]
        for k in (2, 1, 0):  # refinement pyramid, top-down
            fused.insert(0, outs[k] + resize(fused[0], outs[k].shape[-2:]))
        size = levels[0].shape[-2:]
        return torch.cat([resize(f, size) for f in fused], dim=1)


class MiniDL(nn.Module):
    """Mini-DeepLab (Seamless Sec. 3.3, Fig. 2): three parallel branches, concatenated, then
    conv3x3 to ``channels``.

    1. conv3x3, dilation 1;  2. conv3x3, dilation 6;
    3. ``pool`` x ``pool`` average pooling, stride 1, no padding, then replicate padding back
       to the input size, then conv1x1.
    On feature maps smaller than the kernel, the kernel is clamped to the map size per axis
    (our choice; the paper's 64 x 64 assumes large inputs): pooling then reduces to a global
    average along that axis, which is what DeepLabv3 does and what Seamless generalises.
    """

    def __init__(self, in_channels: int, channels: int, group_norm: bool, pool: int = 64) -> None:
        super().__init__()
        self.pool = pool
        self.conv1 = conv_block(in_channels, channels, 3, dilation=1, group_norm=group_norm)
        self.conv6 = conv_block(in_channels, channels, 3, dilation=6, group_norm=group_norm)
        self.pool_conv = conv_block(in_channels, channels, 1, group_norm=group_norm)
        self.project = conv_block(3 * channels, channels, 3, group_norm=group_norm)

    def pooled(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        kh, kw = min(self.pool, h), min(self.pool, w)
        y = box_average(x, (kh, kw))  # (B, K, h - kh + 1, w - kw + 1)
        top, left = (kh - 1) // 2, (kw - 1) // 2
        return F.pad(y, (left, kw - 1 - left, top, kh - 1 - top), mode="replicate")

    def forward(self, x: Tensor) -> Tensor:
        branches = [self.conv1(x), self.conv6(x), self.pool_conv(self.pooled(x))]
        return self.project(torch.cat(branches, dim=1))


class MiniDLHead(SemanticHead):
    """Seamless semantic head (Porzi et al., Sec. 3.3): a MiniDL per FPN level (P2..P5, not
    sharing parameters), each upsampled to 1/4 (``channels`` maps), concatenated
    (4 x 128), then a conv1x1 classifier."""

    GROUP_NORM = True  # default of ``group_norm``

    kind = "minidl"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        imp: bool,
        channels: int = 128,
        group_norm: bool = True,
        pool: int = 64,
    ) -> None:
        super().__init__()
        self.levels = nn.ModuleList([MiniDL(in_channels, channels, group_norm, pool) for _ in range(4)])
        self.predictor = Predictor(4 * channels, num_classes, imp, channels, group_norm)

    def features_at_4(self, levels: list[Tensor]) -> Tensor:
        size = levels[0].shape[-2:]
        return torch.cat([resize(m(x), size) for m, x in zip(self.levels, levels, strict=True)], dim=1)


def _bilinear_kernel(channels: int, kernel: int) -> Tensor:
    """Per-channel bilinear upsampling weights for ConvTranspose2d (channels, channels, k, k)."""
    factor = (kernel + 1) // 2
    center = factor - 1 if kernel % 2 == 1 else factor - 0.5
    og = torch.arange(kernel, dtype=torch.float32)
    filt1d = 1 - (og - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel, kernel)
    weight[range(channels), range(channels)] = filt1d[:, None] * filt1d[None, :]
    return weight


class PPMHead(SemanticHead):
    """JSIS-Net semantic branch (de Geus et al., Sec. 2.1): Pyramid Pooling Module + hybrid
    upsampling.

    Input: JSIS applies the PPM to the ResNet-50 output (stride 32); our heads receive FPN
    levels, so we use the top level P5 (stride 32) instead.
    PPM (PSPNet, bins 1, 2, 3, 6): adaptive average pooling to b x b, conv1x1 to
    in_channels // 4 + ReLU, bilinear back to the P5 size; concatenated with P5, then
    conv3x3(channels) + GroupNorm + ReLU and a conv1x1 to num_classes (predictions at 1/32).
    The pooled branches have no GroupNorm: on a 1x1 bin with few channels per group it would
    output constants.
    Hybrid upsampling ("first applies a deconvolution operation and then bilinearly resizes
    the predictions", Sec. 2.1, after Meletis & Dubbelman): our reading is one learnable 2x
    transposed conv (kernel 4, stride 2, per-class bilinear initialisation) on the class
    predictions, then a bilinear resize to the P2 size (stride 4, the size all our heads
    output; the shared upsampling to the image size happens downstream).
    With IMP the hybrid-upsampled predictions (num_classes maps at 1/4) are the feature map
    that is concatenated with the canvas and fed to the IMP tower.
    """

    GROUP_NORM = True  # default of ``group_norm``

    kind = "ppm"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        imp: bool,
        channels: int = 128,
        group_norm: bool = True,
        bins: Sequence[int] = (1, 2, 3, 6),
    ) -> None:
        super().__init__()
        self.bins = tuple(bins)
        reduced = max(in_channels // len(self.bins), 1)
        self.pool_convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels, reduced, 1), nn.ReLU(inplace=True)) for _ in self.bins
        )
        self.bottleneck = conv_block(
            in_channels + reduced * len(self.bins), channels, 3, group_norm=group_norm
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.deconv = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=1, bias=False)
        with torch.no_grad():
            self.deconv.weight.copy_(_bilinear_kernel(num_classes, 4))
        self.predictor = Predictor(
            num_classes, num_classes, imp, channels, group_norm, classifier=nn.Identity()
        )

    def features_at_4(self, levels: list[Tensor]) -> Tensor:
        top = levels[3]
        size = top.shape[-2:]
        pooled = [
            resize(conv(F.adaptive_avg_pool2d(top, b)), size)
            for b, conv in zip(self.bins, self.pool_convs, strict=True)
        ]
        logits = self.classifier(self.bottleneck(torch.cat([top, *pooled], dim=1)))
        return resize(self.deconv(logits), levels[0].shape[-2:])


def head_class(kind: str) -> type[SemanticHead]:
    """The class of head ``kind`` in the registry `segfusion.specs.HEADS` (name -> class name here)."""
    if kind not in HEADS:
        raise ValueError(f"unknown semantic head kind {kind!r}; expected one of {sorted(HEADS)}")
    return globals()[HEADS[kind]]


def build_semantic_head(
    kind: str,
    in_channels: int,
    num_classes: int,
    imp: bool,
    channels: int = 128,
    group_norm: bool | None = None,
) -> nn.Module:
    """Build a semantic head: ``module(features, canvas) -> (B, num_classes, h_P2, w_P2)``.

    kind:        one of ``fpn``, ``p2``, ``asp_rp``, ``minidl``, ``ppm`` (see module docstring).
    in_channels: width of the FPN levels (256 in torchvision's Mask R-CNN).
    num_classes: C, the logit and canvas depth.
    imp:         whether the head takes the IMP canvas (B, C, h_P2, w_P2) as a feature.
    channels:    width of the head's convs (128 in all papers).
    group_norm:  None = the kind's default (False for ``p2``, True otherwise).
    """
    cls = head_class(kind)
    for name, value in (("in_channels", in_channels), ("num_classes", num_classes), ("channels", channels)):
        if int(value) < 1:
            raise ValueError(f"build_semantic_head: {name} must be >= 1, got {value}")
    gn = cls.GROUP_NORM if group_norm is None else bool(group_norm)
    return cls(in_channels, num_classes, bool(imp), channels=channels, group_norm=gn)
