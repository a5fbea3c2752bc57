"""InstanceAP edge cases on small hand-made images: record contents, ids, errors, state.

Expected values are derived by hand in the comments; AP figures of the hand cases are also
cross-checked against pycocotools' COCOeval run directly on COCO dicts built in the test.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segfusion.metrics import InstanceAP, PanopticQuality, accumulator_from_state
from segfusion.metrics.instance import STAT_KEYS, _rle_json, panoptic_segment_rles
from segfusion.types import ClassInfo, Panoptic, Segment

# index 0: stuff (native id 7); 1: person (24); 2: car (26)
CLASSES = ClassInfo(
    names=("road", "person", "car"),
    is_thing=(False, True, True),
    category=("flat", "human", "vehicle"),
    ids=(7, 24, 26),
    colors=((1, 1, 1), (2, 2, 2), (3, 3, 3)),
)
ALL_KEYS = {k + s for s in ("_box", "_mask") for k in STAT_KEYS}


def _rle(mask: np.ndarray) -> dict:
    return mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))


def _rle_str(mask: np.ndarray) -> dict:
    r = _rle(mask)
    return {"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")}


def _scene() -> Panoptic:
    """4x6 map: road (id 1) everywhere, person (id 5) rows 1-2 x cols 1-3, crowd car (id 8)
    rows 2-3 x cols 4-5. Person: area 6, box x=1 y=1 w=3 h=2; car: area 4, box x=4 y=2 w=2 h=2."""
    seg = np.ones((4, 6), np.int32)
    seg[1:3, 1:4] = 5
    seg[2:4, 4:6] = 8
    return Panoptic.from_segment_map(seg, {1: (0, False, False, 1.0), 5: (1, True, False, 0.7), 8: (2, True, True, 0.4)})


def _with_empty_first(p: Panoptic, class_index: int = 1) -> Panoptic:
    """The same map with an extra thing segment (id 30, no pixels) listed first."""
    ghost = Segment(id=30, class_index=class_index, is_thing=True, area=0, bbox=(0, 0, 0, 0), score=0.99)
    return Panoptic(segment_ids=p.segment_ids, segments=(ghost, *p.segments))


def _quiet_eval(gt: dict, dts: list[dict], iou_type: str) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = json.loads(json.dumps(gt))
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(json.loads(json.dumps(dts))), iouType=iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


# --------------------------------------------------------------------------- helpers
def test_rle_json_converts_bytes_and_sizes_and_rejects_uncompressed():
    out = _rle_json({"size": np.array([3, 5], np.int64), "counts": b"abc"})
    assert out == {"size": [3, 5], "counts": "abc"}
    assert all(type(v) is int for v in out["size"]) and type(out["counts"]) is str
    assert _rle_json({"size": [2, 7], "counts": "xy"}) == {"size": [2, 7], "counts": "xy"}
    with pytest.raises(ValueError, match=r"^InstanceAP: only compressed RLE \(counts as bytes or str\) is accepted$"):
        _rle_json({"size": [2, 2], "counts": [0, 4]})


def test_panoptic_segment_rles_follow_the_requested_order():
    p = _scene()
    got = panoptic_segment_rles(p, [np.int64(8), 5])
    assert got == [_rle_str(p.segment_ids == 8), _rle_str(p.segment_ids == 5)]
    assert panoptic_segment_rles(p, []) == []


def test_category_ids_default_and_native():
    assert [InstanceAP(CLASSES).category_id(k) for k in range(3)] == [1, 2, 3]
    assert [InstanceAP(CLASSES, native_ids=True).category_id(k) for k in range(3)] == [7, 24, 26]
    assert InstanceAP(CLASSES, native_ids=1).native_ids is True
    assert InstanceAP(CLASSES, native_ids=0).native_ids is False


# --------------------------------------------------------------------------- ground truth
def test_ground_truth_from_a_panoptic_map_by_hand():
    m = InstanceAP(CLASSES)
    p = _scene()
    m.add_ground_truth(3, _with_empty_first(p), coco_id=np.int64(41))
    # the empty segment is skipped (not the end of the loop), the road is not a thing
    assert m.annotations == [
        {"image_id": "3", "category_id": 2, "segmentation": _rle_str(p.segment_ids == 5), "area": 6.0,
         "bbox": [1.0, 1.0, 3.0, 2.0], "iscrowd": 0},
        {"image_id": "3", "category_id": 3, "segmentation": _rle_str(p.segment_ids == 8), "area": 4.0,
         "bbox": [4.0, 2.0, 2.0, 2.0], "iscrowd": 1},
    ]  # fmt: skip
    assert all(type(a["area"]) is float and type(a["iscrowd"]) is int for a in m.annotations)
    assert m.images == [("3", 4, 6)] and m.coco_ids == {"3": 41} and type(m.coco_ids["3"]) is int
    m.add_ground_truth("no-native-id", p)
    assert m.coco_ids == {"3": 41} and m.images[-1] == ("no-native-id", 4, 6)
    with pytest.raises(ValueError, match=r"^InstanceAP: ground truth of image '3' added twice$"):
        m.add_ground_truth(3, p)


def test_ground_truth_class_range_is_checked_on_stuff_segments_too():
    seg = np.array([[1, 2]], np.int32)
    ok = Panoptic.from_segment_map(seg, {1: (0, False, False, 1.0), 2: (2, True, False, 1.0)})
    m = InstanceAP(CLASSES)
    m.add_ground_truth("a", ok)  # indices 0 and num_classes - 1 are in range
    assert [a["category_id"] for a in m.annotations] == [3]
    for bad in (3, -1):
        p = Panoptic.from_segment_map(seg, {1: (bad, False, False, 1.0), 2: (1, True, False, 1.0)})
        msg = rf"^InstanceAP: ground-truth segment 1 in image 'b{bad}' has class index {bad} outside 0\.\.2$"
        with pytest.raises(ValueError, match=msg):
            InstanceAP(CLASSES).add_ground_truth(f"b{bad}", p)


def test_coco_ground_truth_as_given_keeps_records_and_translates_categories():
    m = InstanceAP(CLASSES)
    anns = [
        {"id": 4, "image_id": 999, "category_id": 26, "segmentation": [[0, 0, 2, 0, 2, 2]], "area": 2.0,
         "bbox": [0, 0, 2, 2], "iscrowd": 0, "note": "kept"},
        {"category_id": 24, "segmentation": {"size": [4, 6], "counts": "x"}, "area": 1.0, "bbox": [1, 1, 1, 1],
         "iscrowd": 1},
    ]  # fmt: skip
    m.add_coco_ground_truth("im", 4, 6, anns, coco_id=12)
    assert m.annotations == [
        {"id": 4, "category_id": 3, "segmentation": [[0, 0, 2, 0, 2, 2]], "area": 2.0, "bbox": [0, 0, 2, 2],
         "iscrowd": 0, "note": "kept", "image_id": "im"},
        {"category_id": 2, "segmentation": {"size": [4, 6], "counts": "x"}, "area": 1.0, "bbox": [1, 1, 1, 1],
         "iscrowd": 1, "image_id": "im"},
    ]  # fmt: skip
    assert anns[0]["image_id"] == 999 and anns[0]["category_id"] == 26  # the input is not modified
    assert m.images == [("im", 4, 6)] and m.coco_ids == {"im": 12}
    native = InstanceAP(CLASSES, native_ids=True)
    native.add_coco_ground_truth("im", 4, 6, anns)
    assert [a["category_id"] for a in native.annotations] == [26, 24] and native.coco_ids == {}


def test_coco_ground_truth_as_given_errors():
    m = InstanceAP(CLASSES)
    good = {"category_id": 24, "segmentation": [[0, 0, 2, 0, 2, 2]], "area": 2.0, "bbox": [0, 0, 2, 2], "iscrowd": 0}
    partial = {"category_id": 24, "segmentation": [], "iscrowd": 0}
    # the annotation without "id" is named by its position; the default source is instances.json
    with pytest.raises(ValueError, match=r"^instances\.json: image 'x', annotation #1: missing keys \['area', 'bbox'\]$"):
        m.add_coco_ground_truth("x", 4, 6, [good, partial])
    for cat in (7, 99):  # a stuff class, an unknown id
        with pytest.raises(ValueError, match=rf"^f\.json: image 'x', annotation 3: category_id {cat} is not a thing class of the class list$"):
            m.add_coco_ground_truth("x", 4, 6, [dict(good, id=3, category_id=cat)], source="f.json")
    assert m.images == [] and m.annotations == []
    m.add_coco_ground_truth("x", 4, 6, [good])
    with pytest.raises(ValueError, match="'x' added twice"):
        m.add_coco_ground_truth("x", 4, 6, [])


# --------------------------------------------------------------------------- detections
def test_raw_detections_records_by_hand():
    m = InstanceAP(CLASSES, native_ids=True)
    mask = np.zeros((4, 6), bool)
    mask[0:2, 0:3] = True
    # labels and scores of shape (1, 2) and the boxes flat: all are reshaped to N = 2 rows
    m.add_detections(7, np.array([[2, 1]]), np.array([[0.25, 1]]), np.array([1, 2, 5, 7, 0, 0, 3.5, 3]), [_rle(mask), _rle_str(mask)])
    # x0 y0 x1 y1 -> x, y, w = x1 - x0, h = y1 - y0
    assert m.detections == [
        {"image_id": "7", "category_id": 26, "score": 0.25, "bbox": [1.0, 2.0, 4.0, 5.0], "segmentation": _rle_str(mask)},
        {"image_id": "7", "category_id": 24, "score": 1.0, "bbox": [0.0, 0.0, 3.5, 3.0], "segmentation": _rle_str(mask)},
    ]  # fmt: skip
    assert type(m.detections[1]["score"]) is float
    m.add_detections(7, [], [], np.zeros((0, 4)), [])
    assert len(m.detections) == 2


def test_raw_detections_errors():
    m = InstanceAP(CLASSES)
    r = _rle(np.ones((2, 2), bool))
    box = [0, 0, 1, 1]
    cases = [
        (([1, 1], [0.5], [box, box], [r, r]), "labels 2, scores 1, boxes 2, rle_masks 2"),
        (([1, 1], [0.5, 0.5], [box], [r, r]), "labels 2, scores 2, boxes 1, rle_masks 2"),
        (([1, 1], [0.5, 0.5], [box, box], [r]), "labels 2, scores 2, boxes 2, rle_masks 1"),
    ]
    for args, counts in cases:
        with pytest.raises(ValueError, match=rf"^InstanceAP\.add_detections: image 'q': {counts} disagree$"):
            m.add_detections("q", *args)
    with pytest.raises(ValueError, match=r"^InstanceAP: detection 1 in image 'q' has stuff class 'road' \(index 0\); only thing classes are evaluated$"):
        m.add_detections("q", [1, 0], [0.5, 0.5], [box, box], [r, r])
    with pytest.raises(ValueError, match=r"^InstanceAP: detection 0 in image 'q' has class index 3 outside 0\.\.2$"):
        m.add_detections("q", [3], [0.5], [box], [r])
    with pytest.raises(ValueError, match=r"^InstanceAP: detection 0 in image 'q' has class index -1 outside 0\.\.2$"):
        m.add_detections("q", [-1], [0.5], [box], [r])


def test_panoptic_detections_by_hand():
    m = InstanceAP(CLASSES)
    p = _scene()
    m.add_panoptic_detections("p", _with_empty_first(p))
    # only the non-crowd person (id 5, score 0.7, box from its mask); the crowd car and road are not detections
    assert m.detections == [
        {"image_id": "p", "category_id": 2, "score": 0.7, "bbox": [1.0, 1.0, 3.0, 2.0], "segmentation": _rle_str(p.segment_ids == 5)}
    ]
    # a non-crowd car listed after the empty segment is kept as well
    seg = p.segment_ids.copy()
    car = Panoptic.from_segment_map(seg, {1: (0, False, False, 1.0), 5: (1, True, False, 0.7), 8: (2, True, False, 0.4)})
    m2 = InstanceAP(CLASSES)
    m2.add_panoptic_detections("p", _with_empty_first(car))
    assert [(d["category_id"], d["score"], d["bbox"]) for d in m2.detections] == [(2, 0.7, [1.0, 1.0, 3.0, 2.0]), (3, 0.4, [4.0, 2.0, 2.0, 2.0])]
    bad = Panoptic.from_segment_map(np.array([[4]], np.int32), {4: (5, True, False, 1.0)})
    with pytest.raises(ValueError, match=r"^InstanceAP: predicted segment 4 in image 'z' has class index 5 outside 0\.\.2$"):
        m.add_panoptic_detections("z", bad)


def test_update_default_ids_optional_prediction_and_size_mismatch():
    m = InstanceAP(CLASSES)
    p = _scene()
    m.update(p)
    m.update(p, p)
    assert [i for i, _, _ in m.images] == ["image0", "image1"]
    assert [d["image_id"] for d in m.detections] == ["image1"] and len(m.annotations) == 4
    small = Panoptic.from_segment_map(np.ones((4, 5), np.int32), {1: (0, False, False, 1.0)})
    with pytest.raises(ValueError, match=r"^InstanceAP: size mismatch in image 'image2': ground truth \(4, 6\) vs prediction \(4, 5\)$"):
        m.update(p, small)


# --------------------------------------------------------------------------- merge
def test_merge_contents_and_errors():
    a, b = InstanceAP(CLASSES), InstanceAP(CLASSES)
    p = _scene()
    a.add_ground_truth("a", p, coco_id=5)
    b.add_ground_truth("b", p, coco_id=9)
    b.add_panoptic_detections("b", p)
    a.merge(b)
    assert a.images == [("a", 4, 6), ("b", 4, 6)] and a.coco_ids == {"a": 5, "b": 9}
    assert [x["image_id"] for x in a.annotations] == ["a", "a", "b", "b"] and a.detections == b.detections
    for name in ("a", "b"):  # the image set is the union of both
        with pytest.raises(ValueError, match=f"'{name}' added twice"):
            a.add_ground_truth(name, p)
    assert b._image_set == {"b"}  # other is not changed
    with pytest.raises(TypeError, match=r"^InstanceAP\.merge: cannot merge PanopticQuality$"):
        a.merge(PanopticQuality(CLASSES))
    other = ClassInfo(names=("road", "person", "bus"), is_thing=CLASSES.is_thing, category=CLASSES.category, ids=CLASSES.ids, colors=CLASSES.colors)
    msg = r"^InstanceAP\.merge: the accumulators have different class lists or category ids$"
    with pytest.raises(ValueError, match=msg):
        a.merge(InstanceAP(other))
    with pytest.raises(ValueError, match=msg):
        a.merge(InstanceAP(CLASSES, native_ids=True))
    many, dup = InstanceAP(CLASSES), InstanceAP(CLASSES)
    for name in "gfedcba":
        many.add_ground_truth(name, p)
        dup.add_ground_truth(name, p)
    with pytest.raises(ValueError, match=r"^InstanceAP\.merge: images \['a', 'b', 'c', 'd', 'e'\] are in both accumulators$"):
        many.merge(dup)


# --------------------------------------------------------------------------- COCO dicts
def _three_images(coco_ids):
    m = InstanceAP(CLASSES)
    p = _scene()
    for name, cid in zip(("x", "y", "z"), coco_ids, strict=True):
        m.add_ground_truth(name, p, coco_id=cid)
        m.add_panoptic_detections(name, p)
    return m


@pytest.mark.parametrize(
    "coco_ids, expected",
    [
        ((30, 10, 20), [30, 10, 20]),  # all native ids known and unique: kept
        ((30, None, 20), [1, 2, 3]),  # one unknown: 1..N in insertion order
        ((30, 30, 20), [1, 2, 3]),  # duplicates: 1..N
    ],
)
def test_image_ids(coco_ids, expected):
    m = _three_images(coco_ids)
    gt = m.coco_ground_truth()
    assert gt["images"] == [
        {"id": i, "file_name": n, "height": 4, "width": 6} for i, n in zip(expected, "xyz", strict=True)
    ]
    assert [a["image_id"] for a in gt["annotations"]] == [expected[0]] * 2 + [expected[1]] * 2 + [expected[2]] * 2
    assert [d["image_id"] for d in m.coco_results()] == expected
    # the accumulator's own records keep the names
    assert [a["image_id"] for a in m.annotations][:2] == ["x", "x"] and m.detections[0]["image_id"] == "x"
    assert InstanceAP(CLASSES).coco_ground_truth() == {"images": [], "categories": [
        {"id": 2, "name": "person", "supercategory": "human"}, {"id": 3, "name": "car", "supercategory": "vehicle"}], "annotations": []}  # fmt: skip


def test_categories_are_the_thing_classes():
    assert InstanceAP(CLASSES, native_ids=True).coco_ground_truth()["categories"] == [
        {"id": 24, "name": "person", "supercategory": "human"},
        {"id": 26, "name": "car", "supercategory": "vehicle"},
    ]


@pytest.mark.parametrize(
    "given, expected",
    [
        ([5, 3], [5, 3]),  # unique positive ints: kept
        ([5, 5], [1, 2]),  # duplicate
        ([0, 3], [1, 2]),  # not > 0
        ([1, 3], [1, 3]),  # 1 is > 0
        ([True, 3], [1, 2]),  # a bool is not an id
        (["5", 3], [1, 2]),  # a str is not an id
        ([None, 3], [1, 2]),  # missing
    ],
)
def test_annotation_ids(given, expected):
    m = InstanceAP(CLASSES)
    base = {"category_id": 24, "segmentation": [[0, 0, 2, 0, 2, 2]], "area": 2.0, "bbox": [0, 0, 2, 2], "iscrowd": 0}
    anns = [dict(base) if g is None else dict(base, id=g) for g in given]
    m.add_coco_ground_truth("im", 4, 6, anns)
    assert [a["id"] for a in m.coco_ground_truth()["annotations"]] == expected
    assert [a.get("id") for a in m.annotations] == given  # not modified in place


def test_results_for_an_image_without_ground_truth_is_an_error():
    m = InstanceAP(CLASSES)
    r = _rle(np.ones((2, 2), bool))
    m.add_detections("zz", [1], [0.5], [[0, 0, 1, 1]], [r])
    with pytest.raises(ValueError, match=r"^InstanceAP: detections for image 'zz', which has no ground truth$"):
        m.coco_results()
    with pytest.raises(ValueError, match="'zz', which has no ground truth"):
        m.result()  # also when there is no ground truth at all (n_gt = 0)


# --------------------------------------------------------------------------- result
def _two_detection_case(native_ids=False):
    """100x100 image, one person GT: mask rows/cols 0..29 (area 900 < 32^2: small).

    Detections: a true positive (score 0.9) with the exact mask and box [0, 0, 30, 30], and a
    false positive (score 0.95) whose mask is rows/cols 50..59 (area 100, small) but whose
    given box is [50, 50, 90, 90] (area 1600: medium), far from the ground truth.
    """
    m = InstanceAP(CLASSES, native_ids=native_ids)
    seg = np.ones((100, 100), np.int32)
    seg[:30, :30] = 2
    gt = Panoptic.from_segment_map(seg, {1: (0, False, False, 1.0), 2: (1, True, False, 1.0)})
    m.add_ground_truth("im", gt)
    fp = np.zeros((100, 100), bool)
    fp[50:60, 50:60] = True
    m.add_detections("im", [1, 1], [0.9, 0.95], [[0, 0, 30, 30], [50, 50, 90, 90]], [_rle(seg == 2), _rle(fp)])
    return m


def test_result_of_a_hand_case_box_and_mask_geometry():
    m = _two_detection_case()
    r = m.result()
    assert set(r) == ALL_KEYS | {"n_images", "n_gt", "n_detections"}
    assert (r["n_images"], r["n_gt"], r["n_detections"]) == (1, 1, 2)
    # all areas: FP (0.95) then TP (0.9): precision 1/2 at recall 1 -> AP = 0.5 at every IoU threshold
    for s in ("_box", "_mask"):
        assert (r["ap" + s], r["ap50" + s], r["ap75" + s]) == (0.5, 0.5, 0.5)
        # maxDets 1 keeps only the FP: recall 0; 10 and 100 detections: recall 1
        assert (r["ar1" + s], r["ar10" + s], r["ar100" + s]) == (0.0, 1.0, 1.0)
        # no ground truth in the medium and large ranges: COCOeval's -1, reported as None
        assert r["apm" + s] is None and r["apl" + s] is None and r["arm" + s] is None and r["arl" + s] is None
        assert r["ars" + s] == 1.0
    # small range: the mask FP has area 100 (small) and counts; with the box, the FP's area is
    # the box's 1600 (medium), so it is ignored in the small range and AP_small = 1
    assert r["aps_mask"] == 0.5 and r["aps_box"] == pytest.approx(1.0, abs=1e-12)
    # independent: pycocotools on dicts written here
    gt = {
        "images": [{"id": 1, "height": 100, "width": 100}],
        "categories": [{"id": 2, "name": "person"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "iscrowd": 0, "area": 900.0,
                         "bbox": [0.0, 0.0, 30.0, 30.0], "segmentation": [[0, 0, 30, 0, 30, 30, 0, 30]]}],
    }  # fmt: skip
    seg_gt = np.zeros((100, 100), bool)
    seg_gt[:30, :30] = True
    fp = np.zeros((100, 100), bool)
    fp[50:60, 50:60] = True
    box_dts = [{"image_id": 1, "category_id": 2, "score": 0.9, "bbox": [0, 0, 30, 30]},
               {"image_id": 1, "category_id": 2, "score": 0.95, "bbox": [50, 50, 40, 40]}]  # fmt: skip
    seg_dts = [{"image_id": 1, "category_id": 2, "score": 0.9, "segmentation": _rle_str(seg_gt)},
               {"image_id": 1, "category_id": 2, "score": 0.95, "segmentation": _rle_str(fp)}]  # fmt: skip
    gt_mask = json.loads(json.dumps(gt))
    gt_mask["annotations"][0]["segmentation"] = _rle_str(seg_gt)
    for stats, suffix in ((_quiet_eval(gt, box_dts, "bbox"), "_box"), (_quiet_eval(gt_mask, seg_dts, "segm"), "_mask")):
        for key, v in zip(STAT_KEYS, stats, strict=True):
            assert r[key + suffix] == (None if v < 0 else pytest.approx(v, abs=1e-12)), key + suffix
    # the accumulator's records are not changed by the evaluation (loadRes adds keys to what it gets)
    assert set(m.detections[0]) == {"image_id", "category_id", "score", "bbox", "segmentation"}
    assert set(m.annotations[0]) == {"image_id", "category_id", "segmentation", "area", "bbox", "iscrowd"}
    assert m.result() == r  # repeatable


def test_result_does_not_depend_on_category_numbering():
    assert _two_detection_case(native_ids=True).result() == _two_detection_case().result()


def test_result_without_detections_and_without_non_crowd_ground_truth():
    m = InstanceAP(CLASSES)
    p = _scene()  # one non-crowd person (area 6: small), one crowd car
    m.add_ground_truth("a", p)
    r = m.result()
    assert (r["n_images"], r["n_gt"], r["n_detections"]) == (1, 1, 0)
    for s in ("_box", "_mask"):
        # a ground truth and nothing detected: AP and AR 0, not None; medium / large: None
        assert all(r[k + s] == 0.0 for k in ("ap", "ap50", "ap75", "aps", "ar1", "ar10", "ar100", "ars"))
        assert all(r[k + s] is None for k in ("apm", "apl", "arm", "arl"))

    crowd_only = Panoptic.from_segment_map(p.segment_ids, {1: (0, False, False, 1.0), 5: (1, True, True, 1.0), 8: (2, True, True, 1.0)})
    m = InstanceAP(CLASSES)
    m.update(crowd_only, p, image_id="c")
    r = m.result()
    # the prediction's person is a detection, its crowd car is not
    assert len(m.annotations) == 2 and (r["n_images"], r["n_gt"], r["n_detections"]) == (1, 0, 1)
    assert set(r) == ALL_KEYS | {"n_images", "n_gt", "n_detections"}
    assert all(r[k] is None for k in ALL_KEYS)
    assert InstanceAP(CLASSES).result() == dict({k: None for k in ALL_KEYS}, n_images=0, n_gt=0, n_detections=0)


def test_perfect_detections_give_one_not_none():
    m = InstanceAP(CLASSES)
    p = _scene()
    m.update(p, p)
    r = m.result()
    # the single non-crowd person detected exactly: AP = AR = 1 in "all" and "small"
    for s in ("_box", "_mask"):
        for k in ("ap", "ap50", "ap75", "aps", "ar1", "ar10", "ar100", "ars"):
            assert r[k + s] == pytest.approx(1.0, abs=1e-12), k + s


# --------------------------------------------------------------------------- state
def test_state_contents_and_round_trip():
    m = InstanceAP(CLASSES, native_ids=True)
    p = _scene()
    m.add_ground_truth("a", p, coco_id=8)
    m.add_panoptic_detections("a", p)
    st = m.state()
    assert st == {
        "type": "InstanceAP",
        "version": 1,
        "classes": CLASSES.to_dict(),
        "native_ids": True,
        "images": [["a", 4, 6]],
        "coco_ids": {"a": 8},
        "annotations": m.annotations,
        "detections": m.detections,
    }
    back = InstanceAP.from_state(json.loads(json.dumps(st)))
    assert back.classes == CLASSES and back.native_ids is True
    assert back.images == [("a", 4, 6)] and back.coco_ids == {"a": 8}
    assert back.annotations == m.annotations and back.detections == m.detections
    assert back.result() == m.result()
    with pytest.raises(ValueError, match="'a' added twice"):  # the image set is rebuilt
        back.add_ground_truth("a", p)
    again = accumulator_from_state(json.loads(json.dumps(st)))
    assert type(again) is InstanceAP and again.state() == st


def test_from_state_conversions_and_errors():
    st = InstanceAP(CLASSES).state()
    st["images"] = [[3, "4", 6.0], ["b", 2, 2]]
    del st["coco_ids"]  # states written before native image ids were kept
    m = InstanceAP.from_state(st)
    assert m.images == [("3", 4, 6), ("b", 2, 2)] and m._image_set == {"3", "b"} and m.coco_ids == {}
    assert m.native_ids is False
    st["coco_ids"] = None
    assert InstanceAP.from_state(st).coco_ids == {}
    st["coco_ids"] = {3: "17"}
    assert InstanceAP.from_state(st).coco_ids == {"3": 17}
    st["images"] = [["a", 2, 2], ["a", 3, 3]]
    with pytest.raises(ValueError, match=r"^InstanceAP\.from_state: duplicate image ids$"):
        InstanceAP.from_state(st)
    with pytest.raises(ValueError, match=r"^InstanceAP\.from_state: state has type 'PanopticQuality', expected 'InstanceAP'$"):
        InstanceAP.from_state(dict(st, type="PanopticQuality"))


def test_accumulator_from_state_errors():
    with pytest.raises(ValueError, match=r"^accumulator_from_state: unknown state type 'Nope'; expected one of \['BoundaryAccuracy', 'InstanceAP', 'PanopticQuality', 'SemanticConfusion'\]$"):
        accumulator_from_state({"type": "Nope"})
    with pytest.raises(ValueError, match=r"^accumulator_from_state: unknown state type None;"):
        accumulator_from_state(["InstanceAP"])
    with pytest.raises(ValueError, match=r"^accumulator_from_state: unknown state type None;"):
        accumulator_from_state({})
