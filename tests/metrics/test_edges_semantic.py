"""SemanticConfusion and its helpers on hand-made maps: runs, codes, counts, scores, errors, state."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from segfusion.metrics import SemanticConfusion
from segfusion.metrics.semantic import (
    RUNS_MAX_FRACTION,
    _codes,
    _miou,
    _nanmean,
    check_same_size,
    check_state,
    confusion_counts,
    nan_to_none,
    paired_runs,
    scores_from_confusion,
)

# gt / pred of 2x3 with C = 3: (gt, pred) pixel pairs (0,0) (0,1) (1,1) / (255,2) (1,255) (2,2)
GT = np.array([[0, 0, 1], [255, 1, 2]], np.uint8)
PRED = np.array([[0, 1, 1], [2, 255, 2]], np.uint8)
# rows: GT class, columns: predicted class, last column predicted void; the ignored GT pixel is dropped
CM = np.array([[1, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]])


def _direct_counts(gt, pred, c, ignore=255, group=None, num_groups=1):
    """Plain per-pixel counting."""
    out = np.zeros((num_groups, c, c + 1), np.int64)
    g = np.zeros(gt.shape, np.int64) if group is None else group
    for (y, x), a in np.ndenumerate(gt):
        if a == ignore:
            continue
        b = pred[y, x]
        out[g[y, x], a, c if b == ignore else b] += 1
    return out


# --------------------------------------------------------------------------- size checks
def test_check_same_size_messages():
    a, b = np.zeros((2, 3)), np.zeros((2, 4))
    with pytest.raises(ValueError, match=r"^W: size mismatch in image 'i7': ground truth 2x3 \(shape \(2, 3\)\) vs prediction 2x4 \(shape \(2, 4\)\)$"):
        check_same_size(a, b, "i7", "W")
    with pytest.raises(ValueError, match=r"^W: size mismatch: ground truth 2x3"):
        check_same_size(a, b, None, "W")
    with pytest.raises(ValueError, match=r"^W: expected \(H, W\) maps in image 3, got ground truth \(2, 3, 1\) and prediction \(2, 3\)$"):
        check_same_size(np.zeros((2, 3, 1)), a, 3, "W")
    with pytest.raises(ValueError, match=r"^W: expected \(H, W\) maps, got ground truth \(2, 3\) and prediction \(6,\)$"):
        check_same_size(a, np.zeros(6), None, "W")
    check_same_size(a, a.copy(), None, "W")  # no error


# --------------------------------------------------------------------------- runs and codes
def test_paired_runs_by_hand():
    a = np.array([[1, 1, 2], [2, 2, 2]])
    b = np.array([[0, 0, 0], [0, 1, 1]])
    # tuples in raster order: (1,0) (1,0) (2,0) (2,0) (2,1) (2,1) -> three runs of 2
    va, vb, lengths = paired_runs(a, b, max_fraction=1.0)
    assert va.tolist() == [1, 2, 2] and vb.tolist() == [0, 0, 1] and lengths.tolist() == [2, 2, 2]
    assert lengths.dtype == np.int64
    # 2 changes among 6 pixels: more than 1/8 -> the flattened maps, lengths None
    fa, fb, none = paired_runs(a, b)
    assert none is None and fa.tolist() == a.ravel().tolist() and fb.tolist() == b.ravel().tolist()
    # exactly max_fraction * n changes still gives runs: 8 pixels, 1 change, 1/8
    c = np.array([[3, 3, 3, 3, 5, 5, 5, 5]])
    vc, lc = paired_runs(c)
    assert RUNS_MAX_FRACTION == 0.125 and vc.tolist() == [3, 5] and lc.tolist() == [4, 4]
    assert paired_runs(c, max_fraction=0.1)[1] is None
    # a single pixel and an empty map
    v1, l1 = paired_runs(np.array([[9]]))
    assert v1.tolist() == [9] and l1.tolist() == [1]
    e1, e2, le = paired_runs(np.zeros((0, 4), np.uint8), np.zeros((0, 4), np.int32))
    assert e1.size == 0 and e2.size == 0 and e1.dtype == np.uint8 and e2.dtype == np.int32
    assert le.dtype == np.int64 and le.shape == (0,)
    # runs start at a change of any of the maps (the second one here)
    v, w, ln = paired_runs(np.zeros((1, 8)), np.array([[0, 0, 0, 0, 0, 0, 0, 1]]))
    assert v.tolist() == [0, 0] and w.tolist() == [0, 1] and ln.tolist() == [7, 1]


def test_codes_lookup_table_and_integer_paths():
    # code = label in 0..C-1, C for ignore_index, C + 1 for anything else; times scale
    u8 = np.array([[0, 2, 255, 7]], np.uint8)
    assert _codes(u8, 3, 255, 5).tolist() == [0, 10, 15, 20]
    assert _codes(u8, 3, 255, 1).tolist() == [0, 2, 3, 4]
    assert _codes(u8, 3, 255, 2).tolist() == [0, 4, 6, 8]
    assert _codes(u8, 3, 7, 1).tolist() == [0, 2, 4, 3]  # another ignore label
    i32 = np.array([-1, 0, 2, 255, 3], np.int32)
    assert _codes(i32, 3, 255, 1).tolist() == [4, 0, 2, 3, 4]
    assert _codes(i32, 3, 255, 2).tolist() == [8, 0, 4, 6, 8]
    assert _codes(i32, 3, -1, 1).tolist() == [3, 0, 2, 4, 4]
    # an ignore_index outside 0..255 on uint8 maps: 255 is then an invalid label, not ignore
    assert _codes(np.array([255, 1], np.uint8), 3, -1, 1).tolist() == [4, 1]
    assert _codes(np.array([255, 1], np.uint8), 3, 256, 1).tolist() == [4, 1]
    assert _codes(np.array([0, 1], np.uint8), 3, 0, 1).tolist() == [3, 1]  # ignore_index 0 is in range
    assert _codes(u8, 3, 255, 5).dtype == np.int64 and _codes(i32, 3, 255, 1).dtype == np.int64


# --------------------------------------------------------------------------- counts
def test_confusion_counts_by_hand_with_and_without_groups():
    got = confusion_counts(GT, PRED, 3)
    assert got.shape == (1, 3, 4) and got.dtype == np.int64
    assert got[0].tolist() == CM.tolist()
    group = np.array([[0, 1, 1], [0, 0, 1]])
    # group 0: (0,0) and (1, void) (the ignored pixel dropped); group 1: (0,1) (1,1) (2,2)
    g = confusion_counts(GT, PRED, 3, group=group, num_groups=3)
    assert g[0].tolist() == [[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]]
    assert g[1].tolist() == [[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]
    assert not g[2].any() and g.shape == (3, 3, 4)
    # int32 maps with another ignore label
    gi, pi = GT.astype(np.int32), PRED.astype(np.int32)
    gi[GT == 255], pi[PRED == 255] = -1, -1
    assert confusion_counts(gi, pi, 3, ignore_index=-1)[0].tolist() == CM.tolist()


@pytest.mark.parametrize("smooth", [True, False])
def test_confusion_counts_equal_direct_counting(smooth):
    rng = np.random.default_rng(3 if smooth else 4)
    h, w, c = 30, 40, 5
    if smooth:  # run-length path
        gt = np.kron(rng.integers(0, c, size=(6, 8)), np.ones((5, 5), np.int64))
        pred = np.kron(rng.integers(0, c, size=(6, 8)), np.ones((5, 5), np.int64))
        gt[:5, :5] = 255
        pred[5:10, :5] = 255
    else:  # per-pixel path
        gt = rng.integers(0, c + 1, size=(h, w))
        pred = rng.integers(0, c + 1, size=(h, w))
        gt[gt == c], pred[pred == c] = 255, 255
    group = (np.arange(h)[:, None] // 10 + np.zeros((1, w), np.int64)).astype(np.int64)
    for dtype in (np.uint8, np.int32):
        got = confusion_counts(gt.astype(dtype), pred.astype(dtype), c, group=group, num_groups=3)
        assert np.array_equal(got, _direct_counts(gt, pred, c, group=group, num_groups=3))
        assert np.array_equal(confusion_counts(gt.astype(dtype), pred.astype(dtype), c), _direct_counts(gt, pred, c))


def test_confusion_counts_errors():
    with pytest.raises(ValueError, match=r"^W: group map \(2, 2\) differs from the label maps \(2, 3\)$"):
        confusion_counts(GT, PRED, 3, group=np.zeros((2, 2), np.int64), what="W")
    bad = GT.astype(np.int32)
    bad[0, 0], bad[0, 1] = 7, -2
    with pytest.raises(ValueError, match=r"^W: ground truth in image 'b' has labels \[-2, 7\] outside 0\.\.2 and ignore_index=255$"):
        confusion_counts(bad, PRED, 3, image_id="b", what="W")
    # a bad predicted label on an ignored ground-truth pixel is still reported
    badp = PRED.astype(np.int32)
    badp[1, 0] = 3
    with pytest.raises(ValueError, match=r"^SemanticConfusion: prediction has labels \[3\] outside 0\.\.2 and ignore_index=255$"):
        confusion_counts(GT, badp, 3)
    # at most 10 labels are listed
    many = np.arange(3, 15, dtype=np.int32).reshape(2, 6)
    with pytest.raises(ValueError, match=r"has labels \[3, 4, 5, 6, 7, 8, 9, 10, 11, 12\] outside"):
        confusion_counts(many, many, 3)
    with pytest.raises(ValueError, match=r"^W: size mismatch in image 'q'"):
        confusion_counts(GT, PRED[:, :2], 3, image_id="q", what="W")


# --------------------------------------------------------------------------- scores
def test_scores_from_confusion_by_hand():
    s = scores_from_confusion(CM)
    # tp (1, 1, 1); GT totals (2, 2, 1); predicted totals (1, 2, 1)
    # IoU: 1/(2+1-1) = 1/2, 1/(2+2-1) = 1/3, 1/(1+1-1) = 1; Acc: 1/2, 1/2, 1
    assert s["iou"].tolist() == pytest.approx([0.5, 1 / 3, 1.0])
    assert s["acc"].tolist() == pytest.approx([0.5, 0.5, 1.0])
    assert s["miou"] == pytest.approx((0.5 + 1 / 3 + 1) / 3) and s["macc"] == pytest.approx(2 / 3)
    assert s["pixel_acc"] == pytest.approx(3 / 5)
    # class 3 absent from both (IoU, Acc undefined); class 4 only predicted (IoU 0, Acc undefined)
    cm = np.zeros((5, 6), np.int64)
    cm[:3, :3] = CM[:, :3]
    cm[:3, 5] = CM[:, 3]
    cm[0, 4] = 2
    s = scores_from_confusion(cm)
    assert math.isnan(s["iou"][3]) and math.isnan(s["acc"][3]) and s["iou"][4] == 0.0 and math.isnan(s["acc"][4])
    # class 0: tp 1, GT total 4, predicted total 1 -> IoU 1/4, Acc 1/4
    assert s["iou"][0] == pytest.approx(0.25) and s["acc"][0] == pytest.approx(0.25)
    assert s["miou"] == pytest.approx((0.25 + 1 / 3 + 1 + 0) / 4) and s["macc"] == pytest.approx((0.25 + 0.5 + 1) / 3)
    assert s["pixel_acc"] == pytest.approx(3 / 7)
    one = scores_from_confusion(np.array([[1, 0]]))  # a single pixel, correct
    assert one["pixel_acc"] == 1.0 and one["miou"] == 1.0 and one["macc"] == 1.0
    # the matrix is read as int64 counts: fractional entries are truncated (1.5 -> 1, 0.5 -> 0)
    assert scores_from_confusion(np.array([[1.5, 0.5]]))["iou"].tolist() == [1.0]
    empty = scores_from_confusion(np.zeros((2, 3), np.int64))
    assert empty["miou"] is None and empty["macc"] is None and empty["pixel_acc"] is None
    assert _miou(CM) == pytest.approx((0.5 + 1 / 3 + 1) / 3) and _miou(np.zeros((2, 3), np.int64)) is None


def test_nanmean_and_nan_to_none():
    assert _nanmean(np.array([np.nan, 0.25, 0.75])) == 0.5 and _nanmean(np.array([np.nan])) is None
    assert _nanmean(np.array([])) is None
    assert _nanmean(np.array([2.0, 1.0])) == 1.0 and _nanmean(np.array([-1.0])) == 0.0
    assert type(_nanmean(np.array([0.5], np.float32))) is float
    f32 = np.array([0.1, 0.7, 0.3], np.float32)  # averaged in float64, not float32
    assert _nanmean(f32) == (float(f32[0]) + float(f32[1]) + float(f32[2])) / 3
    out = nan_to_none(np.array([np.nan, 0.5, 1.0], np.float32))
    assert out == [None, 0.5, 1.0] and type(out[1]) is float


def test_check_state_messages():
    with pytest.raises(ValueError, match=r"^K\.from_state: expected a dict, got list$"):
        check_state([], "K")
    with pytest.raises(ValueError, match=r"^K\.from_state: state has type 'J', expected 'K'$"):
        check_state({"type": "J", "version": 1}, "K")
    with pytest.raises(ValueError, match=r"^K\.from_state: state has type None, expected 'K'$"):
        check_state({"version": 1}, "K")
    with pytest.raises(ValueError, match=r"^K\.from_state: unsupported state version None$"):
        check_state({"type": "K"}, "K")
    with pytest.raises(ValueError, match=r"^K\.from_state: unsupported state version 2$"):
        check_state({"type": "K", "version": 2}, "K")
    check_state({"type": "K", "version": 1}, "K")


# --------------------------------------------------------------------------- accumulator
def test_constructor_checks_and_attributes():
    with pytest.raises(ValueError, match=r"^SemanticConfusion: num_classes must be >= 1, got 0$"):
        SemanticConfusion(0)
    for bad in (0, 2):
        with pytest.raises(ValueError, match=rf"^SemanticConfusion: ignore_index={bad} collides with a class index$"):
            SemanticConfusion(3, ignore_index=bad)
    with pytest.raises(ValueError, match=r"^SemanticConfusion: is_thing has 2 entries, num_classes=3$"):
        SemanticConfusion(3, is_thing=[True, False])
    one = SemanticConfusion(1)
    assert one.num_classes == 1 and one.confusion.shape == (1, 2) and one.confusion.dtype == np.int64
    m = SemanticConfusion(np.int64(3), ignore_index=np.int64(3), is_thing=[1, 0, 0])
    assert type(m.num_classes) is int and type(m.ignore_index) is int and m.ignore_index == 3
    assert m.is_thing == (True, False, False) and m.per_image == [] and not m.confusion.any()
    assert SemanticConfusion(3, ignore_index=-1).ignore_index == -1 and SemanticConfusion(3).is_thing is None
    assert SemanticConfusion(3).ignore_index == 255


def test_update_result_by_hand():
    m = SemanticConfusion(3, is_thing=[False, True, True])
    m.update(GT, PRED, image_id=4)
    m.update(GT[:1], GT[:1])  # row 0 of GT against itself: class 0 (2 px) and 1 (1 px) correct
    assert m.confusion.tolist() == (CM + [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]).tolist()
    assert m.per_image == [("4", pytest.approx((0.5 + 1 / 3 + 1) / 3)), (None, 1.0)]
    r = m.result()
    # totals: tp (3, 2, 1); GT (4, 3, 1); predicted (3, 3, 1) -> IoU 3/4, 2/4, 1; Acc 3/4, 2/3, 1
    assert r["iou"] == pytest.approx([0.75, 0.5, 1.0]) and r["acc"] == pytest.approx([0.75, 2 / 3, 1.0])
    assert r["miou"] == pytest.approx(2.25 / 3) and r["macc"] == pytest.approx((0.75 + 2 / 3 + 1) / 3)
    assert r["pixel_acc"] == pytest.approx(6 / 8)
    assert r["miou_things"] == pytest.approx(0.75) and r["miou_stuff"] == pytest.approx(0.75)
    assert (r["n_images"], r["n_pixels"]) == (2, 8)
    assert set(r) == {"miou", "macc", "pixel_acc", "iou", "acc", "n_images", "n_pixels", "miou_things", "miou_stuff"}
    plain = SemanticConfusion(3)
    plain.update(GT, PRED)
    assert "miou_things" not in plain.result() and "miou_stuff" not in plain.result()
    stuffy = SemanticConfusion(3, is_thing=[True, False, False])
    stuffy.update(GT, PRED)
    assert stuffy.result()["miou_things"] == pytest.approx(0.5) and stuffy.result()["miou_stuff"] == pytest.approx((1 / 3 + 1) / 2)
    assert SemanticConfusion(2).result()["miou"] is None and SemanticConfusion(2).result()["iou"] == [None, None]


def test_update_errors_name_the_accumulator():
    m = SemanticConfusion(3)
    with pytest.raises(ValueError, match=r"^SemanticConfusion: size mismatch in image 'z'"):
        m.update(GT, PRED[:, :2], image_id="z")
    with pytest.raises(ValueError, match=r"^SemanticConfusion: ground truth in image 'z' has labels \[7\]"):
        m.update(np.full((2, 2), 7, np.uint8), np.zeros((2, 2), np.uint8), image_id="z")
    m7 = SemanticConfusion(3, ignore_index=7)
    m7.update(np.full((2, 2), 7, np.uint8), np.zeros((2, 2), np.uint8))  # 7 is the ignore label here
    assert m7.confusion.sum() == 0 and m7.per_image == [(None, None)]


def test_merge_and_compatibility_messages():
    a, b = SemanticConfusion(3), SemanticConfusion(3)
    a.update(GT, PRED, image_id="a")
    b.update(GT, GT, image_id="b")
    st_b = b.state()
    a.merge(b)
    assert a.confusion.tolist() == (CM + confusion_counts(GT, GT, 3)[0]).tolist()
    assert [i for i, _ in a.per_image] == ["a", "b"] and b.state() == st_b
    with pytest.raises(TypeError, match=r"^SemanticConfusion\.merge: cannot merge int$"):
        a.merge(3)
    cases = [
        (SemanticConfusion(4), r"\(num_classes 3 vs 4, ignore_index 255 vs 255, is_thing differ: False\)"),
        (SemanticConfusion(3, ignore_index=254), r"\(num_classes 3 vs 3, ignore_index 255 vs 254, is_thing differ: False\)"),
        (SemanticConfusion(3, is_thing=[0, 1, 1]), r"\(num_classes 3 vs 3, ignore_index 255 vs 255, is_thing differ: True\)"),
    ]
    for other, detail in cases:
        with pytest.raises(ValueError, match=rf"^SemanticConfusion\.merge: incompatible accumulators {detail}$"):
            a.merge(other)


def test_state_contents_round_trip_and_errors():
    m = SemanticConfusion(3, ignore_index=254, is_thing=[False, True, True])
    m.update(np.where(GT == 255, 254, GT), np.where(PRED == 255, 254, PRED), image_id="x")
    st = m.state()
    assert st == {
        "type": "SemanticConfusion",
        "version": 1,
        "num_classes": 3,
        "ignore_index": 254,
        "is_thing": [False, True, True],
        "confusion": CM.tolist(),
        "per_image": [["x", pytest.approx((0.5 + 1 / 3 + 1) / 3)]],
    }
    back = SemanticConfusion.from_state(json.loads(json.dumps(st)))
    assert back.state() == st and back.result() == m.result() and back.per_image == m.per_image
    assert back.ignore_index == 254 and back.is_thing == (False, True, True) and back.confusion.dtype == np.int64
    floats = dict(st, confusion=[[float(v) for v in row] for row in st["confusion"]])
    assert json.dumps(SemanticConfusion.from_state(floats).state()) == json.dumps(st)
    assert SemanticConfusion.from_state(floats).confusion.dtype == np.int64
    assert SemanticConfusion(2).state()["is_thing"] is None
    assert SemanticConfusion.from_state(SemanticConfusion(2).state()).is_thing is None
    with pytest.raises(ValueError, match=r"^SemanticConfusion\.from_state: confusion has shape \(3, 3\), expected \(3, 4\)$"):
        SemanticConfusion.from_state(dict(st, confusion=CM[:, :3].tolist()))
    with pytest.raises(ValueError, match=r"^SemanticConfusion\.from_state: state has type 'PanopticQuality'"):
        SemanticConfusion.from_state(dict(st, type="PanopticQuality"))
