"""Edge cases of `segfusion.metrics.statistics`, written against surviving mutants of `make mutate`.

Every expectation is a hand case (numbers worked out in the comments) or an independent recomputation
with plain Python loops; none is copied from running the code.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from segfusion.metrics.statistics import (
    bootstrap_ci,
    box_iou,
    class_iou,
    dense_per_image,
    miou_from_sums,
    most_frequent_class_miou,
    pq_from_sums,
    rpn_recall,
)


def _plain_box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def test_class_iou_integer_counts_and_fractional_denominators() -> None:
    # integer inputs must not fall into integer arithmetic: 1 / (2 + 2 - 1) = 1/3
    got = class_iou(np.array([1, 0, 3], np.int64), np.array([2, 0, 3], np.int64), np.array([2, 0, 3], np.int64))
    assert got.dtype == np.float64
    assert got[0] == pytest.approx(1 / 3) and math.isnan(got[1]) and got[2] == 1.0
    # uint8 counts near the type's limit: 200 + 200 - 100 = 300 would wrap around in uint8
    u = class_iou(np.array([100], np.uint8), np.array([200], np.uint8), np.array([200], np.uint8))
    assert u[0] == pytest.approx(100 / 300)
    # a denominator in (0, 1): weighted (bootstrap) sums are fractional; 0.2 / (0.5 + 0.3 - 0.2) = 1/3
    assert class_iou(np.array([0.2]), np.array([0.5]), np.array([0.3]))[0] == pytest.approx(1 / 3)


def test_class_iou_is_silent_on_empty_classes() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            got = class_iou(np.zeros(2), np.zeros(2), np.zeros(2))
    assert np.isnan(got).all()


def test_box_iou_hand_cases_against_plain_formula() -> None:
    a = np.array([[0, 0, 4, 2], [1, 1, 3, 5], [10, 10, 11, 12]], float)  # non-square boxes, away from the origin
    b = np.array([[2, 1, 6, 3], [0, 0, 4, 2], [10.5, 10.5, 10.75, 13]], float)
    got = box_iou(a, b)
    assert got.shape == (3, 3)
    for i in range(3):
        for j in range(3):
            assert got[i, j] == pytest.approx(_plain_box_iou(a[i], b[j])), (i, j)
    # hand values: [0,0,4,2] vs [2,1,6,3]: inter 2 x 1 = 2, union 8 + 8 - 2 = 14
    assert got[0, 0] == pytest.approx(2 / 14)
    assert got[0, 1] == 1.0
    # a sub-pixel overlap stays below 1 pixel and is not rounded up: 0.25 x 1.5 in a 1 x 2 box
    assert got[2, 2] == pytest.approx(0.375 / (2 + 0.625 - 0.375))


def test_box_iou_empty_inputs_have_the_right_shape() -> None:
    boxes = np.array([[0, 0, 1, 1], [0, 0, 2, 2]], float)
    assert box_iou(np.zeros((0, 4)), boxes).shape == (0, 2)
    assert box_iou(boxes, np.zeros((0, 4))).shape == (2, 0)
    assert box_iou(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0, 0)
    one = box_iou(boxes[:1], boxes)  # a single box is not "empty"
    np.testing.assert_allclose(one, [[1.0, 0.25]])


def test_box_iou_of_boxes_smaller_than_a_pixel() -> None:
    # union below 1 pixel: identical half-pixel boxes have IoU 1; [0,0,.5,.5] vs [0,0,.5,.25]: 0.125 / 0.25
    a = np.array([[0, 0, 0.5, 0.5]])
    np.testing.assert_allclose(box_iou(a, np.array([[0, 0, 0.5, 0.5], [0, 0, 0.5, 0.25]])), [[1.0, 0.5]])
    # degenerate (zero-area) boxes give 0, not NaN
    assert box_iou(np.array([[1.0, 1, 1, 1]]), np.array([[1.0, 1, 1, 1]]))[0, 0] == 0.0


def test_rpn_recall_threshold_is_inclusive_and_no_proposals_is_zero() -> None:
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    # [0,0,10,5] covers half of the first box: IoU exactly 0.5 counts at iou=0.5
    assert rpn_recall(gt, np.array([[0, 0, 10, 5]], float), iou=0.5) == 0.5
    assert rpn_recall(gt, np.array([[0, 0, 10, 5]], float), iou=0.51) == 0.0
    assert rpn_recall(gt, np.zeros((0, 4))) == 0.0


def test_most_frequent_class_miou_hand_cases() -> None:
    # rows = ground truth (C=3), columns = prediction + void. GT counts 1, 6, 3 -> class 1 wins:
    # IoU_1 = 6 / 10, other present classes have IoU 0 -> mIoU = 0.6 / 3
    conf = np.array([[1, 0, 0, 0], [0, 5, 0, 1], [0, 0, 3, 0]], np.int64)
    assert most_frequent_class_miou(conf) == pytest.approx(0.6 / 3)
    # a class with a single GT pixel is present; an absent class (0 GT pixels) is not
    conf2 = np.array([[1, 0, 0], [0, 4, 0]], np.uint8)  # C=2: GT 1 and 4 -> (4/5) / 2
    assert most_frequent_class_miou(conf2) == pytest.approx(0.8 / 2)
    # uint8 counts whose row sum exceeds 255: 300 GT pixels of class 0, 100 of class 1 -> (300/400) / 2
    conf3 = np.array([[200, 100, 0], [0, 100, 0]], np.uint8)
    assert most_frequent_class_miou(conf3) == pytest.approx(0.75 / 2)
    # a single pixel in total is an image, not "nothing"
    assert most_frequent_class_miou(np.array([[1, 0]], np.int64)) == 1.0
    assert most_frequent_class_miou(np.zeros((2, 3), np.int64)) is None


def test_dense_per_image_is_float64_and_keeps_fractions() -> None:
    out = dense_per_image([[[1, 0.25, 2]], [[0, 1, 0.5]]], num_classes=2, width=2)
    assert out.dtype == np.float64
    expected = np.zeros((2, 2, 2))
    expected[0, 1] = [0.25, 2]
    expected[1, 0] = [1, 0.5]
    np.testing.assert_array_equal(out, expected)


def test_pq_from_sums_fractional_denominators_and_batches() -> None:
    # one class, weighted sums below one: PQ = 0.3 / (0.4 + 0.1/2 + 0.1/2) = 0.6
    assert float(pq_from_sums(np.array([[0.4, 0.1, 0.1, 0.3]]))) == pytest.approx(0.6)
    # no class counts: NaN, silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            nothing = pq_from_sums(np.zeros((2, 3, 4)))
    assert nothing.shape == (2,) and np.isnan(nothing).all()
    # exactly one class counts (n == 1): its PQ, 1.8 / (2 + 1/2 + 1/2) = 0.6; a batch of two
    s = np.zeros((2, 2, 4))
    s[0, 1] = [2, 1, 1, 1.8]
    s[1, 0] = [1, 0, 0, 0.9]
    s[1, 1] = [0, 2, 0, 0.0]
    np.testing.assert_allclose(pq_from_sums(s), [0.6, (0.9 + 0.0) / 2])


def test_pq_and_miou_from_sums_clip_to_the_unit_interval() -> None:
    # inconsistent sums (iou_sum > TP) would give PQ 1.5; the result is clipped to 1
    assert float(pq_from_sums(np.array([[1, 0, 0, 1.5]]))) == 1.0
    # iou_sum < 0 (impossible but negative weights) is clipped to 0
    assert float(pq_from_sums(np.array([[1, 0, 0, -0.5]]))) == 0.0
    # TP > GT + P - TP gives IoU 2 -> clipped to 1; negative TP -> clipped to 0
    assert float(miou_from_sums(np.array([[2, 1.5, 1.5]]))) == 1.0
    assert float(miou_from_sums(np.array([[-1, 1, 1]]))) == 0.0


def test_miou_from_sums_single_class_and_nothing() -> None:
    assert float(miou_from_sums(np.array([[1, 2, 2]]))) == pytest.approx(1 / 3)  # n == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            nothing = miou_from_sums(np.zeros((3, 2, 3)))
    assert nothing.shape == (3,) and np.isnan(nothing).all()


def _stats_two_images():
    """Image a: class 0 PQ 1 and IoU 1; image b: class 0 PQ 0 and IoU 0 (wrong everywhere)."""
    return {
        "num_classes": 1,
        "images": ["a", "b"],
        "panoptic": [[[0, 1, 0, 0, 1.0]], [[0, 0, 1, 1, 0.0]]],
        "semantic": [[[0, 4, 4, 4]], [[0, 0, 4, 4]]],
    }


def _plain_bootstrap(stats, resamples, seed, percentiles):
    """Plain-loop percentile bootstrap with the documented draw ``integers(0, n, size=(B, n))``."""
    n = len(stats["images"])
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    out = {}
    for key, rows_key in (("pq", "panoptic"), ("miou", "semantic")):
        values = []
        for draw in idx:
            sums: dict[int, list[float]] = {}
            for i in draw:
                for c, *v in stats[rows_key][i]:
                    t = sums.setdefault(int(c), [0.0] * len(v))
                    for k, x in enumerate(v):
                        t[k] += x
            if key == "pq":
                per = [iou / (tp + fp / 2 + fn / 2) for tp, fp, fn, iou in sums.values() if tp + fp + fn > 0]
            else:
                per = [tp / (gt + p - tp) for tp, gt, p in sums.values() if gt + p > 0]
            if per:
                values.append(sum(per) / len(per))
        out[key] = [float(v) for v in np.percentile(values, percentiles)] if values else None
    return out


def test_bootstrap_draws_every_image_and_matches_plain_loops() -> None:
    stats = _stats_two_images()
    got = bootstrap_ci(stats, resamples=200, seed=3)
    want = _plain_bootstrap(stats, 200, 3, (2.5, 97.5))
    assert got["pq"] == pytest.approx(want["pq"], abs=1e-12)
    assert got["miou"] == pytest.approx(want["miou"], abs=1e-12)
    # with two images of PQ 1 and 0, 200 resamples include both extremes (all-a and all-b draws)
    assert got["pq"] == [0.0, 1.0]


def test_bootstrap_single_resample_and_single_image() -> None:
    stats = _stats_two_images()
    one = bootstrap_ci(stats, resamples=1, seed=0)
    want = _plain_bootstrap(stats, 1, 0, (2.5, 97.5))
    assert one["pq"] == pytest.approx(want["pq"]) and one["miou"] == pytest.approx(want["miou"])
    single = {k: v[:1] if isinstance(v, list) else v for k, v in stats.items()}
    assert bootstrap_ci(single, resamples=10) == {"pq": [1.0, 1.0], "miou": [1.0, 1.0]}
    assert bootstrap_ci(stats, resamples=0) == {"pq": None, "miou": None}
    assert bootstrap_ci(stats, resamples=-1) == {"pq": None, "miou": None}


def test_bootstrap_level_bounds() -> None:
    stats = _stats_two_images()
    for bad in (0, 0.0, 1, 1.0, -0.1):
        with pytest.raises(ValueError, match="level"):
            bootstrap_ci(stats, level=bad)
    assert bootstrap_ci({"num_classes": 1}) == {"pq": None, "miou": None}  # no "images" key: no images


def test_bootstrap_percentiles_follow_the_level() -> None:
    # many images with graded PQ so that every percentile differs
    n = 7
    stats = {
        "num_classes": 1,
        "images": [str(i) for i in range(n)],
        "panoptic": [[[0, 1, 0, 0, i / (n - 1)]] for i in range(n)],
        "semantic": [[[0, i, n, n]] for i in range(n)],
    }
    for level in (0.5, 0.9):
        lo_q, hi_q = 50 * (1 - level), 50 * (1 + level)
        got = bootstrap_ci(stats, resamples=300, seed=11, level=level)
        want = _plain_bootstrap(stats, 300, 11, (lo_q, hi_q))
        assert got["pq"] == pytest.approx(want["pq"], abs=1e-12), level
        assert got["miou"] == pytest.approx(want["miou"], abs=1e-12), level


def test_bootstrap_skips_only_the_statistic_without_rows() -> None:
    stats = _stats_two_images()
    pq_only = {k: v for k, v in stats.items() if k != "semantic"}
    got = bootstrap_ci(pq_only, resamples=50, seed=1)
    assert got["miou"] is None and got["pq"] == pytest.approx(_plain_bootstrap(stats, 50, 1, (2.5, 97.5))["pq"])
    miou_only = {k: v for k, v in stats.items() if k != "panoptic"}
    got = bootstrap_ci(miou_only, resamples=50, seed=1)
    assert got["pq"] is None and got["miou"] == pytest.approx(_plain_bootstrap(stats, 50, 1, (2.5, 97.5))["miou"])
    # rows of the wrong length are skipped too, without affecting the other statistic
    short = dict(stats, panoptic=stats["panoptic"][:1])
    got = bootstrap_ci(short, resamples=50, seed=1)
    assert got["pq"] is None and got["miou"] is not None


def test_bootstrap_interval_is_clipped_to_the_unit_interval() -> None:
    # inconsistent per-image sums (PQ 1.5 and mIoU 2 per image) are clipped to 1 at both ends
    stats = {"num_classes": 1, "images": ["a", "b"], "panoptic": [[[0, 1, 0, 0, 1.5]]] * 2,
             "semantic": [[[0, 2, 1.5, 1.5]]] * 2}  # fmt: skip
    assert bootstrap_ci(stats, resamples=20) == {"pq": [1.0, 1.0], "miou": [1.0, 1.0]}


def test_bootstrap_interval_below_one_is_not_raised_to_one() -> None:
    # every image has PQ 0.5 (iou_sum 0.5 for one TP) and IoU 0.25 (1 / (2 + 3 - 1)): a point interval
    stats = {"num_classes": 1, "images": ["a", "b", "c"], "panoptic": [[[0, 1, 0, 0, 0.5]]] * 3,
             "semantic": [[[0, 1, 2, 3]]] * 3}  # fmt: skip
    got = bootstrap_ci(stats, resamples=30)
    assert got["pq"] == pytest.approx([0.5, 0.5]) and got["miou"] == pytest.approx([0.25, 0.25])
