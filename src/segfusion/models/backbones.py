"""Backbones with FPN for torchvision's Mask R-CNN.

``tiny``: a 5-stage conv net (16-64 channels, ~1 M parameters) with GroupNorm, made for
CPU training on small synthetic images (the foundation issue measured about 0.23 s per
batch of 4 at 128x256 on two cores). ``resnet18/34/50/101``: torchvision ResNets with
trainable BatchNorm (no pretrained weights are downloaded; load a local state dict with
``pretrained``).
"""

from __future__ import annotations

import torchvision
from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from segfusion.specs import BACKBONES


def _conv_gn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(min(8, cout // 4), cout),
        nn.ReLU(inplace=True),
    )


class TinyBackbone(nn.Sequential):
    """Strides 2, 4, 8, 16, 32; outputs layer1..layer4 = C2..C5 (channels 16, 32, 48, 64)."""

    channels = (16, 32, 48, 64)

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_gn(3, 16, 2)
        widths = (16,) + self.channels
        for k in range(4):
            self.add_module(f"layer{k + 1}", nn.Sequential(_conv_gn(widths[k], widths[k + 1], 2), _conv_gn(widths[k + 1], widths[k + 1], 1)))


NORM_LAYERS = {"bn": nn.BatchNorm2d, "sync_bn": nn.BatchNorm2d, "frozen_bn": FrozenBatchNorm2d}
"""ResNet normalisation by `ModelSpec.resolved_norm`; ``sync_bn`` layers become SyncBatchNorm when
training is data-parallel (`segfusion.training.distributed.wrap`)."""


def build_backbone(name: str, fpn_channels: int, norm: str = "bn") -> BackboneWithFPN:
    """A backbone + FPN whose outputs "0".."3" are P2..P5 and "pool" P6 (torchvision convention).

    norm: the ResNets' normalisation (``bn``, ``frozen_bn`` or ``sync_bn``); ``tiny`` always uses
    GroupNorm, which does not depend on the batch."""
    if name == "tiny":
        body: nn.Module = TinyBackbone()
        channels = list(TinyBackbone.channels)
    elif name in BACKBONES:
        body = getattr(torchvision.models, name)(weights=None, norm_layer=NORM_LAYERS[norm])
        base = [64, 128, 256, 512]
        channels = base if name in ("resnet18", "resnet34") else [c * 4 for c in base]
    else:
        raise ValueError(f"unknown backbone {name!r}; choose one of {BACKBONES}")
    return BackboneWithFPN(
        body,
        return_layers={f"layer{k}": str(k - 1) for k in range(1, 5)},
        in_channels_list=channels,
        out_channels=fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )
