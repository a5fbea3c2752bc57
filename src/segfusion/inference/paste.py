"""Paste box-relative instance masks into image space, in numpy (no torch at import time).

Mask R-CNN predicts each instance's mask as an M×M probability grid (M = 28) relative to
its box. This module reproduces the geometry of torchvision's ``paste_masks_in_image``
(``torchvision.models.detection.roi_heads``) so that fusion and evaluation see the same
pixels as a torchvision model's own post-processing:

1. the mask is padded by one zero pixel on every side, (M+2)×(M+2);
2. the box is expanded about its centre by ``(M + 2) / M`` (float32 arithmetic) and
   truncated towards zero to integers ``(bx0, by0, bx1, by1)``;
3. the padded mask is resized bilinearly (torch ``align_corners=False`` grid) to
   ``h = max(by1 - by0 + 1, 1)`` rows and ``w = max(bx1 - bx0 + 1, 1)`` columns;
4. the part of that resized mask inside the image, rows ``max(by0, 0) .. min(by1 + 1, H)``
   and columns ``max(bx0, 0) .. min(bx1 + 1, W)``, is the pasted mask.

Unlike torchvision we never build an H×W array per instance: `paste_mask` returns only the
crop inside the image and its offset, and only that crop's rows and columns are
interpolated. A box entirely outside the image gives a (0, 0) crop. (torchvision itself
mis-slices such boxes through negative indices; we return the geometrically correct empty
crop.) Values are float32 probabilities, not thresholded.
"""

from __future__ import annotations

import numpy as np

from segfusion.resize import _axis_weights
from segfusion.types import Instances

Crop = tuple[np.ndarray, tuple[int, int]]
"""A pasted mask: (crop (h, w) float32, (y0, x0) offset of the crop's top-left pixel in the image)."""

PADDING = 1
"""Zero padding added around the M×M mask before pasting (torchvision's ``padding=1``)."""


def expanded_box(box: np.ndarray, mask_size: int, padding: int = PADDING) -> tuple[int, int, int, int]:
    """Integer box (x0, y0, x1, y1) that the padded mask is resized into.

    box: (4,) x0, y0, x1, y1. The expansion is computed in float32, as torchvision does on
    float32 boxes, then truncated towards zero (``Tensor.to(torch.int64)``).
    """
    b = np.asarray(box, dtype=np.float32).reshape(4)
    scale = np.float32((mask_size + 2 * padding) / mask_size)
    half = np.float32(0.5)
    w_half = (b[2] - b[0]) * half * scale
    h_half = (b[3] - b[1]) * half * scale
    x_c = (b[2] + b[0]) * half
    y_c = (b[3] + b[1]) * half
    exp = np.array([x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half], dtype=np.float32)
    x0, y0, x1, y1 = (int(v) for v in np.trunc(exp).astype(np.int64))
    return x0, y0, x1, y1


def _interpolate_window(image: np.ndarray, out_size: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    """Rows ``rows`` and columns ``cols`` of ``image`` (h, w) resized bilinearly to ``out_size``.

    Same sampling grid and operation order as `segfusion.resize.resize_bilinear` (rows
    first, then columns, float32), restricted to the requested output window.
    """
    h_in, w_in = image.shape
    y0, y1, wy = _axis_weights(h_in, out_size[0])
    x0, x1, wx = _axis_weights(w_in, out_size[1])
    y0, y1, wy = y0[rows], y1[rows], wy[rows]
    x0, x1, wx = x0[cols], x1[cols], wx[cols]
    r = image[y0, :] * (1.0 - wy)[:, None] + image[y1, :] * wy[:, None]
    return r[:, x0] * (1.0 - wx)[None, :] + r[:, x1] * wx[None, :]


def paste_mask(mask_prob: np.ndarray, box: np.ndarray, image_size: tuple[int, int]) -> Crop:
    """Paste one box-relative mask into its box at image resolution.

    mask_prob:  (M, M) float mask probabilities relative to ``box``.
    box:        (4,) x0, y0, x1, y1 in image pixels (may reach outside the image).
    image_size: (H, W).
    Returns the crop (h, w) float32 of the pasted mask inside the image and its offset
    (y0, x0); h or w is 0 when the box lies outside the image. Equal (to float rounding) to
    ``paste_masks_in_image(...)[y0:y0+h, x0:x0+w]`` of torchvision.
    """
    mask = np.asarray(mask_prob, dtype=np.float32)
    if mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        raise ValueError(f"paste_mask: mask_prob must be (M, M), got {mask.shape}")
    height, width = int(image_size[0]), int(image_size[1])
    bx0, by0, bx1, by1 = expanded_box(box, mask.shape[0])
    h = max(by1 - by0 + 1, 1)
    w = max(bx1 - bx0 + 1, 1)
    ys, ye = max(by0, 0), min(by1 + 1, height)
    xs, xe = max(bx0, 0), min(bx1 + 1, width)
    if ye <= ys or xe <= xs:
        return np.zeros((0, 0), np.float32), (min(max(ys, 0), height), min(max(xs, 0), width))
    padded = np.pad(mask, PADDING)
    crop = _interpolate_window(padded, (h, w), slice(ys - by0, ye - by0), slice(xs - bx0, xe - bx0))
    return np.ascontiguousarray(crop, dtype=np.float32), (ys, xs)


def crop_image_mask(mask: np.ndarray) -> Crop:
    """An image-relative mask (H, W) cut to the bounding box of its non-zero pixels.

    Lossless: the mask is exactly 0 outside the crop. An all-zero mask gives a (0, 0) crop.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return np.zeros((0, 0), np.float32), (0, 0)
    cols = np.flatnonzero(mask.any(axis=0))
    crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return np.ascontiguousarray(crop, dtype=np.float32), (int(rows[0]), int(cols[0]))


def instance_crop(instances: Instances, index: int) -> Crop:
    """The mask of detection ``index`` as (crop, (y0, x0)), whichever form the masks take.

    Box-relative masks (``mask_prob``) are pasted with `paste_mask`; image-relative masks
    (``mask_image``) are cut with `crop_image_mask`.
    """
    if instances.mask_prob is not None:
        return paste_mask(instances.mask_prob[index], instances.boxes[index], instances.image_size)
    assert instances.mask_image is not None
    return crop_image_mask(instances.mask_image[index])


def paste_masks(instances: Instances) -> list[Crop]:
    """One (crop, (y0, x0)) per instance, in input order (see `instance_crop`)."""
    return [instance_crop(instances, i) for i in range(len(instances))]


def masks_to_image(instances: Instances, threshold: float | None = None) -> np.ndarray:
    """All masks at image resolution: (N, H, W) float32, or bool ``prob >= threshold``.

    For small images and tests only: 100 masks at 1024×2048 are 800 MB. The ``>=``
    binarisation follows detectron2's ``paste_masks_in_image(threshold=0.5)``.
    """
    height, width = instances.image_size
    full = np.zeros((len(instances), height, width), np.float32)
    for i, (crop, (y0, x0)) in enumerate(paste_masks(instances)):
        full[i, y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
    if threshold is None:
        return full
    return full >= threshold
