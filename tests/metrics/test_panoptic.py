"""PanopticQuality: cross-check with cityscapesscripts' evaluatePanoptic, hand cases, merging."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segfusion.metrics import PanopticQuality, accumulator_from_state
from segfusion.types import ClassInfo, Panoptic

# --------------------------------------------------------------------------- helpers
TOY = ClassInfo(
    names=("road", "sky", "car", "person"),
    is_thing=(False, False, True, True),
    category=("flat", "sky", "vehicle", "human"),
    ids=(7, 23, 26, 24),
    colors=((0, 0, 0),) * 4,
)
ROAD, SKY, CAR, PERSON = 0, 1, 2, 3


def pan(seg: np.ndarray, info: dict[int, tuple[int, bool]]) -> Panoptic:
    """Panoptic from an id map and {id: (class, iscrowd)}; thing-ness from TOY."""
    return Panoptic.from_segment_map(
        np.asarray(seg, np.int32), {k: (c, TOY.is_thing[c], crowd, 1.0) for k, (c, crowd) in info.items()}
    )


def pq_of(gt: Panoptic, pred: Panoptic, classes: ClassInfo = TOY) -> dict:
    m = PanopticQuality(classes)
    m.update(gt, pred, image_id="img")
    return m.result()


# --------------------------------------------------------------------------- official cross-check
def test_pq_matches_cityscapes_evaluate_panoptic(tmp_path, cs_classes, mx, capsys):
    from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic

    scenes = mx.scene_set(seed=3, classes=cs_classes, n=14)
    gt_items = [(f"im{k:02d}", gt) for k, (gt, _) in enumerate(scenes)]
    pred_items = [(f"im{k:02d}", pred) for k, (_, pred) in enumerate(scenes)]
    mx.write_coco_panoptic(tmp_path / "gt", tmp_path / "gt.json", gt_items, cs_classes)
    mx.write_coco_panoptic(tmp_path / "pred", tmp_path / "pred.json", pred_items, cs_classes)
    official = evaluatePanoptic(
        str(tmp_path / "gt.json"),
        str(tmp_path / "gt"),
        str(tmp_path / "pred.json"),
        str(tmp_path / "pred"),
        str(tmp_path / "result.json"),
    )
    capsys.readouterr()

    m = PanopticQuality(cs_classes)
    for (name, gt), (_, pred) in zip(gt_items, pred_items, strict=True):
        m.update(gt, pred, image_id=name)
    ours = m.result()

    for group, suffix in (("All", ""), ("Things", "_things"), ("Stuff", "_stuff")):
        for key in ("pq", "sq", "rq"):
            assert ours[key + suffix] == pytest.approx(official[group][key], abs=1e-9), (group, key)
    for k, name in enumerate(cs_classes.names):
        off = official["per_class"][cs_classes.ids[k]]
        mine = ours["per_class"][name]
        if mine["tp"] + mine["fp"] + mine["fn"] == 0:
            assert off == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
            assert mine["pq"] is None
        else:
            for key in ("pq", "sq", "rq"):
                assert mine[key] == pytest.approx(off[key], abs=1e-9), (name, key)
    # the scenes must exercise every rule: matches, FP, FN, crowd
    assert sum(c["tp"] for c in ours["per_class"].values()) > 20
    assert sum(c["fp"] for c in ours["per_class"].values()) > 5
    assert sum(c["fn"] for c in ours["per_class"].values()) > 5
    assert any(s.iscrowd for gt, _ in scenes for s in gt.segments)


def test_ground_truth_as_prediction_is_perfect(cs_classes, mx):
    m = PanopticQuality(cs_classes)
    for k, (gt, _) in enumerate(mx.scene_set(seed=5, classes=cs_classes, n=6)):
        m.update(gt, gt, image_id=k)
    r = m.result()
    assert r["pq"] == 1.0 and r["sq"] == 1.0 and r["rq"] == 1.0
    assert r["pq_dagger"] == 1.0
    assert r["n_images"] == 6


def test_merge_of_shards_equals_whole(cs_classes, mx):
    scenes = mx.scene_set(seed=11, classes=cs_classes, n=10)
    whole = PanopticQuality(cs_classes)
    for k, (gt, pred) in enumerate(scenes):
        whole.update(gt, pred, image_id=f"im{k}")
    shards = []
    for lo, hi in ((0, 3), (3, 4), (4, 10)):
        s = PanopticQuality(cs_classes)
        for k in range(lo, hi):
            s.update(*scenes[k], image_id=f"im{k}")
        shards.append(PanopticQuality.from_state(json.loads(json.dumps(s.state()))))
    merged = shards[0]
    for s in shards[1:]:
        merged.merge(s)
    assert merged.state() == whole.state()
    assert merged.result() == whole.result()
    assert isinstance(accumulator_from_state(whole.state()), PanopticQuality)


# --------------------------------------------------------------------------- hand cases
def test_iou_exactly_half_is_not_a_match():
    gt_seg = np.full((4, 8), 1)
    gt_seg[:, 0:4] = 2  # car, 16 px
    pred_seg = np.full((4, 8), 1)
    pred_seg[0:4, 2:6] = 2  # car, 16 px, overlap 8 -> IoU 8 / 24 = 1/3
    r = pq_of(
        pan(gt_seg, {1: (ROAD, False), 2: (CAR, False)}), pan(pred_seg, {1: (ROAD, False), 2: (CAR, False)})
    )
    assert r["per_class"]["car"]["tp"] == 0

    # IoU exactly 0.5: GT 8 px, prediction 4 px inside it -> 4 / 8
    gt_seg = np.full((4, 8), 1)
    gt_seg[0:2, 0:4] = 2
    pred_seg = np.full((4, 8), 1)
    pred_seg[0:1, 0:4] = 2
    r = pq_of(
        pan(gt_seg, {1: (ROAD, False), 2: (CAR, False)}), pan(pred_seg, {1: (ROAD, False), 2: (CAR, False)})
    )
    car = r["per_class"]["car"]
    assert (car["tp"], car["fp"], car["fn"]) == (0, 1, 1)
    assert car["pq"] == 0.0

    # one more pixel: 5 / 8 > 0.5 is a match
    pred_seg[1, 0] = 2
    r = pq_of(
        pan(gt_seg, {1: (ROAD, False), 2: (CAR, False)}), pan(pred_seg, {1: (ROAD, False), 2: (CAR, False)})
    )
    car = r["per_class"]["car"]
    assert (car["tp"], car["fp"], car["fn"]) == (1, 0, 0)
    assert car["pq"] == pytest.approx(5 / 8, abs=1e-15)


def test_void_is_left_out_of_the_union_and_mostly_void_prediction_is_not_fp():
    # GT: car of 8 px, rest road, a void block; prediction: car = the GT car + 8 px on void
    gt_seg = np.full((4, 8), 1)
    gt_seg[0:2, 0:4] = 2
    gt_seg[2:4, 4:8] = 0
    pred_seg = np.full((4, 8), 1)
    pred_seg[0:2, 0:4] = 2
    pred_seg[2:4, 4:8] = 2  # same car segment also covers the void block
    gt = pan(gt_seg, {1: (ROAD, False), 2: (CAR, False)})
    r = pq_of(gt, pan(pred_seg, {1: (ROAD, False), 2: (CAR, False)}))
    car = r["per_class"]["car"]
    assert (car["tp"], car["fp"]) == (1, 0)
    assert car["iou_sum"] == pytest.approx(1.0)  # void pixels do not enlarge the union

    # a separate car segment lying 6/8 on void: not a FP
    pred_seg = np.full((4, 8), 1)
    pred_seg[2:4, 3:7] = 3  # 8 px: 6 on void (cols 4..6), 2 on road
    r = pq_of(gt, pan(pred_seg, {1: (ROAD, False), 3: (CAR, False)}))
    assert r["per_class"]["car"]["fp"] == 0
    assert r["per_class"]["car"]["fn"] == 1

    # exactly half on void: counted as a FP (the rule is "more than half")
    pred_seg = np.full((4, 8), 1)
    pred_seg[2:4, 2:6] = 3  # 8 px: 4 on void
    r = pq_of(gt, pan(pred_seg, {1: (ROAD, False), 3: (CAR, False)}))
    assert r["per_class"]["car"]["fp"] == 1


def test_crowd_rules():
    # GT: a crowd car region and a crowd person region; no non-crowd things
    gt_seg = np.full((4, 8), 1)
    gt_seg[:, 0:3] = 2  # crowd car, 12 px
    gt_seg[:, 5:8] = 3  # crowd person, 12 px
    gt = pan(gt_seg, {1: (ROAD, False), 2: (CAR, True), 3: (PERSON, True)})
    # predictions: a car on the car crowd, a car on the person crowd
    pred_seg = np.full((4, 8), 1)
    pred_seg[:, 0:3] = 5
    pred_seg[:, 5:8] = 6
    r = pq_of(gt, pan(pred_seg, {1: (ROAD, False), 5: (CAR, False), 6: (CAR, False)}))
    car, person = r["per_class"]["car"], r["per_class"]["person"]
    assert (car["tp"], car["fp"], car["fn"]) == (0, 1, 0)  # only the one on the person crowd is a FP
    assert (person["tp"], person["fp"], person["fn"]) == (0, 0, 0)  # crowd is never FN
    assert person["pq"] is None
    assert r["pq_things"] == 0.0


def test_crowd_pixels_stay_in_the_union():
    # panopticapi subtracts only void from the union, not the crowd region
    gt_seg = np.full((4, 8), 1)
    gt_seg[0:2, 0:4] = 2  # car 8 px
    gt_seg[2:4, 0:4] = 3  # crowd car 8 px
    pred_seg = np.full((4, 8), 1)
    pred_seg[0:4, 0:4] = 5  # covers the car and the crowd: IoU = 8 / 16 = 0.5 -> no match
    gt = pan(gt_seg, {1: (ROAD, False), 2: (CAR, False), 3: (CAR, True)})
    r = pq_of(gt, pan(pred_seg, {1: (ROAD, False), 5: (CAR, False)}))
    car = r["per_class"]["car"]
    assert (car["tp"], car["fp"], car["fn"]) == (0, 1, 1)  # 8/16 on crowd is not "more than half"


def test_pq_dagger_stuff_uses_iou_without_threshold():
    # sky: GT top 4 rows of 8, prediction top 2 rows -> IoU 0.5 -> PQ 0, PQ† 0.5
    gt_seg = np.full((8, 4), 1)
    gt_seg[0:4] = 2
    pred_seg = np.full((8, 4), 1)
    pred_seg[0:2] = 2
    gt = pan(gt_seg, {1: (ROAD, False), 2: (SKY, False)})
    pred = pan(pred_seg, {1: (ROAD, False), 2: (SKY, False)})
    r = pq_of(gt, pred)
    sky, road = r["per_class"]["sky"], r["per_class"]["road"]
    assert sky["pq"] == 0.0
    assert sky["pq_dagger"] == pytest.approx(0.5)
    assert road["pq"] == pytest.approx(4 / 6)  # road: GT 16 px, pred 24 px, inter 16
    assert road["pq_dagger"] == pytest.approx(4 / 6)
    assert r["pq_dagger"] == pytest.approx((0.5 + 4 / 6) / 2)

    # a stuff class predicted but never overlapping its GT: PQ† = 0 (not excluded)
    pred_seg = np.full((8, 4), 2)
    pred_seg[0:4] = 1
    r = pq_of(gt, pan(pred_seg, {1: (ROAD, False), 2: (SKY, False)}))
    assert r["per_class"]["sky"]["pq_dagger"] == 0.0
    assert r["per_class"]["road"]["pq_dagger"] == 0.0
    assert r["pq_dagger"] == 0.0


def test_pq_dagger_averages_pairs_over_images():
    # two images: sky IoU 0.5 in one, 1.0 in the other -> PQ† sky = 0.75
    gt_seg = np.full((8, 4), 1)
    gt_seg[0:4] = 2
    half = np.full((8, 4), 1)
    half[0:2] = 2
    gt = pan(gt_seg, {1: (ROAD, False), 2: (SKY, False)})
    m = PanopticQuality(TOY)
    m.update(gt, pan(half, {1: (ROAD, False), 2: (SKY, False)}), image_id="a")
    m.update(gt, gt, image_id="b")
    r = m.result()
    assert r["per_class"]["sky"]["pq_dagger"] == pytest.approx(0.75)
    assert r["per_class"]["sky"]["pq"] == pytest.approx(0.5)  # 1 TP (IoU 1), 1 FP, 1 FN
    assert [v for _, v in m.state()["per_image"]] == [pytest.approx((0 + 4 / 6) / 2), 1.0]


def test_class_outside_the_list_names_the_image():
    seg = np.ones((4, 4), np.int32)
    gt = pan(seg, {1: (ROAD, False)})
    bad = Panoptic.from_segment_map(seg, {1: (7, False, False, 1.0)})
    with pytest.raises(ValueError, match=r"frankfurt_000001.*class index 7"):
        PanopticQuality(TOY).update(gt, bad, image_id="frankfurt_000001")


def test_size_mismatch_names_the_image():
    gt = pan(np.ones((4, 4)), {1: (ROAD, False)})
    pred = pan(np.ones((4, 5)), {1: (ROAD, False)})
    with pytest.raises(ValueError, match=r"lindau_42.*\(4, 4\).*\(4, 5\)"):
        PanopticQuality(TOY).update(gt, pred, image_id="lindau_42")


def test_unknown_segment_id_in_map_is_an_error():
    seg = np.ones((4, 4), np.int32)
    seg[0, 0] = 9
    pred = Panoptic(
        segment_ids=seg,
        segments=Panoptic.from_segment_map(
            np.ones((4, 4), np.int32), {1: (ROAD, False, False, 1.0)}
        ).segments,
    )
    gt = pan(np.ones((4, 4)), {1: (ROAD, False)})
    with pytest.raises(ValueError, match=r"\[9\].*no segment info"):
        PanopticQuality(TOY).update(gt, pred, image_id="x")


SHIFT = 1 << 30


def _big_ids(p: Panoptic) -> Panoptic:
    seg = np.where(p.segment_ids > 0, p.segment_ids + SHIFT, 0).astype(np.int32)
    info = {s.id + SHIFT: (s.class_index, s.is_thing, s.iscrowd, s.score) for s in p.segments}
    return Panoptic.from_segment_map(seg, info)


def test_large_ids_give_the_same_result(cs_classes, mx):
    """Segment ids near the int32 limit give identical results (ids are only compared and sorted)."""
    rng = np.random.default_rng(2)
    small = PanopticQuality(cs_classes)
    large = PanopticQuality(cs_classes)
    for k in range(4):
        gt, pred = mx.random_scene(rng, cs_classes)
        small.update(gt, pred, image_id=k)
        large.update(_big_ids(gt), _big_ids(pred), image_id=k)
    assert small.result() == large.result()
    assert small.result()["pq"] is not None


def test_results_bounded_and_empty_accumulator(cs_classes, mx):
    empty = PanopticQuality(cs_classes).result()
    assert empty["pq"] is None and empty["pq_dagger"] is None and empty["n_images"] == 0
    m = PanopticQuality(cs_classes)
    for k, (gt, pred) in enumerate(mx.scene_set(seed=21, classes=cs_classes, n=8)):
        m.update(gt, pred, image_id=k)
    r = m.result()
    values = [r[k] for k in r if k not in ("per_class", "n_images")]
    values += [
        v for c in r["per_class"].values() for k, v in c.items() if k in ("pq", "sq", "rq", "pq_dagger")
    ]
    assert all(v is None or 0.0 <= v <= 1.0 for v in values)
    assert sum(v is not None for v in values) > 10


def test_run_length_and_per_pixel_paths_agree(monkeypatch, cs_classes, mx):
    """Noisy predictions: the per-pixel fallback and the run-length path give the same state."""
    from segfusion.metrics import semantic

    rng = np.random.default_rng(8)
    pairs = []
    for _ in range(3):
        gt, pred = mx.random_scene(rng, cs_classes, h=256, w=320)  # > 65536 px: lookup-table relabelling
        seg = pred.segment_ids.copy()
        noise = rng.random(seg.shape) < 0.3
        seg[noise] = rng.choice(np.array([0] + [s.id for s in pred.segments]), size=int(noise.sum()))
        info = {s.id: (s.class_index, s.is_thing, s.iscrowd, s.score) for s in pred.segments}
        pairs.append((gt, Panoptic.from_segment_map(seg, info)))
    states = []
    for fraction in (0.0, 2.0):
        monkeypatch.setattr(semantic, "RUNS_MAX_FRACTION", fraction)
        m = PanopticQuality(cs_classes)
        for k, (gt, pred) in enumerate(pairs):
            m.update(gt, pred, image_id=k)
        states.append(m.state())
    assert states[0] == states[1]
    assert sum(states[0]["tp"]) > 0 and sum(states[0]["fp"]) > 0
