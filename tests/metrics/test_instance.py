"""InstanceAP: equality with pycocotools run directly on files, edge cases, merging."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segfusion.metrics import InstanceAP
from segfusion.metrics.instance import AP_KEYS, STAT_KEYS


def _raw_detections(rng, gt, classes):
    """Jittered copies of the GT thing masks, as (labels, scores, boxes x0y0x1y1, rles)."""
    labels, scores, boxes, rles = [], [], [], []
    for s in gt.segments:
        if not classes.is_thing[s.class_index] or s.iscrowd:
            continue
        m = np.roll(gt.segment_ids == s.id, int(rng.integers(-2, 3)), axis=1)
        if not m.any():
            continue
        rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        x, y, w, h = mask_util.toBbox(rle)
        labels.append(s.class_index)
        scores.append(float(rng.random()))
        boxes.append([x, y, x + w + float(rng.integers(0, 3)), y + h])
        rles.append(rle)
    return labels, scores, np.asarray(boxes, float).reshape(-1, 4), rles


def _fill(m: InstanceAP, scenes, classes, seed=0, lo=0):
    """Even images: fused-panoptic detections; odd images: raw detections. Returns the raw ones."""
    rng = np.random.default_rng(seed + lo)
    raw = {}
    for k, (gt, pred) in enumerate(scenes, start=lo):
        if k % 2 == 0:
            m.update(gt, pred, image_id=f"im{k}")
        else:
            m.add_ground_truth(f"im{k}", gt)
            raw[k] = _raw_detections(rng, gt, classes)
            m.add_detections(f"im{k}", *raw[k])
    return raw


def _independent_coco_files(tmp_path, scenes, raw, classes):
    """GT and results written straight from the scenes with pycocotools (not via InstanceAP)."""
    images, anns, results = [], [], []
    for k, (gt, pred) in enumerate(scenes):
        h, w = gt.image_size
        images.append({"id": k + 1, "height": h, "width": w, "file_name": f"im{k}"})
        for s in gt.segments:
            if not classes.is_thing[s.class_index]:
                continue
            rle = mask_util.encode(np.asfortranarray((gt.segment_ids == s.id).astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": k + 1,
                    "category_id": classes.ids[s.class_index],
                    "segmentation": rle,
                    "area": float(mask_util.area(rle)),
                    "bbox": mask_util.toBbox(rle).tolist(),
                    "iscrowd": int(s.iscrowd),
                }
            )
        if k % 2 == 0:
            dets = []
            for s in pred.segments:
                if classes.is_thing[s.class_index] and not s.iscrowd:
                    rle = mask_util.encode(np.asfortranarray((pred.segment_ids == s.id).astype(np.uint8)))
                    dets.append((s.class_index, s.score, None, rle))
        else:
            dets = list(zip(*raw[k], strict=True))
        for lab, sc, box, rle in dets:
            rle = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}
            bbox = (
                mask_util.toBbox(rle).tolist()
                if box is None
                else [box[0], box[1], box[2] - box[0], box[3] - box[1]]
            )
            results.append(
                {
                    "image_id": k + 1,
                    "category_id": classes.ids[lab],
                    "score": sc,
                    "bbox": bbox,
                    "segmentation": rle,
                }
            )
    cats = [{"id": classes.ids[k], "name": classes.names[k]} for k in classes.thing_indices]
    gt_path = tmp_path / "instances.json"
    gt_path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    for iou_type, drop in (("bbox", "segmentation"), ("segm", "bbox")):
        (tmp_path / f"results_{iou_type}.json").write_text(
            json.dumps([{k: v for k, v in d.items() if k != drop} for d in results])
        )
    return gt_path


def test_ap_equals_pycocotools_on_files(tmp_path, cs_classes, mx):
    scenes = mx.scene_set(seed=17, classes=cs_classes, n=12, h=64, w=96)
    m = InstanceAP(cs_classes, native_ids=True)
    raw = _fill(m, scenes, cs_classes)
    ours = m.result()

    gt_path = _independent_coco_files(tmp_path, scenes, raw, cs_classes)
    expected = {}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        for iou_type, suffix in (("bbox", "_box"), ("segm", "_mask")):
            ev = COCOeval(
                coco_gt, coco_gt.loadRes(str(tmp_path / f"results_{iou_type}.json")), iouType=iou_type
            )
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            for j, key in enumerate(STAT_KEYS):  # all 12: AP and AR
                expected[key + suffix] = None if ev.stats[j] < 0 else float(ev.stats[j])
    assert len(expected) == 24
    for key, value in expected.items():
        if value is None:
            assert ours[key] is None, key
        else:
            assert ours[key] == pytest.approx(value, abs=1e-12), key
    assert 0.05 < ours["ap_mask"] < 0.99 and 0.05 < ours["ap_box"] < 0.99
    assert ours["n_gt"] == sum(1 for a in m.annotations if not a["iscrowd"]) > 10
    assert any(a["iscrowd"] for a in m.annotations)


def test_ground_truth_as_detections_gives_ap_one(cs_classes, mx):
    m = InstanceAP(cs_classes)
    for k, (gt, _) in enumerate(mx.scene_set(seed=19, classes=cs_classes, n=5, h=64, w=96)):
        m.update(gt, gt, image_id=k)
    r = m.result()
    assert r["ap_mask"] == pytest.approx(1.0) and r["ap_box"] == pytest.approx(1.0)
    assert r["n_detections"] == r["n_gt"] > 0


def test_zero_detections_and_zero_ground_truth(cs_classes, mx):
    scenes = mx.scene_set(seed=23, classes=cs_classes, n=4)
    m = InstanceAP(cs_classes)
    for k, (gt, _) in enumerate(scenes):
        m.add_ground_truth(k, gt)
    r = m.result()
    assert r["n_gt"] > 0 and r["n_detections"] == 0
    assert r["ap_box"] == 0.0 and r["ap_mask"] == 0.0 and r["ap50_mask"] == 0.0

    empty = InstanceAP(cs_classes)
    _, pred = scenes[0]
    gt_empty = mx.scene_set(seed=23, classes=cs_classes, n=4)[1][0]  # empty ground truth
    empty.update(gt_empty, pred, image_id="only")
    r = empty.result()
    assert r["n_gt"] == 0 and r["n_detections"] > 0
    assert all(r[k + s] is None for k in AP_KEYS for s in ("_box", "_mask"))


def test_merge_of_shards_equals_whole(cs_classes, mx):
    scenes = mx.scene_set(seed=29, classes=cs_classes, n=8, h=64, w=96)
    whole = InstanceAP(cs_classes)
    _fill(whole, scenes[:5], cs_classes, lo=0)
    _fill(whole, scenes[5:], cs_classes, lo=5)
    shard_a, shard_b = InstanceAP(cs_classes), InstanceAP(cs_classes)
    _fill(shard_a, scenes[:5], cs_classes, lo=0)
    _fill(shard_b, scenes[5:], cs_classes, lo=5)
    merged = InstanceAP.from_state(json.loads(json.dumps(shard_a.state())))
    merged.merge(InstanceAP.from_state(json.loads(json.dumps(shard_b.state()))))
    assert merged.state() == json.loads(json.dumps(whole.state()))
    assert merged.result() == whole.result()
    assert whole.result()["ap_mask"] > 0
    with pytest.raises(ValueError, match="in both"):
        merged.merge(InstanceAP.from_state(shard_b.state()))


def test_stuff_detection_and_unknown_image_are_errors(cs_classes, mx):
    gt, _ = mx.scene_set(seed=31, classes=cs_classes, n=4)[0]
    m = InstanceAP(cs_classes)
    rle = mask_util.encode(np.asfortranarray(np.ones(gt.image_size, np.uint8)))
    with pytest.raises(ValueError, match=r"'a'.*stuff class 'road'"):
        m.add_detections("a", [0], [0.9], [[0, 0, 4, 4]], [rle])
    m.add_ground_truth("a", gt)
    m.add_detections("b", [11], [0.9], [[0, 0, 4, 4]], [rle])
    with pytest.raises(ValueError, match="'b', which has no ground truth"):
        m.result()


# --------------------------------------------------------------------------- ground truth as given
def _coco_files(tmp_path, classes, seed=5):
    """A COCO instances file with overlapping instances, polygons, crowd RLE and annotation
    boxes that are not the masks' boxes; large non-contiguous image ids; results (one image
    without any). Built with numpy and pycocotools only."""
    rng = np.random.default_rng(seed)
    h, w = 60, 80
    person, car = classes.ids[classes.names.index("person")], classes.ids[classes.names.index("car")]
    images, anns, results = [], [], []
    for image_id in (90017, 3, 1234567, 40002):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": h, "width": w})
        for k in range(6):
            y0, x0 = int(rng.integers(0, h - 20)), int(rng.integers(0, w - 20))
            y1, x1 = y0 + int(rng.integers(6, 40)), x0 + int(rng.integers(6, 40))
            m = np.zeros((h, w), np.uint8)
            m[y0:y1, x0:x1] = 1
            rle = mask_util.encode(np.asfortranarray(m))
            crowd = int(k == 5)
            seg = (
                [[x0, y0, x1, y0, x1, y1, x0, y1]]
                if k % 2 and not crowd
                else {"size": [h, w], "counts": rle["counts"].decode()}
            )
            box = mask_util.toBbox(rle).tolist()
            anns.append({"id": 10 * image_id + k, "image_id": image_id, "category_id": person if k % 3 else car, "segmentation": seg,
                         "area": float(mask_util.area(rle)) * 1.01, "bbox": [box[0] - 0.5, box[1], box[2] + 1.5, box[3] + 0.25], "iscrowd": crowd})  # fmt: skip
            if image_id == 3:
                continue  # an image without detections
            for _ in range(2):
                d = np.roll(m, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(0, 1))
                drle = mask_util.encode(np.asfortranarray(d))
                results.append({"image_id": image_id, "category_id": person if rng.random() < 0.7 else car, "score": float(rng.random()),
                                "bbox": mask_util.toBbox(drle).tolist(), "segmentation": {"size": [h, w], "counts": drle["counts"].decode()}})  # fmt: skip
    cats = [{"id": classes.ids[k], "name": classes.names[k]} for k in classes.thing_indices]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    (tmp_path / "results.json").write_text(json.dumps(results))
    return path, images, anns, results


def _accumulate(classes, images, anns, results, subset):
    m = InstanceAP(classes, native_ids=True)
    index = classes.index_of_id()
    for im in images:
        if im["id"] not in subset:
            continue
        name = f"img{im['id']}"
        m.add_coco_ground_truth(name, im["height"], im["width"], [a for a in anns if a["image_id"] == im["id"]], coco_id=im["id"])
        mine = [r for r in results if r["image_id"] == im["id"]]
        boxes = np.array([[r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3]] for r in mine]).reshape(-1, 4)
        m.add_detections(name, [index[r["category_id"]] for r in mine], [r["score"] for r in mine], boxes, [r["segmentation"] for r in mine])
    return m


def test_ground_truth_as_given_equals_pycocotools_on_the_files(tmp_path, cs_classes):
    path, images, anns, results = _coco_files(tmp_path, cs_classes)
    expected = {}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(path))
        for iou_type, suffix, drop in (("bbox", "_box", "segmentation"), ("segm", "_mask", "bbox")):
            dts = [{k: v for k, v in d.items() if k != drop} for d in json.loads((tmp_path / "results.json").read_text())]
            ev = COCOeval(coco_gt, coco_gt.loadRes(dts), iouType=iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            expected.update({key + suffix: float(v) for key, v in zip(STAT_KEYS, ev.stats)})
    ids = [im["id"] for im in images]
    # two shards through JSON states, merged: the whole split's numbers
    a = InstanceAP.from_state(json.loads(json.dumps(_accumulate(cs_classes, images, anns, results, ids[:2]).state())))
    a.merge(InstanceAP.from_state(json.loads(json.dumps(_accumulate(cs_classes, images, anns, results, ids[2:]).state()))))
    ours = a.result()
    for key, value in expected.items():
        assert (ours[key] is None) if value < 0 else ours[key] == pytest.approx(value, abs=1e-9), key
    assert sum(v >= 0 for v in expected.values()) >= 16 and 0.05 < ours["ap_mask"] < 0.95
    assert [im["id"] for im in a.coco_ground_truth()["images"]] == ids  # native image ids
    assert sorted(x["id"] for x in a.coco_ground_truth()["annotations"]) == sorted(x["id"] for x in anns)
    # the same ground truth rebuilt from masks (boxes and areas from the masks) is not pycocotools' on the file
    b = InstanceAP(cs_classes, native_ids=True)
    for im in images:
        mine = [dict(x, bbox=None) for x in anns if x["image_id"] == im["id"]]
        for x in mine:
            seg = x["segmentation"]
            rle = mask_util.merge(mask_util.frPyObjects(seg, im["height"], im["width"])) if isinstance(seg, list) else {"size": seg["size"], "counts": seg["counts"].encode()}
            x["bbox"], x["area"] = mask_util.toBbox(rle).tolist(), float(mask_util.area(rle))
        b.add_coco_ground_truth(f"img{im['id']}", im["height"], im["width"], mine, coco_id=im["id"])
    b.detections = list(a.detections)
    assert b.result()["ap_box"] != pytest.approx(ours["ap_box"], abs=1e-6)


def test_ground_truth_as_given_errors_name_the_file_and_annotation(cs_classes):
    m = InstanceAP(cs_classes, native_ids=True)
    good = {"id": 5, "category_id": 26, "segmentation": [[0, 0, 4, 0, 4, 4]], "area": 8.0, "bbox": [0, 0, 4, 4], "iscrowd": 0}
    with pytest.raises(ValueError, match=r"gt\.json: image 'x', annotation 5: missing keys \['bbox'\]"):
        m.add_coco_ground_truth("x", 8, 8, [{k: v for k, v in good.items() if k != "bbox"}], source="gt.json")
    with pytest.raises(ValueError, match=r"gt\.json: image 'x', annotation 5: category_id 7 is not a thing class"):
        m.add_coco_ground_truth("x", 8, 8, [dict(good, category_id=7)], source="gt.json")
    assert m.images == []  # nothing half-added
    m.add_coco_ground_truth("x", 8, 8, [good], coco_id=11)
    assert m.result()["n_gt"] == 1 and m.result()["ar100_mask"] == 0.0
