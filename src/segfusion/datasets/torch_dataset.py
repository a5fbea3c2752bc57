"""A torch-facing view of a canonical split: Mask R-CNN targets and the semantic map together.

Augmentations follow the IMP Cityscapes setup (Sec. 4.3): horizontal flip and colour
jitter (brightness, contrast, saturation ±``color_jitter``, hue ±``hue_jitter``), random
crops of ``crop_size``. With a crop and several training ``min_size`` values, the sample is
resized to a drawn scale *then* cropped (`draw_params`, `resize_crop_sample`); without a
crop, torchvision's transform does the multi-scale resize. Every random choice comes from the generator
the caller passes in, so a batch is a pure function of (seed, iteration, slot) and a
resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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


def _bilinear_taps(in_size: int, out_size: int, start: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices i0, i1 and weights w0, w1 of output indices ``start .. start + count - 1`` of a
    bilinear resize ``in_size -> out_size`` (align_corners=False), as PyTorch's CPU kernel computes
    them (aten UpSample.h ``compute_indices_weights_linear``, float32): scale = in / out in float32,
    src = max(scale * (dst + 0.5) - 0.5, 0), i0 = floor(src) (at most in - 1), i1 = i0 + 1 except at
    the last source index, w1 = src - i0 clamped to [0, 1], w0 = 1 - w1."""
    scale = np.float32(in_size) / np.float32(out_size)
    dst = np.arange(start, start + count, dtype=np.float32) + np.float32(0.5)
    # One rounding of scale * dst - 0.5, as the fused multiply-add of the compiled kernel: the
    # float32 product is exact in float64, and so is subtracting 0.5 from it.
    src = np.maximum((np.float64(scale) * dst.astype(np.float64) - 0.5).astype(np.float32), np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = i0 + (i0 < in_size - 1)
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0), np.float32(1))
    return i0, i1, np.float32(1) - w1, w1


def _nearest_taps(in_size: int, out_size: int, start: int, count: int) -> np.ndarray:
    """Source indices of output indices ``start ..`` of PyTorch's "nearest" resize ``in_size -> out_size``
    (aten UpSample.h ``nearest_idx``: floor(dst * scale) in float32, scale = in / out in float32)."""
    scale = np.float32(in_size) / np.float32(out_size)
    return np.minimum(np.floor(np.arange(start, start + count, dtype=np.float32) * scale).astype(np.int64), in_size - 1)


def resize_crop_sample(
    size: tuple[int, int], crop: tuple[int, int, int, int] | None, image: np.ndarray, *label_maps: np.ndarray
) -> tuple[np.ndarray, ...]:
    """The window ``crop`` (y0, x0, h, w; None = all) of the sample resized to ``size`` (h, w): the
    (H, W, 3) image bilinearly (as the detector transform resizes: float, align_corners=False),
    (H, W) label maps by nearest neighbour (PyTorch's "nearest" source index).

    Only the window is computed: resizing the whole image first (a 2048 x 4096 float image for
    the largest of cityscapes_imp's scales) and then cutting 512 x 1024 from it took 60 % of a
    sample's loading time at that scale, 1/3 averaged over the scales
    (``python benchmarks/bench_loading.py``). The label maps are exactly
    the window of the resized maps. The image is the same bilinear interpolation (PyTorch's taps
    and weights exactly, `_bilinear_taps`), evaluated with separately rounded float32 products
    and sums, so a value can differ from PyTorch's in the last bits, by as much as PyTorch's
    own result differs between 1 and 2 threads (another kernel): at most 4.6e-5 on the 0-255
    scale in tests/datasets/test_resize_crop.py. A window of a third of the resized sample or
    more is cut from PyTorch's resize of everything, which is faster there.
    """
    in_h, in_w = image.shape[:2]
    y0, x0, h, w = crop if crop is not None else (0, 0, *size)
    if tuple(size) == (in_h, in_w):  # no resize (as PyTorch: a copy)
        window = (slice(y0, y0 + h), slice(x0, x0 + w))
        return (image[window].astype(np.float32), *(m[window] for m in label_maps))
    lh, lw = label_maps[0].shape[:2] if label_maps else (in_h, in_w)
    ys, xs = _nearest_taps(lh, size[0], y0, h), _nearest_taps(lw, size[1], x0, w)
    labels = tuple(m[ys[:, None], xs[None, :]] for m in label_maps)
    if 3 * h * w >= size[0] * size[1]:
        # A window of a third of the resized sample or more: PyTorch's vectorised kernel over
        # everything is faster (per output value it costs about a third of the gathers below).
        img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None]
        img = torch.nn.functional.interpolate(img, size=size, mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
        return (img[y0 : y0 + h, x0 : x0 + w], *labels)
    r0, r1, wy0, wy1 = _bilinear_taps(in_h, size[0], y0, h)
    c0, c1, wx0, wx1 = _bilinear_taps(in_w, size[1], x0, w)
    wx0, wx1 = wx0[None, :, None], wx1[None, :, None]

    def along_columns(rows: np.ndarray) -> np.ndarray:  # (h, W, 3) uint8 source rows -> (h, w, 3) float32
        return rows[:, c0].astype(np.float32) * wx0 + rows[:, c1].astype(np.float32) * wx1

    img = along_columns(image[r0]) * wy0[:, None, None] + along_columns(image[r1]) * wy1[:, None, None]
    return (img, *labels)


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
        if params.size is not None:  # multi-scale: the crop's window of the resized sample
            image, segment_ids, semantic = resize_crop_sample(params.size, params.crop, image, segment_ids, semantic)
            params = replace(params, crop=None)
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
