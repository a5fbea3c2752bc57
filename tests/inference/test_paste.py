"""`segfusion.inference.paste` against torchvision's `paste_masks_in_image`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image

from segfusion.inference.paste import masks_to_image, paste_mask, paste_masks
from segfusion.types import Instances


def _torchvision_paste(masks: np.ndarray, boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    out = paste_masks_in_image(torch.from_numpy(masks)[:, None], torch.from_numpy(boxes), size)
    return out[:, 0].numpy()


def _random_boxes(rng: np.random.Generator, n: int, size: tuple[int, int]) -> np.ndarray:
    """Boxes of all sizes (including < 1 px), many reaching outside the image."""
    h, w = size
    x0 = rng.uniform(-0.4 * w, 1.1 * w, n)
    y0 = rng.uniform(-0.4 * h, 1.1 * h, n)
    bw = np.where(rng.random(n) < 0.3, rng.uniform(0, 2, n), rng.uniform(0, 0.8 * w, n))
    bh = np.where(rng.random(n) < 0.3, rng.uniform(0, 2, n), rng.uniform(0, 0.8 * h, n))
    return np.stack([x0, y0, x0 + bw, y0 + bh], 1).astype(np.float32)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mask_size", [28, 7])
def test_paste_matches_torchvision(seed: int, mask_size: int) -> None:
    rng = np.random.default_rng(seed)
    size = (int(rng.integers(20, 90)), int(rng.integers(20, 90)))
    n = 40
    masks = rng.random((n, mask_size, mask_size)).astype(np.float32)
    boxes = _random_boxes(rng, n, size)
    # keep only boxes torchvision handles: some part of the expanded box inside the image
    inside = (boxes[:, 2] > 1) & (boxes[:, 3] > 1) & (boxes[:, 0] < size[1] - 1) & (boxes[:, 1] < size[0] - 1)
    masks, boxes = masks[inside], boxes[inside]
    expected = _torchvision_paste(masks, boxes, size)
    for m, b, e in zip(masks, boxes, expected, strict=True):
        crop, (y0, x0) = paste_mask(m, b, size)
        assert crop.dtype == np.float32
        full = np.zeros(size, np.float32)
        full[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        np.testing.assert_allclose(full, e, atol=1e-5)


def test_tiny_and_degenerate_boxes() -> None:
    rng = np.random.default_rng(7)
    size = (30, 40)
    boxes = np.array(
        [[5, 5, 5, 5], [10.2, 3.7, 10.9, 4.1], [0, 0, 0.5, 0.5], [39, 29, 39, 29], [-3.5, -2.2, 1.5, 2.5]],
        np.float32,
    )
    masks = rng.random((len(boxes), 28, 28)).astype(np.float32)
    expected = _torchvision_paste(masks, boxes, size)
    inst = Instances(
        boxes=boxes, scores=np.ones(len(boxes)), labels=np.zeros(len(boxes)), image_size=size, mask_prob=masks
    )
    np.testing.assert_allclose(masks_to_image(inst), expected, atol=1e-5)
    np.testing.assert_array_equal(masks_to_image(inst, threshold=0.5), expected >= 0.5)


def test_box_outside_image_gives_empty_crop() -> None:
    mask = np.ones((28, 28), np.float32)
    for box in ([-50, -50, -20, -20], [100, 5, 130, 20], [5, 100, 20, 130]):
        crop, _ = paste_mask(mask, np.array(box, np.float32), (30, 40))
        assert crop.size == 0


def test_crop_is_only_the_box() -> None:
    crop, (y0, x0) = paste_mask(
        np.ones((28, 28), np.float32), np.array([10, 5, 19, 14], np.float32), (1000, 2000)
    )
    # expanded by 30/28 about the centre (14.5, 9.5), truncated: x 9..19, y 4..14
    assert (y0, x0) == (4, 9)
    assert crop.shape == (11, 11)


def test_mask_image_crops_are_lossless() -> None:
    rng = np.random.default_rng(3)
    full = np.zeros((3, 20, 30), np.float32)
    full[0, 2:5, 7:19] = rng.random((3, 12))
    full[2, 19, 29] = 0.7
    inst = Instances(
        boxes=np.zeros((3, 4)), scores=np.ones(3), labels=np.zeros(3), image_size=(20, 30), mask_image=full
    )
    crops = paste_masks(inst)
    assert crops[1][0].size == 0
    assert crops[2][0].shape == (1, 1) and crops[2][1] == (19, 29)
    np.testing.assert_array_equal(masks_to_image(inst), full)
