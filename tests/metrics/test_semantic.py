"""SemanticConfusion: cross-check with cityscapesscripts' pixel-level evaluator, hand cases, merging."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segfusion.metrics import SemanticConfusion


def _semantic_pairs(mx, classes, seed: int, n: int = 10):
    out = []
    for gt, pred in mx.scene_set(seed=seed, classes=classes, n=n):
        out.append((gt.semantic, pred.semantic))
    return out


def test_miou_matches_cityscapes_pixel_level_evaluator(tmp_path, cs_classes, mx, monkeypatch):
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs

    for name, value in (
        ("evalInstLevelScore", False),
        ("evalPixelAccuracy", False),
        ("JSONOutput", False),
        ("quiet", True),
    ):
        monkeypatch.setattr(cs.args, name, value)
    rng = np.random.default_rng(0)
    pairs = _semantic_pairs(mx, cs_classes, seed=7, n=12)
    # a prediction containing classes absent from the ground truth, and an empty (all-ignore) GT
    pairs[4] = (
        pairs[4][0],
        np.where(pairs[4][1] == 255, 255, (pairs[4][1].astype(int) + 3) % 19).astype(np.uint8),
    )
    gt_files, pred_files = [], []
    m = SemanticConfusion(19, is_thing=cs_classes.is_thing)
    for k, (gt, pred) in enumerate(pairs):
        g, p = tmp_path / f"c_{k:03d}_gtFine_labelIds.png", tmp_path / f"c_{k:03d}_pred.png"
        mx.trainid_to_labelid_png(gt, cs_classes, g, rng)
        mx.trainid_to_labelid_png(pred, cs_classes, p, None)  # predicted void -> labelId 0
        gt_files.append(str(g))
        pred_files.append(str(p))
        m.update(gt, pred, image_id=f"c_{k:03d}")
    official = cs.evaluateImgLists(pred_files, gt_files, cs.args)
    ours = m.result()

    assert ours["miou"] == pytest.approx(official["averageScoreClasses"], abs=1e-9)
    for k, name in enumerate(cs_classes.names):
        off = official["classScores"][name]
        if np.isnan(off):
            assert ours["iou"][k] is None, name
        else:
            assert ours["iou"][k] == pytest.approx(off, abs=1e-9), name
    # pixel accuracy from the official confusion matrix (rows: non-ignored GT labelIds)
    conf = np.asarray(official["confMatrix"], dtype=np.int64)
    ids = list(cs_classes.ids)
    assert ours["pixel_acc"] == pytest.approx(np.trace(conf[np.ix_(ids, ids)]) / conf[ids].sum(), abs=1e-12)
    assert ours["n_pixels"] == conf[ids].sum()
    # the data must exercise ignore, void and excluded classes
    assert any((g == 255).any() for g, _ in pairs) and any((p == 255).any() for _, p in pairs)
    assert ours["iou"].count(None) < 19


def test_ground_truth_as_prediction_is_perfect(cs_classes, mx):
    m = SemanticConfusion(19, is_thing=cs_classes.is_thing)
    for k, (gt, _) in enumerate(_semantic_pairs(mx, cs_classes, seed=1, n=5)):
        m.update(gt, gt, image_id=k)
    r = m.result()
    assert r["miou"] == 1.0 and r["macc"] == 1.0 and r["pixel_acc"] == 1.0
    assert r["miou_things"] == 1.0 and r["miou_stuff"] == 1.0


def test_hand_case_void_prediction_and_excluded_class():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 255]], np.uint8)
    pred = np.array([[0, 255, 1, 2], [0, 1, 1, 2]], np.uint8)
    m = SemanticConfusion(4, is_thing=(False, False, True, True))
    m.update(gt, pred, image_id="a")
    r = m.result()
    # class 0: TP 2, FN 2 (one void, one predicted 1) -> 2/4
    # class 1: TP 2, FN 1 (predicted 2), FP 1 -> 2/4 ; class 2: TP 0, FP 1 (on valid GT), the
    # prediction on ignored GT does not count -> 0 ; class 3: absent from both -> excluded
    assert r["iou"] == [0.5, 0.5, 0.0, None]
    assert r["miou"] == pytest.approx(1 / 3)
    assert r["acc"] == [0.5, pytest.approx(2 / 3), None, None]
    assert r["macc"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert r["pixel_acc"] == pytest.approx(4 / 7)
    assert r["miou_things"] == 0.0 and r["miou_stuff"] == 0.5
    assert m.state()["per_image"] == [["a", pytest.approx(1 / 3)]]


def test_int64_inputs_equal_uint8_inputs(cs_classes, mx):
    a, b = SemanticConfusion(19), SemanticConfusion(19)
    for gt, pred in _semantic_pairs(mx, cs_classes, seed=4, n=4):
        a.update(gt, pred)
        b.update(gt.astype(np.int64), pred.astype(np.int32))
    assert np.array_equal(a.confusion, b.confusion)
    assert a.confusion.sum() > 0


def test_merge_of_shards_equals_whole(cs_classes, mx):
    pairs = _semantic_pairs(mx, cs_classes, seed=9, n=9)
    whole = SemanticConfusion(19, is_thing=cs_classes.is_thing)
    for k, (g, p) in enumerate(pairs):
        whole.update(g, p, image_id=k)
    merged = SemanticConfusion(19, is_thing=cs_classes.is_thing)
    for lo, hi in ((0, 2), (2, 7), (7, 9)):
        s = SemanticConfusion(19, is_thing=cs_classes.is_thing)
        for k in range(lo, hi):
            s.update(*pairs[k], image_id=k)
        merged.merge(SemanticConfusion.from_state(json.loads(json.dumps(s.state()))))
    assert merged.state() == whole.state()
    assert merged.result() == whole.result()
    with pytest.raises(ValueError, match="incompatible"):
        merged.merge(SemanticConfusion(18))


def test_size_mismatch_names_the_image():
    m = SemanticConfusion(3)
    with pytest.raises(ValueError, match=r"aachen_000000.*\(4, 6\).*\(4, 5\)"):
        m.update(np.zeros((4, 6), np.uint8), np.zeros((4, 5), np.uint8), image_id="aachen_000000")


def test_invalid_labels_are_reported():
    m = SemanticConfusion(3)
    with pytest.raises(ValueError, match=r"prediction in image 'x' has labels \[7\]"):
        m.update(np.zeros((2, 2), np.uint8), np.full((2, 2), 7, np.uint8), image_id="x")
    with pytest.raises(ValueError, match=r"ground truth.*\[-1\]"):
        m.update(np.full((2, 2), -1, np.int64), np.zeros((2, 2), np.int64))
    assert m.result()["n_images"] == 0 and m.result()["miou"] is None


@pytest.mark.parametrize("max_fraction", [0.0, 2.0])
def test_run_length_and_per_pixel_paths_count_exactly(monkeypatch, max_fraction):
    """Both counting paths (runs; per pixel for noisy maps) equal a naive pixel loop."""
    from segfusion.metrics import semantic

    monkeypatch.setattr(semantic, "RUNS_MAX_FRACTION", max_fraction)
    rng = np.random.default_rng(5)
    gt = np.repeat(rng.integers(0, 6, (12, 1)), 40, axis=1).astype(np.uint8)
    gt[2:5, 3:30] = 255
    pred = gt.copy()
    noise = rng.random(gt.shape) < 0.3
    pred[noise] = rng.choice(np.array([0, 1, 2, 3, 4, 5, 255], np.uint8), size=int(noise.sum()))
    m = SemanticConfusion(6)
    m.update(gt, pred)
    naive = np.zeros((6, 7), np.int64)
    for g, p in zip(gt.ravel().tolist(), pred.ravel().tolist(), strict=True):
        if g != 255:
            naive[g, 6 if p == 255 else p] += 1
    assert np.array_equal(m.confusion, naive)
    assert naive[:, 6].sum() > 0 and naive.trace() < naive.sum()
