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


@dataclass(frozen=True)
class Augmentation:
    hflip: bool = True
    color_jitter: float = 0.0  # brightness/contrast/saturation factor range ±
    hue_jitter: float = 0.0  # hue shift range ± (fraction of the colour circle)
    crop_size: tuple[int, int] | None = None  # (h, w) random crop, None = whole image


def _jitter(img: torch.Tensor, aug: Augmentation, rng: np.random.Generator) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    if aug.color_jitter > 0:
        lo, hi = 1 - aug.color_jitter, 1 + aug.color_jitter
        img = TF.adjust_brightness(img, float(rng.uniform(lo, hi)))
        img = TF.adjust_contrast(img, float(rng.uniform(lo, hi)))
        img = TF.adjust_saturation(img, float(rng.uniform(lo, hi)))
    if aug.hue_jitter > 0:
        img = TF.adjust_hue(img, float(rng.uniform(-aug.hue_jitter, aug.hue_jitter)))
    return img.clamp(0, 1)


class PanopticTrainingData:
    """Samples of a canonical split as (image (3, H, W) float in [0, 1], target dict)."""

    def __init__(self, split: CanonicalSplit, augmentation: Augmentation = Augmentation()):
        self.split = split
        self.aug = augmentation
        things = split.classes.thing_indices.tolist()
        # Mask R-CNN label of a class index (1..T for things, 0 for stuff).
        self.class_to_label = np.zeros(split.classes.num_classes, np.int64)
        self.class_to_label[things] = np.arange(1, len(things) + 1)

    def __len__(self) -> int:
        return len(self.split)

    def sample(self, index: int, rng: np.random.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rec = self.split.images[index]
        image = self.split.image(rec)
        pan = self.split.panoptic(rec)
        segment_ids = pan.segment_ids
        semantic = pan.semantic
        if rng is not None and self.aug.crop_size is not None:
            ch, cw = self.aug.crop_size
            h, w = semantic.shape
            y0 = int(rng.integers(0, max(h - ch, 0) + 1))
            x0 = int(rng.integers(0, max(w - cw, 0) + 1))
            sl = (slice(y0, y0 + ch), slice(x0, x0 + cw))
            image, segment_ids, semantic = image[sl], segment_ids[sl], semantic[sl]
        if rng is not None and self.aug.hflip and rng.random() < 0.5:
            image, segment_ids, semantic = image[:, ::-1], segment_ids[:, ::-1], semantic[:, ::-1]
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
        if rng is not None:
            img = _jitter(img, self.aug, rng)
        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(labels),
            "masks": torch.from_numpy(masks.astype(np.uint8)),
            "semantic": torch.from_numpy(np.ascontiguousarray(semantic).astype(np.int64)),
        }
        return img, target
