"""BoundaryAccuracy: boundary definition, distance bins, consistency with SemanticConfusion."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segfusion.metrics import BoundaryAccuracy, SemanticConfusion
from segfusion.metrics.boundary import boundary_distance, boundary_mask


def test_boundary_mask_is_both_sides_of_a_label_change():
    gt = np.zeros((3, 6), np.uint8)
    gt[:, 3:] = 1
    b = boundary_mask(gt)
    expected = np.zeros((3, 6), bool)
    expected[:, 2:4] = True
    assert np.array_equal(b, expected)
    # an isolated pixel: itself and its 4 neighbours, not the diagonals
    gt = np.zeros((3, 3), np.uint8)
    gt[1, 1] = 2
    assert boundary_mask(gt).sum() == 5 and not boundary_mask(gt)[0, 0]


def test_distance_bins_on_a_vertical_edge():
    w = 60
    gt = np.zeros((2, w), np.uint8)
    gt[:, 30:] = 1
    d = boundary_distance(gt)
    assert d[0, 29] == 0 and d[0, 30] == 0 and d[0, 0] == 29 and d[0, 59] == 29
    m = BoundaryAccuracy(2, bins=(0, 10, 20))
    m.update(gt, gt)
    r = m.result()
    # per row: distances 0..29 on each side -> 20 pixels per bin per row
    assert [b["pixels"] for b in r["bins"]] == [40, 40, 40]
    assert [b["hi"] for b in r["bins"]] == [10.0, 20.0, None]
    assert [b["pixels"] for b in r["within"]] == [40, 80, 2 * w]
    assert all(b["miou"] == 1.0 and b["macc"] == 1.0 for b in r["bins"])


def test_errors_near_the_boundary_only_hurt_the_first_bin():
    gt = np.zeros((4, 80), np.uint8)
    gt[:, 40:] = 1
    pred = gt.copy()
    pred[:, 36:40] = 1  # a 4-px boundary error
    m = BoundaryAccuracy(2, bins=(0, 10, 20))
    m.update(gt, pred, image_id="a")
    r = m.result()
    assert r["bins"][0]["miou"] < 1.0
    assert r["bins"][1]["miou"] == 1.0 and r["bins"][2]["miou"] == 1.0


def test_no_boundary_puts_everything_in_the_last_bin_and_ignore_is_excluded():
    gt = np.full((5, 7), 2, np.uint8)
    m = BoundaryAccuracy(3)
    m.update(gt, gt)
    r = m.result()
    assert r["bins"][-1]["pixels"] == 35 and sum(b["pixels"] for b in r["bins"][:-1]) == 0
    gt[0, :] = 255  # ignored pixels define a boundary but are not counted
    m = BoundaryAccuracy(3, bins=(0, 1, 2, 10))
    m.update(gt, np.zeros_like(gt))
    r = m.result()
    assert r["within"][-1]["pixels"] == 28
    # row 1 touches the ignore row (d = 0), row 2 is at d = 1, rows 3-4 at d = 2, 3
    assert [b["pixels"] for b in r["bins"]] == [7, 7, 14, 0]


def test_last_cumulative_bin_equals_semantic_confusion_and_merge(cs_classes, mx):
    scenes = mx.scene_set(seed=13, classes=cs_classes, n=6, h=64, w=96)
    whole = BoundaryAccuracy(19)
    sem = SemanticConfusion(19)
    for gt, pred in scenes:
        whole.update(gt.semantic, pred.semantic)
        sem.update(gt.semantic, pred.semantic)
    r = whole.result()
    assert r["within"][-1]["miou"] == pytest.approx(sem.result()["miou"], abs=1e-12)
    assert r["within"][-1]["iou"] == sem.result()["iou"]
    assert sum(b["pixels"] for b in r["bins"]) == sem.result()["n_pixels"]
    assert r["bins"][0]["pixels"] > 0 and r["bins"][1]["pixels"] > 0

    merged = BoundaryAccuracy(19)
    for lo, hi in ((0, 4), (4, 6)):
        s = BoundaryAccuracy(19)
        for gt, pred in scenes[lo:hi]:
            s.update(gt.semantic, pred.semantic)
        merged.merge(BoundaryAccuracy.from_state(json.loads(json.dumps(s.state()))))
    assert merged.state() == whole.state()


def test_size_mismatch_and_bad_bins():
    with pytest.raises(ValueError, match=r"img7.*\(3, 3\).*\(3, 4\)"):
        BoundaryAccuracy(2).update(np.zeros((3, 3), np.uint8), np.zeros((3, 4), np.uint8), image_id="img7")
    with pytest.raises(ValueError, match="bins"):
        BoundaryAccuracy(2, bins=(0, 10, 5))
