"""Edge cases of `segfusion.inference.paste` that the torchvision comparison does not reach.

Written against surviving mutants of `make mutate`: empty crops (shape, dtype, offset), input validation,
the float32 arithmetic of the box expansion, the ``padding`` argument, tight image-mask crops and the
``>=`` binarisation. Each expectation is a hand case or torchvision's own ``expand_boxes``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models.detection.roi_heads import expand_boxes

from segfusion.inference.paste import crop_image_mask, expanded_box, masks_to_image, paste_mask
from segfusion.types import Instances


def _tv_expanded(box: list[float], mask_size: int) -> tuple[int, ...]:
    scale = (mask_size + 2) / mask_size
    out = expand_boxes(torch.tensor([box], dtype=torch.float32), scale).to(torch.int64)
    return tuple(int(v) for v in out[0])


def test_expansion_is_float32_even_for_float64_boxes() -> None:
    # float64 coordinates a hair below an integer round up to it in float32 (torchvision's box dtype)
    for box in ([9.999999999, 4.999999999, 19.999999999, 14.999999999], [0.999999999, 1.999999999, 2.0, 3.0],
                [-0.000000001, 27.999999999, 56.999999999, 55.999999999]):  # fmt: skip
        for m in (28, 7):
            assert expanded_box(np.array(box, np.float64), m) == _tv_expanded(box, m)
            assert expanded_box(box, m) == _tv_expanded(box, m)
    # float32-exact coordinates whose expansion truncates differently in float64 than in float32 arithmetic
    # (found by comparing torchvision's float32 `expand_boxes` against a float64 recomputation)
    for box in ([0.875, 67.0, 53.375, 131.625], [0.5, 23.375, 42.5, 32.125], [12.25, 0.875, 105.75, 53.375]):
        assert expanded_box(np.array(box, np.float64), 28) == _tv_expanded(box, 28)


def test_expanded_box_accepts_row_or_column_boxes() -> None:
    box = np.array([10, 5, 19, 14], np.float32)
    # hand case (see test_paste.test_crop_is_only_the_box): x 9..19, y 4..14
    assert expanded_box(box, 28) == (9, 4, 19, 14)
    assert expanded_box(box[None, :], 28) == (9, 4, 19, 14)
    assert expanded_box(box[:, None], 28) == (9, 4, 19, 14)


def test_padding_argument_scales_the_expansion() -> None:
    # a 28-px box with 2 px of padding per side: scale 32/28, half-width 16 about centre 14 -> -2..30
    assert expanded_box(np.array([0, 0, 28, 28], np.float32), 28, padding=2) == (-2, -2, 30, 30)
    # padding 0 leaves the box as it is
    assert expanded_box(np.array([3, 4, 17, 9], np.float32), 28, padding=0) == (3, 4, 17, 9)


@pytest.mark.parametrize("shape", [(28, 14), (28, 28, 1), (28,), (1, 28, 28)])
def test_non_square_or_non_2d_masks_are_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\(M, M\), got"):
        paste_mask(np.ones(shape, np.float32), np.array([0, 0, 5, 5], np.float32), (10, 10))


def test_float64_masks_are_pasted_as_float32() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((28, 28))  # float64, most values not representable in float32
    box = np.array([3.3, 2.1, 40.7, 25.9], np.float32)
    crop64, off64 = paste_mask(mask, box, (30, 50))
    crop32, off32 = paste_mask(mask.astype(np.float32), box, (30, 50))
    assert crop64.dtype == np.float32 and off64 == off32
    np.testing.assert_array_equal(crop64, crop32)


# Boxes whose expanded box ends exactly one pixel before the image (by1 == -1 or bx1 == -1) or starts exactly
# at its far edge (by0 == H or bx0 == W), and boxes outside in one axis only. Image 30 x 40 (H x W).
# The expected offset is the expanded box's top-left clamped into the image.
OUTSIDE = [
    ([10, -12, 20, -2], (0, 9)),  # above: y_exp -12.36..-1.64 -> by1 = -1; x 9.64.. -> bx0 = 9
    ([-12, 10, -2, 20], (9, 0)),  # left: bx1 = -1
    ([10, 31, 20, 41], (30, 9)),  # below: by0 = trunc(30.64) = 30 = H
    ([41, 10, 51, 20], (9, 40)),  # right: bx0 = trunc(40.64) = 40 = W
    ([-60, -60, -20, -20], (0, 0)),  # above and left
]


@pytest.mark.parametrize(("box", "offset"), OUTSIDE)
def test_box_outside_image_gives_a_0x0_float32_crop_at_the_clamped_corner(box, offset) -> None:
    bx0, by0, bx1, by1 = expanded_box(np.array(box, np.float32), 28)
    assert by1 + 1 <= max(by0, 0) or by0 >= 30 or bx1 + 1 <= max(bx0, 0) or bx0 >= 40  # really outside
    crop, off = paste_mask(np.ones((28, 28), np.float32), np.array(box, np.float32), (30, 40))
    assert crop.shape == (0, 0)
    assert crop.dtype == np.float32
    assert off == offset


def test_box_touching_the_first_row_is_not_empty() -> None:
    # y -10..-0.5: y_exp = -5.25 -/+ 5.0893 -> by0 = trunc(-10.34) = -10, by1 = trunc(-0.16) = 0, so row 0 is in
    crop, (y0, x0) = paste_mask(np.ones((28, 28), np.float32), np.array([10, -10, 20, -0.5], np.float32), (30, 40))
    assert (y0, x0) == (0, 9) and crop.shape == (1, 12)


def test_all_zero_image_mask_gives_a_0x0_float32_crop_at_the_origin() -> None:
    crop, off = crop_image_mask(np.zeros((5, 7), np.float32))
    assert crop.shape == (0, 0) and crop.dtype == np.float32 and off == (0, 0)


def test_image_mask_crop_is_the_tight_bounding_box_in_float32() -> None:
    mask = np.zeros((10, 12), bool)
    mask[2, 3] = mask[4, 8] = True  # bounding box rows 2..4, cols 3..8
    crop, off = crop_image_mask(mask)
    assert off == (2, 3)
    assert crop.shape == (3, 6)
    assert crop.dtype == np.float32
    expected = np.zeros((3, 6), np.float32)
    expected[0, 0] = expected[2, 5] = 1.0
    np.testing.assert_array_equal(crop, expected)
    crop64, _ = crop_image_mask(mask.astype(np.float64) * 0.3)
    assert crop64.dtype == np.float32


def test_masks_to_image_is_float32_and_threshold_is_inclusive() -> None:
    full = np.zeros((2, 4, 5), np.float32)
    full[0, 1, 1] = 0.5
    full[0, 2, 2] = 0.4999
    full[1, 3, 4] = 0.75
    inst = Instances(
        boxes=np.zeros((2, 4)), scores=np.ones(2), labels=np.zeros(2), image_size=(4, 5), mask_image=full
    )
    out = masks_to_image(inst)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, full)
    binary = masks_to_image(inst, threshold=0.5)
    assert binary.dtype == bool
    np.testing.assert_array_equal(binary, full >= 0.5)
    assert binary[0, 1, 1] and not binary[0, 2, 2] and binary[1, 3, 4]
