"""Edge cases of the shared fusion machinery (segfusion/fusion/common.py): parameter and input
checks, `BilinearField` at its boundaries (channel limit, chunking, row blocks, void pixels,
dtypes) and `SegmentCanvas` bookkeeping. Expected values are derived by hand in the comments
or come from `resize_bilinear`, the plain full-resolution computation the field must equal."""

from __future__ import annotations

import numpy as np
import pytest

from segfusion.fusion import fuse
from segfusion.fusion.common import (
    _CHUNK,
    _ROW_BLOCK,
    BilinearField,
    SegmentCanvas,
    stuff_area_threshold,
    validate_inputs,
)
from segfusion.resize import resize_bilinear
from segfusion.types import Instances, SemanticPrediction

from .helpers import CAR, PERSON, ROAD, SIDEWALK, street_classes

# --------------------------------------------------------------------------- parameters


def test_stuff_area_threshold_bounds_and_messages() -> None:
    # the fraction interval [0, 1] is closed: 0 disables the rule, 1 asks for the whole image
    assert stuff_area_threshold("m", (10, 20), None, 0.0) == 0.0
    assert stuff_area_threshold("m", (10, 20), None, 1.0) == 200.0
    assert stuff_area_threshold("m", (10, 20), 0, None) == 0.0
    with pytest.raises(ValueError, match=r"^fusion 'm': stuff_area must be >= 0, got -1$"):
        stuff_area_threshold("m", (10, 20), -1, None)
    with pytest.raises(ValueError, match=r"^fusion 'm': stuff_area_fraction must be in \[0, 1\], got -0\.1$"):
        stuff_area_threshold("m", (10, 20), None, -0.1)


# --------------------------------------------------------------------------- validation


def _inputs(labels: list[int]):
    classes = street_classes()
    n = len(labels)
    inst = Instances(
        boxes=np.zeros((n, 4), np.float32),
        scores=np.full(n, 0.9, np.float32),
        labels=np.array(labels),
        image_size=(2, 2),
        mask_image=np.ones((n, 2, 2), np.float32),
    )
    sem = SemanticPrediction(np.full((classes.num_classes, 2, 2), 1 / 6, np.float32), (2, 2))
    return inst, sem, classes


@pytest.mark.parametrize("label", [-1, 6, 7])
def test_labels_outside_the_class_list_are_named(label: int) -> None:
    # street classes: 6 classes, valid indices 0..5
    inst, sem, classes = _inputs([CAR, label])
    with pytest.raises(ValueError, match=rf"^fusion: instance labels \[{label}\] are not class indices 0\.\.5$"):
        validate_inputs(inst, sem, classes)


def test_every_stuff_label_is_named() -> None:
    inst, sem, classes = _inputs([ROAD, CAR, SIDEWALK])
    with pytest.raises(ValueError, match=r"instance labels 0 \(road\), 1 \(sidewalk\) are stuff classes"):
        validate_inputs(inst, sem, classes)
    # thing labels only: no error
    validate_inputs(*_inputs([CAR, PERSON]))


# --------------------------------------------------------------------------- BilinearField


def test_field_rejects_non_3d_probabilities() -> None:
    with pytest.raises(ValueError, match=r"^BilinearField: prob must be \(C, h, w\), got \(2, 3\)$"):
        BilinearField(np.zeros((2, 3), np.float32), (4, 6))


def test_field_works_in_float32_whatever_the_input_dtype() -> None:
    rng = np.random.default_rng(1)
    prob64 = rng.random((3, 4, 5))
    field = BilinearField(prob64, (8, 10))
    assert field.prob.dtype == np.float32
    ref = resize_bilinear(prob64.astype(np.float32), (8, 10))
    rows = field.rows(2, 5)
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows, ref[:, 2:5])
    same = BilinearField(prob64, (4, 5))
    assert same.identity and not field.identity
    assert same.rows(0, 4).dtype == np.float32


def test_channels_and_groups_accept_empty_selections() -> None:
    rng = np.random.default_rng(2)
    prob = rng.random((3, 2, 2)).astype(np.float32)
    field = BilinearField(prob, (4, 4))
    assert field.channels([]).num_channels == 0
    grouped = field.grouped([[0, 2], []])
    # an empty group is a channel of zeros; the other is the sum of channels 0 and 2
    np.testing.assert_array_equal(grouped.prob[1], np.zeros((2, 2), np.float32))
    np.testing.assert_array_equal(grouped.prob[0], prob[0] + prob[2])


def test_values_dtype_and_coordinate_types() -> None:
    rng = np.random.default_rng(3)
    # identity field 3 x 300: a row index times the width (2 * 300) does not fit uint8
    prob = rng.random((2, 3, 300)).astype(np.float32)
    field = BilinearField(prob, (3, 300))
    ys, xs = np.array([2, 1, 0], np.uint8), np.array([5, 299, 7], np.int16)
    got = field.values(ys, xs)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, prob[:, [2, 1, 0], [5, 299, 7]].T)
    # integer-valued float coordinates are pixel indices too (upsampled field)
    up = BilinearField(prob[:, :, :30], (6, 60))
    ref = resize_bilinear(prob[:, :, :30], (6, 60))
    yf, xf = np.array([0.0, 5.0, 3.0]), np.array([59.0, 0.0, 17.0])
    np.testing.assert_array_equal(up.values(yf, xf), ref[:, [0, 5, 3], [59, 0, 17]].T)
    assert up.values(np.array([1]), np.array([2])).dtype == np.float32


@pytest.mark.parametrize("size,image", [((260, 260), (260, 260)), ((130, 130), (260, 260))])
def test_values_beyond_one_chunk(size, image) -> None:
    # 260 * 260 = 67600 pixels > _CHUNK = 65536: the second chunk must be filled as well
    assert image[0] * image[1] > _CHUNK
    rng = np.random.default_rng(4)
    prob = rng.random((2, *size)).astype(np.float32)
    field = BilinearField(prob, image)
    ref = resize_bilinear(prob, image)
    ys, xs = np.nonzero(np.ones(image, bool))
    np.testing.assert_array_equal(field.values(ys, xs), ref[:, ys, xs].T)


def test_argmax_channel_limit() -> None:
    # 255 channels still fit uint8 (indices 0..254); the maximum sits in the last one
    prob = np.zeros((255, 1, 2), np.float32)
    prob[254, 0, 0] = 1.0
    prob[3, 0, 1] = 1.0
    np.testing.assert_array_equal(BilinearField(prob, (1, 2)).argmax(), [[254, 3]])
    with pytest.raises(ValueError, match=r"^BilinearField\.argmax: 256 channels do not fit uint8$"):
        BilinearField(np.zeros((256, 1, 1), np.float32), (1, 1)).argmax()


def test_argmax_with_a_single_mixed_cell() -> None:
    # low resolution 1 x 2: pixel 0 is class 0 (0.9 / 0.1), pixel 1 class 1 (0.1 / 0.9); only
    # the cell between them is mixed. Upsampled to width 8 the right-neighbour weights are
    # 0, 0, .125, .375, .625, .875 (cell 0) and .125, .375 (last pixel, clamped). Class 1 wins
    # where 0.1 (1 - w) + 0.9 w > 0.9 (1 - w) + 0.1 w, i.e. w > 0.5: output pixels 4 and 5 of
    # the mixed cell, and 6, 7 (whose corners are both pixel 1).
    prob = np.array([[[0.9, 0.1]], [[0.1, 0.9]]], np.float32)
    field = BilinearField(prob, (1, 8))
    expected = [[0, 0, 0, 0, 1, 1, 1, 1]]
    np.testing.assert_array_equal(field.argmax(), expected)
    np.testing.assert_array_equal(resize_bilinear(prob, (1, 8)).argmax(axis=0), expected)


def test_argmax_all_zero_pixel_next_to_candidates() -> None:
    # 6 channels (more than _CANDIDATES = 4). Low-res row 0 is all zero (void), row 1 has
    # 0.25 on channels 1..4. Upsampled to 4 rows, output row 0 sits on low row 0 exactly
    # (weight 0 on row 1), so all its values are 0 and argmax (first index) is 0, although the
    # 4 candidates of the cell are channels 1..4 and the bound (5th corner maximum) is 0.
    # Rows 1 and 2 interpolate 0.25 * w > 0 on channels 1..4: channel 1 (first of the ties).
    prob = np.zeros((6, 2, 1), np.float32)
    prob[1:5, 1, 0] = 0.25
    field = BilinearField(prob, (4, 1))
    expected = [[0], [1], [1], [1]]
    np.testing.assert_array_equal(resize_bilinear(prob, (4, 1)).argmax(axis=0), expected)
    np.testing.assert_array_equal(field.argmax(), expected)
    np.testing.assert_array_equal(field.argmax(need=np.ones((4, 1), bool)), expected)


def test_void_pixels() -> None:
    # identity: exactly the all-zero pixels
    prob = np.full((3, 2, 2), 1 / 3, np.float32)
    prob[:, 0, 0] = 0.0
    np.testing.assert_array_equal(BilinearField(prob, (2, 2)).void(), [[True, False], [False, False]])
    # upsampled 1 x 2 -> 1 x 8: right-neighbour weights 0, 0, .125, ... (see above); output
    # pixels 0 and 1 take only the void low-res pixel 0, all others some of pixel 1's mass
    prob = np.array([[[0.0, 0.5]], [[0.0, 0.5]]], np.float32)
    void = BilinearField(prob, (1, 8)).void()
    np.testing.assert_array_equal(void, [[True, True, False, False, False, False, False, False]])


def test_void_is_none_without_void_pixels() -> None:
    # probabilities summing to exactly 1 (0.5 + 0.5, 0.25 + 0.75): no void pixel anywhere
    prob = np.array([[[0.5, 0.25]], [[0.5, 0.75]]], np.float32)
    assert BilinearField(prob, (1, 2)).void() is None
    assert BilinearField(prob, (3, 5)).void() is None


def test_argmax_and_max_beyond_the_row_blocks() -> None:
    # 70 rows > 2 * _ROW_BLOCK: every block of rows must be computed
    assert 70 > 2 * _ROW_BLOCK
    rng = np.random.default_rng(5)
    prob = rng.random((3, 20, 3)).astype(np.float32)
    arg, top = BilinearField(prob, (70, 5)).argmax_and_max()
    ref = resize_bilinear(prob, (70, 5))
    assert arg.dtype == np.uint8 and top.dtype == np.float32
    np.testing.assert_array_equal(arg, ref.argmax(axis=0))
    np.testing.assert_array_equal(top, ref.max(axis=0))


# --------------------------------------------------------------------------- SegmentCanvas


def test_paint_classes_creates_segments_only_for_present_classes() -> None:
    canvas = SegmentCanvas((2, 3))
    labels = np.array([[2, 2, 255], [0, 255, 255]], np.uint8)
    allowed = np.ones(4, bool)
    areas = canvas.paint_classes(labels, allowed=allowed, is_thing=np.zeros(4, bool))
    # classes 0 (1 px) and 2 (2 px) are present, 1 and 3 are not: two segments, ids in class order
    np.testing.assert_array_equal(areas, [1, 0, 2, 0])
    assert canvas.info == {1: (0, False, False, 1.0), 2: (2, False, False, 1.0)}
    np.testing.assert_array_equal(canvas.ids, [[2, 2, 0], [1, 0, 0]])


def test_fuse_with_default_stuff_area_on_a_small_image() -> None:
    # default fraction 4096 / (1024 * 2048) of 2 * 2 pixels is far below one pixel: every stuff
    # class present keeps its segment
    classes = street_classes()
    prob = np.zeros((6, 2, 2), np.float32)
    prob[ROAD] = [[0.9, 0.9], [0.0, 0.0]]
    prob[SIDEWALK] = [[0.0, 0.0], [0.9, 0.0]]
    prob[CAR] = [[0.1, 0.1], [0.1, 1.0]]
    empty = Instances.empty((2, 2))
    pan = fuse("kirillov", empty, SemanticPrediction(prob, (2, 2)), classes)
    assert sorted((s.class_index, s.area) for s in pan.segments) == [(ROAD, 2), (SIDEWALK, 1)]


def test_argmax_is_exact_for_large_unnormalised_scores() -> None:
    # scores around 1000 that differ by 1e-6 relative (a few float32 ulps), 6 channels: the
    # candidate test must allow for the rounding of values of that magnitude. The reference
    # is the plain full-resolution interpolation.
    k = np.array(
        [
            [[0, 3], [3, 0], [3, 2], [1, 3]],
            [[3, 3], [2, 1], [2, 3], [2, 0]],
            [[1, 1], [2, 1], [1, 2], [2, 0]],
            [[3, 1], [0, 0], [1, 2], [1, 3]],
            [[0, 0], [1, 2], [1, 3], [0, 3]],
            [[0, 3], [0, 1], [1, 3], [2, 3]],
        ]
    )
    prob = (1000.0 * (1 + k * 1e-6)).astype(np.float32)
    field = BilinearField(prob, (16, 3))
    ref = resize_bilinear(prob, (16, 3)).argmax(axis=0)
    np.testing.assert_array_equal(field.argmax(), ref)
    np.testing.assert_array_equal(field.argmax(need=np.ones((16, 3), bool)), ref)


def test_void_of_a_field_without_low_resolution_pixels() -> None:
    # no low-resolution pixel at all (h = 0): nothing is void
    assert BilinearField(np.zeros((2, 0, 3), np.float32), (4, 3)).void() is None
