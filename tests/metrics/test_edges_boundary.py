"""BoundaryAccuracy edge cases: boundary pixels, bin edges, validation messages, merge, state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segfusion.metrics import BoundaryAccuracy, SemanticConfusion
from segfusion.metrics.boundary import boundary_distance, boundary_mask


def _plain_boundary(gt):
    """A pixel is a boundary pixel when one of its 4 neighbours inside the image differs."""
    h, w = gt.shape
    out = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w and gt[yy, xx] != gt[y, x]:
                    out[y, x] = True
    return out


def test_boundary_mask_equals_a_plain_neighbour_scan():
    rng = np.random.default_rng(0)
    for shape in ((5, 7), (1, 6), (6, 1), (1, 1)):
        gt = np.kron(rng.integers(0, 3, size=shape), np.ones((1, 1), np.int64))
        assert np.array_equal(boundary_mask(gt), _plain_boundary(gt)), shape
    # a horizontal edge: rows 1 and 2 of a 4-row map are boundary pixels, all columns
    gt = np.zeros((4, 3), np.uint8)
    gt[2:] = 5
    assert boundary_mask(gt).tolist() == [[False] * 3, [True] * 3, [True] * 3, [False] * 3]
    # a single changed pixel in a corner: itself and its 2 in-image neighbours
    gt = np.zeros((3, 3), np.uint8)
    gt[0, 0] = 1
    assert np.flatnonzero(boundary_mask(gt)).tolist() == [0, 1, 3]
    gt = np.zeros((3, 3), np.uint8)
    gt[2, 2] = 1
    assert np.flatnonzero(boundary_mask(gt)).tolist() == [5, 7, 8]


def test_boundary_distance_by_hand():
    gt = np.zeros((1, 7), np.uint8)
    gt[0, 3:] = 1  # boundary pixels at x = 2 and 3
    assert boundary_distance(gt).tolist() == [[2.0, 1.0, 0.0, 0.0, 1.0, 2.0, 3.0]]
    d = boundary_distance(np.zeros((2, 3)))
    assert d.shape == (2, 3) and np.isinf(d).all()
    gt = np.zeros((4, 4), np.uint8)
    gt[0, 0] = 1  # boundary pixels (0, 0), (0, 1), (1, 0): (2, 2) is sqrt(4 + 1) from (0, 1), (3, 3) sqrt(9 + 4)
    assert boundary_distance(gt)[2, 2] == pytest.approx(np.sqrt(5)) and boundary_distance(gt)[3, 3] == pytest.approx(np.sqrt(13))


def test_bin_edges_are_half_open():
    # distances along the row: 2 1 0 0 1 2 3; bins [0, 1), [1, 2), [2, 3), [3, inf)
    gt = np.zeros((1, 7), np.uint8)
    gt[0, 3:] = 1
    m = BoundaryAccuracy(2, bins=(0, 1, 2, 3))
    m.update(gt, gt)
    r = m.result()
    assert [b["pixels"] for b in r["bins"]] == [2, 2, 2, 1]
    assert [(b["lo"], b["hi"]) for b in r["bins"]] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, None)]
    assert [(b["lo"], b["hi"]) for b in r["within"]] == [(0.0, 1.0), (0.0, 2.0), (0.0, 3.0), (0.0, None)]
    assert [b["pixels"] for b in r["within"]] == [2, 4, 6, 7]
    # a single bin holds everything
    one = BoundaryAccuracy(2, bins=(0,))
    one.update(gt, gt)
    assert [b["pixels"] for b in one.result()["bins"]] == [7] and one.result()["bins"][0]["hi"] is None


def test_entries_report_per_bin_scores():
    gt = np.zeros((1, 7), np.uint8)
    gt[0, 3:] = 1
    pred = gt.copy()
    pred[0, 2] = 1  # wrong at distance 0; x = 3 right
    m = BoundaryAccuracy(2, bins=(0, 1))
    m.update(gt, pred, image_id="e")
    r = m.result()
    b0 = r["bins"][0]
    # bin [0, 1): x = 2 (gt 0, pred 1) and x = 3 (gt 1, pred 1): IoU class 0 = 0/1, class 1 = 1/2
    assert b0["iou"] == [0.0, 0.5] and b0["miou"] == pytest.approx(0.25) and b0["macc"] == pytest.approx(0.5)
    assert r["bins"][1]["iou"] == [1.0, 1.0] and r["bins"][1]["pixels"] == 5
    # within everything: class 0: tp 2, gt 3, pred 2 -> 2/3; class 1: tp 4, gt 4, pred 5 -> 4/5
    assert r["within"][1]["iou"] == pytest.approx([2 / 3, 4 / 5])
    assert set(b0) == {"lo", "hi", "miou", "macc", "pixels", "iou"}
    assert set(r) == {"bins", "within", "n_images"} and r["n_images"] == 1
    sem = SemanticConfusion(2)
    sem.update(gt, pred)
    assert r["within"][-1]["macc"] == pytest.approx(sem.result()["macc"])


def test_constructor_validation_messages():
    msg = r"^BoundaryAccuracy: bins must start at 0 and increase strictly, got "
    for bins, shown in (((), r"\(\)"), ((1, 2), r"\(1, 2\)"), ((0, 5, 5), r"\(0, 5, 5\)"), ((0, 5, 3), r"\(0, 5, 3\)")):
        with pytest.raises(ValueError, match=msg + shown + "$"):
            BoundaryAccuracy(2, bins=bins)
    with pytest.raises(ValueError, match=r"^BoundaryAccuracy: at most 255 bins, got 256$"):
        BoundaryAccuracy(2, bins=range(256))
    m = BoundaryAccuracy(np.int64(3), bins=range(255), ignore_index=np.int64(254))
    assert m.confusion.shape == (255, 3, 4) and m.confusion.dtype == np.int64
    assert type(m.num_classes) is int and type(m.ignore_index) is int and m.ignore_index == 254
    assert m.bins[:3] == (0.0, 1.0, 2.0) and all(type(b) is float for b in m.bins) and m.n_images == 0
    d = BoundaryAccuracy(2)
    assert d.bins == (0.0, 10.0, 20.0, 50.0, 100.0, 200.0, 400.0) and d.ignore_index == 255


def test_many_bins_and_far_pixels():
    # 254 edges 0..253 and one far pixel: group indices up to 254 fit in uint8
    gt = np.zeros((1, 300), np.uint8)
    gt[0, 0] = 1  # boundary at x = 0, 1; pixel x is at distance x - 1
    m = BoundaryAccuracy(2, bins=range(255))
    m.update(gt, gt)
    pix = [b["pixels"] for b in m.result()["bins"]]
    # distance 0: x = 0, 1; distance d (1..253): x = d + 1; last bin [254, inf): x = 255..299
    assert pix[0] == 2 and pix[1:254] == [1] * 253 and pix[254] == 45


def test_ignore_index_and_errors_in_update():
    gt = np.array([[0, 0, 9, 1]], np.uint8)
    m = BoundaryAccuracy(2, bins=(0, 1), ignore_index=9)
    m.update(gt, np.array([[0, 1, 0, 1]], np.uint8))
    # the ignored pixel is a label of its own for the boundary, but not counted: 3 pixels
    assert m.result()["within"][-1]["pixels"] == 3 and m.result()["bins"][0]["pixels"] == 2
    with pytest.raises(ValueError, match=r"^BoundaryAccuracy: ground truth in image 'p' has labels \[5\]"):
        BoundaryAccuracy(2).update(np.array([[5, 0]], np.uint8), np.zeros((1, 2), np.uint8), image_id="p")
    with pytest.raises(ValueError, match=r"^BoundaryAccuracy: expected \(H, W\) maps"):
        BoundaryAccuracy(2).update(np.zeros(3, np.uint8), np.zeros(3, np.uint8))


def test_merge_and_state():
    gt = np.zeros((2, 9), np.uint8)
    gt[:, 4:] = 1
    a, b = BoundaryAccuracy(2, bins=(0, 2)), BoundaryAccuracy(2, bins=(0, 2))
    a.update(gt, gt)
    b.update(gt, 1 - gt)
    b.update(gt, gt)
    expected = a.confusion + b.confusion
    a.merge(b)
    assert np.array_equal(a.confusion, expected) and a.n_images == 3
    with pytest.raises(TypeError, match=r"^BoundaryAccuracy\.merge: cannot merge SemanticConfusion$"):
        a.merge(SemanticConfusion(2))
    msg = r"^BoundaryAccuracy\.merge: incompatible accumulators \(classes, ignore_index or bins differ\)$"
    for other in (BoundaryAccuracy(3, bins=(0, 2)), BoundaryAccuracy(2, bins=(0, 2), ignore_index=7), BoundaryAccuracy(2, bins=(0, 3))):
        with pytest.raises(ValueError, match=msg):
            a.merge(other)
    st = a.state()
    assert st == {"type": "BoundaryAccuracy", "version": 1, "num_classes": 2, "ignore_index": 255, "bins": [0.0, 2.0],
                  "confusion": expected.tolist(), "n_images": 3}  # fmt: skip
    back = BoundaryAccuracy.from_state(json.loads(json.dumps(st)))
    assert back.state() == st and back.result() == a.result() and type(back.n_images) is int
    floats = dict(st, confusion=(expected * 1.0).tolist(), n_images=3.0)
    assert json.dumps(BoundaryAccuracy.from_state(floats).state()) == json.dumps(st)
    c = BoundaryAccuracy(2, bins=(0, 2), ignore_index=7)
    assert BoundaryAccuracy.from_state(c.state()).ignore_index == 7
    with pytest.raises(ValueError, match=r"^BoundaryAccuracy\.from_state: confusion has shape \(1, 2, 3\), expected \(2, 2, 3\)$"):
        BoundaryAccuracy.from_state(dict(st, confusion=expected[:1].tolist()))
    with pytest.raises(ValueError, match=r"^BoundaryAccuracy\.from_state: unsupported state version 0$"):
        BoundaryAccuracy.from_state(dict(st, version=0))
