"""A torch-facing view of a canonical split: Mask R-CNN targets and the semantic map together.

Augmentations follow the IMP Cityscapes setup (Sec. 4.3): horizontal flip and colour
jitter (brightness, contrast, saturation ±``color_jitter``, hue ±``hue_jitter``);
multi-scale resizing is done by torchvision's transform (several training ``min_size``
values), random crops by ``crop_size``. Every random choice comes from the generator
the caller passes in, so a batch is a pure function of (seed, iteration, slot) and a
resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from segfusion.datasets.canonical import CanonicalSplit
from segfusion.specs import Augmentation


@dataclass(frozen=True)
class AugmentParams:
    """The random choices for one sample (identity values when an augmentation is off)."""

    size: tuple[int, int] | None = None  # (h, w) the sample is resized to before the crop (multi-scale)
    crop: tuple[int, int, int, int] | None = None  # y0, x0, h, w
    flip: bool = False
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0


def scaled_size(image_hw: tuple[int, int], short_side: int, max_size: int) -> tuple[int, int]:
    """torchvision's detection resize rule: short side to ``short_side`` unless the long side
    would exceed ``max_size`` (then the long side to ``max_size``); sizes rounded down."""
    h, w = image_hw
    scale = min(short_side / min(h, w), max_size / max(h, w))
    return int(h * scale), int(w * scale)


def draw_params(
    aug: Augmentation, image_hw: tuple[int, int], rng: np.random.Generator, scales: tuple[int, ...] = (), max_size: int | None = None
) -> AugmentParams:
    """Draw one sample's choices from ``rng``, always in the same order (scale, crop, flip, jitter).

    ``scales`` (with a crop): the short sides to draw from (the detector's training sizes), so
    the sample is resized *then* cropped to exactly ``crop_size`` (IMP Sec. 4.3: multi-scale
    training, then 512 x 1024 crops); the detector then skips its own training resize.
    """
    size = None
    if scales:
        size = scaled_size(image_hw, scales[int(rng.integers(0, len(scales)))], max_size or 10**9)
        image_hw = size
    crop = None
    if aug.crop_size is not None:
        ch, cw = aug.crop_size
        h, w = image_hw
        y0 = int(rng.integers(0, max(h - ch, 0) + 1))
        x0 = int(rng.integers(0, max(w - cw, 0) + 1))
        crop = (y0, x0, min(ch, h), min(cw, w))
    flip = bool(aug.hflip and rng.random() < 0.5)
    b = c = s = 1.0
    if aug.color_jitter > 0:
        lo, hi = 1 - aug.color_jitter, 1 + aug.color_jitter
        b, c, s = (float(rng.uniform(lo, hi)) for _ in range(3))
    hue = float(rng.uniform(-aug.hue_jitter, aug.hue_jitter)) if aug.hue_jitter > 0 else 0.0
    return AugmentParams(size=size, crop=crop, flip=flip, brightness=b, contrast=c, saturation=s, hue=hue)


def resize_sample(size: tuple[int, int], image: np.ndarray, *label_maps: np.ndarray) -> tuple[np.ndarray, ...]:
    """(H, W, 3) image bilinearly (as the detector transform resizes: float, align_corners=False)
    and (H, W) label maps by nearest neighbour (PyTorch's "nearest" source index), to ``size``."""
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None]
    img = torch.nn.functional.interpolate(img, size=size, mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    h, w = label_maps[0].shape[:2] if label_maps else image.shape[:2]
    ys = np.minimum((np.arange(size[0]) * (h / size[0])).astype(np.int64), h - 1)
    xs = np.minimum((np.arange(size[1]) * (w / size[1])).astype(np.int64), w - 1)
    return (img, *(m[ys[:, None], xs[None, :]] for m in label_maps))


def apply_geometry(p: AugmentParams, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Crop then flip every (H, W, ...) array the same way (image, segment ids, semantic map)."""
    out = []
    for a in arrays:
        if p.crop is not None:
            y0, x0, h, w = p.crop
            a = a[y0 : y0 + h, x0 : x0 + w]
        if p.flip:
            a = a[:, ::-1]
        out.append(a)
    return tuple(out)


def apply_color(p: AugmentParams, img: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation, then hue, on a (3, H, W) float image in [0, 1]."""
    if (p.brightness, p.contrast, p.saturation, p.hue) == (1.0, 1.0, 1.0, 0.0):
        return img.clamp(0, 1)
    from torchvision.transforms.v2 import functional as TF

    if p.brightness != 1.0:
        img = TF.adjust_brightness(img, p.brightness)
    if p.contrast != 1.0:
        img = TF.adjust_contrast(img, p.contrast)
    if p.saturation != 1.0:
        img = TF.adjust_saturation(img, p.saturation)
    if p.hue != 0.0:
        img = TF.adjust_hue(img, p.hue)
    return img.clamp(0, 1)


class PanopticTrainingData:
    """Samples of a canonical split as (image (3, H, W) float in [0, 1], target dict)."""

    def __init__(self, split: CanonicalSplit, augmentation: Augmentation | None = None, scales: tuple[int, ...] = (), max_size: int | None = None):
        """scales, max_size: multi-scale resize done here, before the crop (`draw_params`);
        empty: the detector transform resizes."""
        self.split = split
        self.aug = augmentation or Augmentation()
        self.scales, self.max_size = tuple(scales), max_size
        things = split.classes.thing_indices.tolist()
        # Mask R-CNN label of a class index (1..T for things, 0 for stuff).
        self.class_to_label = np.zeros(split.classes.num_classes, np.int64)
        self.class_to_label[things] = np.arange(1, len(things) + 1)

    def __len__(self) -> int:
        return len(self.split)

    def flip_of(self, index: int, rng: np.random.Generator) -> bool:
        """Whether ``sample(index, rng)`` flips the image (give a generator in the same state)."""
        rec = self.split.images[index]
        return draw_params(self.aug, (rec.height, rec.width), rng, self.scales, self.max_size).flip

    def sample(self, index: int, rng: np.random.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Image and targets of image ``index``; augmented when ``rng`` is given (a pure function of it).

        Targets are computed after the geometric transform: masks and boxes of the
        non-crowd thing segments still visible (boxes x0, y0, x1, y1 tight around the
        mask, x1 and y1 exclusive), Mask R-CNN labels, and the semantic map (255 = ignore).
        """
        rec = self.split.images[index]
        image = self.split.image(rec)
        pan = self.split.panoptic(rec)
        params = draw_params(self.aug, image.shape[:2], rng, self.scales, self.max_size) if rng is not None else AugmentParams()
        segment_ids, semantic = pan.segment_ids, pan.semantic
        if params.size is not None:
            image, segment_ids, semantic = resize_sample(params.size, image, segment_ids, semantic)
        image, segment_ids, semantic = apply_geometry(params, image, segment_ids, semantic)
        things = [s for s in pan.segments if s.is_thing and not s.iscrowd]
        masks = np.stack([segment_ids == s.id for s in things]) if things else np.zeros((0, *semantic.shape), bool)
        keep = masks.reshape(len(masks), -1).any(axis=1)
        masks = masks[keep]
        labels = np.array([self.class_to_label[s.class_index] for s, k in zip(things, keep) if k], np.int64)
        boxes = np.zeros((len(masks), 4), np.float32)
        for i, m in enumerate(masks):
            ys, xs = np.nonzero(m)
            boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
        img = apply_color(params, img)
        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(labels),
            "masks": torch.from_numpy(masks.astype(np.uint8)),
            "semantic": torch.from_numpy(np.ascontiguousarray(semantic).astype(np.int64)),
        }
        return img, target
