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
from segfusion.metrics.instance import AP_KEYS


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
            for j, key in enumerate(AP_KEYS):
                expected[key + suffix] = None if ev.stats[j] < 0 else float(ev.stats[j])
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
