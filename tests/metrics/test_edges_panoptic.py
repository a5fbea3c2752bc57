"""PanopticQuality edge cases: a plain per-segment reference, both relabelling paths, errors, state.

The reference below is written directly from the rules of the module docstring (one boolean
mask per segment, IoU > 0.5 as a float comparison), independent of the run-length /
bincount implementation.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from segfusion.metrics import InstanceAP, PanopticQuality
from segfusion.metrics.panoptic import _clip01, _mean, _relabel, image_panoptic_stats
from segfusion.types import ClassInfo, Panoptic, Segment

TOY = ClassInfo(
    names=("road", "sky", "car", "person"),
    is_thing=(False, False, True, True),
    category=("flat", "sky", "vehicle", "human"),
    ids=(7, 23, 26, 24),
    colors=((0, 0, 0),) * 4,
)
ROAD, SKY, CAR, PERSON = 0, 1, 2, 3


def pan(seg, info: dict[int, tuple[int, bool]], scores: dict[int, float] | None = None) -> Panoptic:
    scores = scores or {}
    return Panoptic.from_segment_map(
        np.asarray(seg, np.int32),
        {k: (c, TOY.is_thing[c], crowd, scores.get(k, 1.0)) for k, (c, crowd) in info.items()},
    )


# --------------------------------------------------------------------------- plain reference
def reference_image(gt: Panoptic, pred: Panoptic, classes: ClassInfo) -> dict:
    """Per-class tp / fp / fn / IoU sum and PQ-dagger pairs of one image, segment by segment."""
    c = classes.num_classes
    out = {"tp": [0] * c, "fp": [0] * c, "fn": [0] * c, "iou": [0.0] * c, "dagger": [[] for _ in range(c)]}
    void = gt.segment_ids == 0
    g_masks = {g.id: gt.segment_ids == g.id for g in gt.segments}
    p_masks = {p.id: pred.segment_ids == p.id for p in pred.segments}
    matched_g, matched_p = set(), set()
    for g in gt.segments:
        for p in pred.segments:
            if g.class_index != p.class_index or g.iscrowd:
                continue
            gm, pm = g_masks[g.id], p_masks[p.id]
            inter = int((gm & pm).sum())
            union = int(gm.sum()) + int(pm.sum()) - inter - int((pm & void).sum())
            iou = inter / union
            if iou > 0.5:
                out["tp"][g.class_index] += 1
                out["iou"][g.class_index] += iou
                matched_g.add(g.id)
                matched_p.add(p.id)
            if not classes.is_thing[g.class_index] and inter > 0:
                out["dagger"][g.class_index].append(iou)
    for g in gt.segments:
        if not g.iscrowd and g.id not in matched_g:
            out["fn"][g.class_index] += 1
    for p in pred.segments:
        if p.id in matched_p:
            continue
        crowd = [g for g in gt.segments if g.iscrowd and g.class_index == p.class_index]
        pm = p_masks[p.id]
        ignored = int((pm & void).sum())
        if crowd:  # only the last crowd segment of the class listed counts
            ignored += int((pm & g_masks[crowd[-1].id]).sum())
        if not ignored / int(pm.sum()) > 0.5:
            out["fp"][p.class_index] += 1
    return out


def reference_result(pairs, classes: ClassInfo) -> dict:
    c = classes.num_classes
    tot = {"tp": [0] * c, "fp": [0] * c, "fn": [0] * c, "iou": [0.0] * c, "dagger": [[] for _ in range(c)]}
    per_image = []
    for gt, pred in pairs:
        r = reference_image(gt, pred, classes)
        img = []
        for k in range(c):
            for key in ("tp", "fp", "fn", "iou"):
                tot[key][k] += r[key][k]
            tot["dagger"][k] += r["dagger"][k]
            d = r["tp"][k] + r["fp"][k] / 2 + r["fn"][k] / 2
            if d > 0:
                img.append(r["iou"][k] / d)
        per_image.append(sum(img) / len(img) if img else None)
    per_class, groups, daggers = {}, {g: {"pq": [], "sq": [], "rq": []} for g in ("", "_things", "_stuff")}, []
    for k, name in enumerate(classes.names):
        tp, fp, fn, s = tot["tp"][k], tot["fp"][k], tot["fn"][k], tot["iou"][k]
        e = {"pq": None, "sq": None, "rq": None, "pq_dagger": None, "tp": tp, "fp": fp, "fn": fn, "iou_sum": s}
        if tp + fp + fn:
            d = tp + fp / 2 + fn / 2
            e.update(pq=s / d, sq=s / tp if tp else 0.0, rq=tp / d)
            for g in ("", "_things" if classes.is_thing[k] else "_stuff"):
                for key in ("pq", "sq", "rq"):
                    groups[g][key].append(e[key])
        if classes.is_thing[k]:
            e["pq_dagger"] = e["pq"]
        elif tot["dagger"][k]:
            e["pq_dagger"] = sum(tot["dagger"][k]) / len(tot["dagger"][k])
        elif tp + fp + fn:
            e["pq_dagger"] = 0.0
        if e["pq_dagger"] is not None:
            daggers.append(e["pq_dagger"])
        per_class[name] = e
    out = {key + g: (sum(v) / len(v) if v else None) for g, d in groups.items() for key, v in d.items()}
    out.update(pq_dagger=sum(daggers) / len(daggers) if daggers else None, per_class=per_class)
    return out, per_image, tot


def assert_close(ours, ref, tol=1e-12):
    if isinstance(ref, dict):
        assert set(ours) == set(ref) | ({"n_images"} if "n_images" in ours else set())
        for k, v in ref.items():
            assert_close(ours[k], v, tol)
    elif ref is None:
        assert ours is None
    elif isinstance(ref, int):
        assert ours == ref
    else:
        assert ours == pytest.approx(ref, abs=tol)


def check_against_reference(pairs, classes, tol=1e-12):
    m = PanopticQuality(classes)
    for k, (gt, pred) in enumerate(pairs):
        m.update(gt, pred, image_id=k)
    ours = m.result()
    ref, per_image, tot = reference_result(pairs, classes)
    assert ours["n_images"] == len(pairs)
    assert_close(ours, ref, tol)
    assert [i for i, _ in m.per_image] == [str(k) for k in range(len(pairs))]
    for (_, v), r in zip(m.per_image, per_image, strict=True):
        assert (v is None) if r is None else v == pytest.approx(r, abs=tol)
    assert m.dagger_n.tolist() == [len(d) for d in tot["dagger"]]
    return ours, tot


def test_random_scenes_equal_the_plain_reference(cs_classes, mx):
    pairs = mx.scene_set(seed=41, classes=cs_classes, n=10, h=40, w=64)
    ours, tot = check_against_reference(pairs, cs_classes)
    assert sum(tot["tp"]) > 10 and sum(tot["fp"]) > 3 and sum(tot["fn"]) > 3
    assert ours["pq_things"] is not None and ours["pq_stuff"] is not None


def _noisy_pair(rng, h, w, ids, crowd_id=None, void_frac=0.1, flip=0.3):
    """Blocky maps with a fraction of pixels scrambled: more runs than 1/8 of the pixels, so
    paired_runs falls back to the per-pixel path."""
    ids = list(ids)
    blocks = rng.choice(ids, size=(h // 8 + 1, w // 8 + 1))
    gt = np.kron(blocks, np.ones((8, 8), np.int64))[:h, :w]
    noise = rng.random((h, w))
    gt = np.where(noise < flip, rng.choice(ids, size=(h, w)), gt)
    gt = np.where(rng.random((h, w)) < void_frac, 0, gt)
    pred = np.where(rng.random((h, w)) < 0.15, rng.choice(ids, size=(h, w)), gt)
    pred = np.where(rng.random((h, w)) < void_frac, 0, pred)
    return gt, pred


@pytest.mark.parametrize(
    "ids",
    [
        (3, 9, 40, 77, 120),  # small ids: the lookup table of _relabel
        (3, 9, 40, 1 << 24, (1 << 24) + 5),  # ids >= 2^24: searchsorted (kept small: a table would have 2^24 entries)
        # a negative id: searchsorted (a lookup table would put id -1 in the slot of the largest id, 120)
        (-1, 9, 40, 77, 120),
    ],
)
def test_per_pixel_path_on_large_noisy_maps_equals_the_reference(ids):
    rng = np.random.default_rng(abs(ids[0]) + len(str(ids[-1])))
    h, w = 200, 330  # 66000 pixels > 65536
    cls = {ids[0]: ROAD, ids[1]: SKY, ids[2]: CAR, ids[3]: CAR, ids[4]: PERSON}
    pairs = []
    for crowd in (False, True):
        g, p = _noisy_pair(rng, h, w, ids)
        gt = pan(g, {i: (cls[i], crowd and cls[i] == CAR and i == ids[3]) for i in ids})
        pred = pan(p, {i: (cls[i], False) for i in ids})
        pairs.append((gt, pred))
    ours, tot = check_against_reference(pairs, TOY)
    assert sum(tot["tp"]) >= 4 and ours["pq"] > 0.3
    # the run-length path on a smooth copy of the same ids agrees with the reference too
    g = np.kron(rng.choice(ids, size=(25, 42)), np.ones((8, 8), np.int64))[:h, :w]
    smooth = pan(g, {i: (cls[i], False) for i in ids})
    check_against_reference([(smooth, pairs[0][1]), (pairs[1][0], smooth)], TOY)


def test_large_noisy_maps_unknown_ids_and_empty_prediction():
    rng = np.random.default_rng(8)
    ids = (3, 9, 40, 77, 120)
    cls = {3: ROAD, 9: SKY, 40: CAR, 77: CAR, 120: PERSON}
    g, p = _noisy_pair(rng, 200, 330, ids)
    gt = pan(g, {i: (cls[i], False) for i in ids})
    # all-void prediction (no segment at all): every ground-truth segment is a FN
    s = image_panoptic_stats(gt, pan(np.zeros_like(p), {}), TOY)
    assert s["fn"].tolist() == [1, 1, 2, 1] and not s["tp"].any() and not s["fp"].any()
    # an id in the map without segment info, on the per-pixel path (> 65536 pixels)
    p[5, 7] = 500
    pred = Panoptic(segment_ids=p, segments=pan(np.where(p == 500, 0, p), {i: (cls[i], False) for i in ids}).segments)
    with pytest.raises(ValueError, match=r"^PanopticQuality: predicted segment ids \[500\] in image 'n' are in the id map but have no segment info$"):
        image_panoptic_stats(gt, pred, TOY, image_id="n")
    with pytest.raises(ValueError, match=r"^PanopticQuality: ground-truth segment ids \[500\] are in the id map"):
        image_panoptic_stats(pred, gt, TOY)
    # the same with no listed segment at all on the other side
    lone = Panoptic(segment_ids=np.where(rng.random((200, 330)) < 0.5, 0, 6).astype(np.int32))
    with pytest.raises(ValueError, match=r"predicted segment ids \[6\] .* no segment info$"):
        image_panoptic_stats(gt, lone, TOY)


def test_relabel_both_paths_by_hand():
    ids = np.array([30, 5, 12], np.int64)
    # 0 -> 0 (void), listed ids -> 1..K in list order, anything else -> K + 1 = 4
    small = np.array([0, 5, 12, 30, 7, 31, 4])
    assert _relabel(small, ids).tolist() == [0, 2, 3, 1, 4, 4, 4]
    big = np.tile(small, 10000)  # 70000 values: lookup-table path
    assert _relabel(big, ids).tolist() == [0, 2, 3, 1, 4, 4, 4] * 10000
    big_ids = np.array([30, 5, 1 << 24], np.int64)
    big2 = np.tile(np.array([0, 5, 1 << 24, 30, 7]), 14000)
    assert _relabel(big2, big_ids).tolist() == [0, 2, 3, 1, 4] * 14000
    assert _relabel(np.array([0, 3, 0]), np.zeros(0, np.int64)).tolist() == [0, 1, 0]
    assert _relabel(np.tile([0, 3], 40000), np.zeros(0, np.int64)).tolist() == [0, 1] * 40000
    assert _relabel(np.tile([9, 3], 40000), np.array([9], np.int64)).tolist() == [1, 2] * 40000


# --------------------------------------------------------------------------- hand cases
def test_pq_dagger_leaves_out_non_overlapping_pairs():
    # GT: sky on the left half (16 px), road on the right. Prediction: sky exactly on the left
    # half (segment 1) and a second sky segment in the right half (segment 3, no overlap with
    # the GT sky). Pairs with IoU > 0: only (sky, 1), IoU 1 -> PQ-dagger(sky) = 1.
    gt = np.full((4, 8), 2)
    gt[:, :4] = 1
    pred = np.full((4, 8), 2)
    pred[:, :4] = 1
    pred[0, 6:] = 3
    m = PanopticQuality(TOY)
    m.update(pan(gt, {1: (SKY, False), 2: (ROAD, False)}), pan(pred, {1: (SKY, False), 2: (ROAD, False), 3: (SKY, False)}))
    r = m.result()
    assert r["per_class"]["sky"]["pq_dagger"] == 1.0 and m.dagger_n.tolist() == [1, 1, 0, 0]
    # sky: TP 1 (IoU 1), FP 1 -> PQ = 1 / 1.5; road: GT 16, pred 14 inside it -> IoU 14/16
    assert r["per_class"]["sky"]["pq"] == pytest.approx(2 / 3)
    assert r["per_class"]["road"]["pq_dagger"] == pytest.approx(14 / 16)
    assert r["pq_dagger"] == pytest.approx((1 + 14 / 16) / 2)


def test_pq_dagger_of_a_stuff_class_with_a_single_fp_is_zero():
    # GT: road everywhere (32 px). Prediction: road but a 2-px sky patch. Sky: one FP, no pair
    # -> counted by PQ (TP + FP + FN = 1), so PQ-dagger(sky) = 0 rather than excluded
    gt = np.ones((4, 8))
    pred = np.ones((4, 8))
    pred[0, :2] = 2
    m = PanopticQuality(TOY)
    m.update(pan(gt, {1: (ROAD, False)}), pan(pred, {1: (ROAD, False), 2: (SKY, False)}))
    r = m.result()
    assert (r["per_class"]["sky"]["fp"], r["per_class"]["sky"]["pq_dagger"], r["per_class"]["sky"]["pq"]) == (1, 0.0, 0.0)
    # road: IoU 30/32 for PQ and PQ-dagger; PQ-dagger = mean(30/32, 0)
    assert r["per_class"]["road"]["pq_dagger"] == pytest.approx(30 / 32)
    assert r["pq_dagger"] == pytest.approx(30 / 64) and r["pq"] == pytest.approx(30 / 64)


def test_crowd_ground_truth_never_pairs_for_pq_dagger_and_last_crowd_counts():
    # a crowd road GT segment overlapping a road prediction: no TP, no FN, no dagger pair
    gt = np.full((4, 8), 1)
    pred = np.full((4, 8), 5)
    m = PanopticQuality(TOY)
    m.update(pan(gt, {1: (ROAD, True)}), pan(pred, {5: (ROAD, False)}))
    r = m.result()
    road = r["per_class"]["road"]
    # the prediction lies entirely on the crowd region of its class: not a FP either
    assert (road["tp"], road["fp"], road["fn"]) == (0, 0, 0) and m.dagger_n[ROAD] == 0
    assert road["pq"] is None and road["pq_dagger"] is None and r["pq_dagger"] is None
    # two car crowd segments: the prediction on the first one listed is a FP, on the last one not
    gt = np.zeros((4, 8), np.int64)
    gt[:, :4], gt[:, 4:] = 1, 2
    for pred_cols, fp in ((slice(0, 4), 1), (slice(4, 8), 0)):
        pred = np.zeros((4, 8), np.int64)
        pred[:, pred_cols] = 9
        m = PanopticQuality(TOY)
        m.update(pan(gt, {1: (CAR, True), 2: (CAR, True)}), pan(pred, {9: (CAR, False)}))
        assert m.result()["per_class"]["car"]["fp"] == fp


def test_unmatched_prediction_half_on_void_plus_crowd_is_a_fp():
    # person prediction of 8 px: 3 on void, 1 on a person crowd, 4 on road: 4 ignored = half -> FP;
    # moving one road pixel onto void gives 5 > 4 -> not a FP
    gt = np.full((4, 8), 1)
    gt[0, 0:3] = 0
    gt[0, 3] = 2
    pred = np.full((4, 8), 1)
    pred[0, :] = 7
    info_gt = {1: (ROAD, False), 2: (PERSON, True)}
    m = PanopticQuality(TOY)
    m.update(pan(gt, info_gt), pan(pred, {1: (ROAD, False), 7: (PERSON, False)}))
    assert m.result()["per_class"]["person"]["fp"] == 1
    gt[0, 4] = 0
    m = PanopticQuality(TOY)
    m.update(pan(gt, info_gt), pan(pred, {1: (ROAD, False), 7: (PERSON, False)}))
    assert m.result()["per_class"]["person"]["fp"] == 0


def test_sq_of_a_class_without_tp_is_zero_and_groups():
    # car: one FN only -> PQ = SQ = RQ = 0 (SQ 0, not None); sky: perfect; person, road absent
    gt = np.full((4, 8), 1)
    gt[0, 0:2] = 2
    pred = np.full((4, 8), 1)
    m = PanopticQuality(TOY)
    m.update(pan(gt, {1: (SKY, False), 2: (CAR, False)}), pan(pred, {1: (SKY, False)}))
    r = m.result()
    car = r["per_class"]["car"]
    assert (car["pq"], car["sq"], car["rq"], car["pq_dagger"]) == (0.0, 0.0, 0.0, 0.0)
    assert r["per_class"]["person"] == {"pq": None, "sq": None, "rq": None, "pq_dagger": None, "tp": 0, "fp": 0, "fn": 0, "iou_sum": 0.0}
    # sky: GT 30 px, pred 32 px -> IoU 30/32
    sky_iou = 30 / 32
    assert r["per_class"]["sky"]["pq"] == pytest.approx(sky_iou) and r["per_class"]["sky"]["rq"] == 1.0
    assert r["pq_things"] == 0.0 and r["sq_things"] == 0.0 and r["rq_things"] == 0.0
    assert r["pq_stuff"] == pytest.approx(sky_iou) and r["sq_stuff"] == pytest.approx(sky_iou) and r["rq_stuff"] == 1.0
    assert r["pq"] == pytest.approx(sky_iou / 2) and r["sq"] == pytest.approx(sky_iou / 2) and r["rq"] == 0.5
    assert r["pq_dagger"] == pytest.approx(sky_iou / 2)
    assert r["n_images"] == 1
    assert set(r) == {"pq", "sq", "rq", "pq_things", "sq_things", "rq_things", "pq_stuff", "sq_stuff", "rq_stuff",
                      "pq_dagger", "per_class", "n_images"}  # fmt: skip
    # per-image PQ: mean over the classes present in the image (sky IoU, car 0)
    assert m.per_image == [(None, pytest.approx(sky_iou / 2))]


def test_per_image_pq_with_tp_and_fn_of_one_class():
    # two GT cars, one predicted exactly (IoU 1), one missed; road predicted exactly where it is
    # in both maps' road: car PQ = 1 / (1 + 0/2 + 1/2) = 2/3, road PQ = IoU(road) / 1
    gt = np.full((4, 8), 1)
    gt[0, 0:2] = 2
    gt[3, 6:8] = 3
    pred = np.full((4, 8), 1)
    pred[0, 0:2] = 2
    m = PanopticQuality(TOY)
    m.update(pan(gt, {1: (ROAD, False), 2: (CAR, False), 3: (CAR, False)}), pan(pred, {1: (ROAD, False), 2: (CAR, False)}), image_id="t")
    road_iou = 28 / 30  # GT road 28 px, predicted road 30 px containing it
    assert m.per_image == [("t", pytest.approx((2 / 3 + road_iou) / 2))]


def test_per_image_pq_is_none_without_segments():
    m = PanopticQuality(TOY)
    empty = pan(np.zeros((2, 3)), {})
    m.update(empty, empty, image_id=17)
    assert m.per_image == [("17", None)]
    assert m.result()["pq"] is None and m.result()["n_images"] == 1


def test_iou_sums_are_floored_fixed_point():
    # car: GT 2 px inside a 3-px prediction -> IoU 2/3 (a match); road: GT 6 px, prediction
    # 5 px inside it -> IoU 5/6. Sums are floor(inter * 2^64 / union), exactly (not via a float)
    gt = np.array([[1, 1, 1, 1, 1, 1, 2, 2, 0]])
    pred = np.array([[1, 1, 1, 1, 1, 2, 2, 2, 0]])
    m = PanopticQuality(TOY)
    m.update(pan(gt, {1: (ROAD, False), 2: (CAR, False)}), pan(pred, {1: (ROAD, False), 2: (CAR, False)}))
    assert m.iou_q[CAR] == (2 << 64) // 3 and m.iou_q[ROAD] == (5 << 64) // 6
    assert m.dagger_q[ROAD] == (5 << 64) // 6 and m.dagger_q[CAR] == 0 and m.dagger_n.tolist() == [1, 0, 0, 0]
    assert all(type(v) is int for v in m.iou_q + m.dagger_q)
    assert m.state()["iou_sum_q64"] == [(5 << 64) // 6, 0, (2 << 64) // 3, 0]
    r = m.result()
    assert r["per_class"]["car"]["iou_sum"] == pytest.approx(2 / 3, abs=1e-15)
    assert r["per_class"]["road"]["pq_dagger"] == pytest.approx(5 / 6, abs=1e-15)


def test_clip_and_mean_helpers():
    assert [_clip01(v) for v in (-0.5, 0.0, 0.25, 1.0, 1.5)] == [0.0, 0.0, 0.25, 1.0, 1.0]
    assert type(_clip01(1)) is float
    assert _mean([]) is None and _mean([0.25, 0.75, 0.5]) == 0.5 and _mean([2.0, 2.0]) == 1.0


# --------------------------------------------------------------------------- errors
def test_class_index_errors_name_the_first_bad_segment():
    seg = np.array([[1, 2, 3]])
    good = pan(seg, {1: (ROAD, False), 2: (SKY, False), 3: (CAR, False)})
    bad = Panoptic(segment_ids=seg, segments=(
        Segment(1, ROAD, False, 1, (0, 0, 1, 1)), Segment(2, 4, False, 1, (1, 0, 1, 1)), Segment(3, -1, True, 1, (2, 0, 1, 1))))  # fmt: skip
    msg = r"^PanopticQuality: predicted segment 2 in image 'a' has class index 4 outside the 4 classes 0\.\.3$"
    with pytest.raises(ValueError, match=msg):
        image_panoptic_stats(good, bad, TOY, image_id="a")
    neg = Panoptic(segment_ids=seg, segments=(Segment(1, ROAD, False, 1, (0, 0, 1, 1)), Segment(2, SKY, False, 1, (1, 0, 1, 1)), Segment(3, -1, True, 1, (2, 0, 1, 1))))  # fmt: skip
    with pytest.raises(ValueError, match=r"^PanopticQuality: ground-truth segment 3 has class index -1 outside the 4 classes 0\.\.3$"):
        image_panoptic_stats(neg, good, TOY)
    with pytest.raises(ValueError, match=r"^PanopticQuality: ground-truth segment 3 in image 'n' has class index -1 outside"):
        image_panoptic_stats(neg, good, TOY, image_id="n")
    # the last class index is valid
    top = pan(seg, {1: (ROAD, False), 2: (SKY, False), 3: (PERSON, False)})
    assert image_panoptic_stats(top, top, TOY)["tp"].tolist() == [1, 1, 0, 1]


def test_unknown_ids_are_listed_sorted_first_ten_without_void():
    seg = np.zeros((3, 8), np.int64)
    seg[1] = np.arange(20, 28)
    seg[2, :4] = [31, 30, 5, 5]
    seg[0, 0] = 1
    listed = pan(np.where(seg == 1, 1, 0), {1: (ROAD, False)})
    with_map = Panoptic(segment_ids=seg, segments=listed.segments)
    # unknown: 5, 20..27, 30, 31 (11 ids); reported sorted, the first 10, void (0) not among them
    ids = "5, 20, 21, 22, 23, 24, 25, 26, 27, 30"
    with pytest.raises(ValueError, match=rf"^PanopticQuality: ground-truth segment ids \[{ids}\] in image 'u' are in the id map but have no segment info$"):
        image_panoptic_stats(with_map, listed, TOY, image_id="u")
    with pytest.raises(ValueError, match=rf"^PanopticQuality: predicted segment ids \[{ids}\] are in the id map but have no segment info$"):
        image_panoptic_stats(listed, with_map, TOY)


def test_listed_segments_without_pixels_are_errors():
    seg = np.array([[1, 1, 0]])
    base = pan(seg, {1: (ROAD, False)})
    ghosts = tuple(Segment(i, CAR, True, 0, (0, 0, 0, 0)) for i in range(40, 52))
    ghostly = Panoptic(segment_ids=seg, segments=base.segments + ghosts)
    first10 = ", ".join(str(i) for i in range(40, 50))
    with pytest.raises(ValueError, match=rf"^PanopticQuality: ground-truth segments \[{first10}\] in image 'g' are listed but have no pixels$"):
        image_panoptic_stats(ghostly, base, TOY, image_id="g")
    with pytest.raises(ValueError, match=rf"^PanopticQuality: predicted segments \[{first10}\] are listed but have no pixels$"):
        image_panoptic_stats(base, ghostly, TOY)


def test_size_mismatch_message():
    a, b = pan(np.ones((2, 3)), {1: (ROAD, False)}), pan(np.ones((2, 4)), {1: (ROAD, False)})
    with pytest.raises(ValueError, match=r"^PanopticQuality: size mismatch in image 'k': ground truth 2x3 \(shape \(2, 3\)\) vs prediction 2x4 \(shape \(2, 4\)\)$"):
        PanopticQuality(TOY).update(a, b, image_id="k")


# --------------------------------------------------------------------------- merge and state
def _filled(seed):
    rng = np.random.default_rng(seed)
    m = PanopticQuality(TOY)
    for k in range(3):
        g = np.kron(rng.choice([1, 2, 3, 4], size=(3, 4)), np.ones((4, 4), np.int64))
        p = np.where(rng.random(g.shape) < 0.1, 0, g)
        p[5:7, 5:7] = 5  # a small car: a false positive unless it lands on a crowd person
        if k == 1:
            p[g == 3] = 1  # the car taken for road: a false negative
        info = {1: (ROAD, False), 2: (SKY, False), 3: (CAR, False), 4: (PERSON, k == 2), 5: (CAR, False)}
        m.update(pan(g, {i: info[i] for i in np.unique(g)}), pan(p, {i: info[i][:1] + (False,) for i in np.unique(p) if i}), image_id=f"{seed}-{k}")
    return m


def test_merge_adds_every_field_and_checks_its_argument():
    a, b = _filled(1), _filled(2)
    whole = PanopticQuality(TOY)
    for m in (a, b):
        for key in ("tp", "fp", "fn", "dagger_n"):
            setattr(whole, key, getattr(whole, key) + getattr(m, key))
        whole.iou_q = [x + y for x, y in zip(whole.iou_q, m.iou_q, strict=True)]
        whole.dagger_q = [x + y for x, y in zip(whole.dagger_q, m.dagger_q, strict=True)]
        whole.per_image += m.per_image
    st_b = b.state()
    a.merge(b)
    assert a.state() == whole.state() and b.state() == st_b
    assert sum(a.dagger_q) > 0 and sum(a.iou_q) > 0 and a.fp.sum() > 0 and a.fn.sum() > 0
    with pytest.raises(TypeError, match=r"^PanopticQuality\.merge: cannot merge InstanceAP$"):
        a.merge(InstanceAP(TOY))
    other = ClassInfo(names=("road", "sky", "car", "bus"), is_thing=TOY.is_thing, category=TOY.category, ids=TOY.ids, colors=TOY.colors)
    with pytest.raises(ValueError, match=r"^PanopticQuality\.merge: the accumulators have different class lists$"):
        a.merge(PanopticQuality(other))


def test_state_contents_round_trip_and_errors():
    m = _filled(3)
    st = m.state()
    assert st["type"] == "PanopticQuality" and st["version"] == 1 and st["classes"] == TOY.to_dict()
    assert st["tp"] == m.tp.tolist() and st["fp"] == m.fp.tolist() and st["fn"] == m.fn.tolist()
    assert st["iou_sum_q64"] == m.iou_q and st["dagger_iou_sum_q64"] == m.dagger_q
    assert st["dagger_pairs"] == m.dagger_n.tolist() and st["per_image"] == [list(x) for x in m.per_image]
    assert all(type(v) is int for k in ("tp", "fp", "fn", "dagger_pairs") for v in st[k])  # JSON ints, not floats
    assert set(st) == {"type", "version", "classes", "tp", "fp", "fn", "iou_sum_q64", "dagger_iou_sum_q64", "dagger_pairs", "per_image"}
    back = PanopticQuality.from_state(json.loads(json.dumps(st)))
    assert back.state() == st and back.result() == m.result()
    assert back.per_image == m.per_image and back.classes == TOY
    assert back.tp.dtype == np.int64 and back.dagger_n.dtype == np.int64
    # counts written as floats by some other JSON tool come back as integers
    floats = dict(st, **{k: [float(v) for v in st[k]] for k in ("tp", "fp", "fn", "dagger_pairs")})
    floats["iou_sum_q64"] = [float(v) for v in st["iou_sum_q64"]]
    back = PanopticQuality.from_state(floats)
    assert json.dumps(back.state()["tp"]) == json.dumps(st["tp"]) and back.tp.dtype == np.int64
    assert back.fp.dtype == np.int64 and back.fn.dtype == np.int64 and back.dagger_n.dtype == np.int64
    assert json.dumps(back.state()["dagger_pairs"]) == json.dumps(st["dagger_pairs"])
    assert all(type(v) is int for v in back.iou_q) and all(type(v) is int for v in back.dagger_q)
    for key in ("tp", "fp", "fn", "iou_sum_q64", "dagger_iou_sum_q64", "dagger_pairs"):
        bad = dict(st, **{key: st[key] + [0]})
        with pytest.raises(ValueError, match=rf"^PanopticQuality\.from_state: '{key}' has 5 entries, expected 4$"):
            PanopticQuality.from_state(bad)
    with pytest.raises(ValueError, match=r"^PanopticQuality\.from_state: unsupported state version 2$"):
        PanopticQuality.from_state(dict(st, version=2))
