"""Instance scores survive fusion and the fused files, and AP after fusion is pycocotools' AP.

Issue 15: a pipeline that dropped the scores (every segment scored 1.0) would still write
valid files and a plausible AP. Here the detections of every image are the ground-truth
things plus one false positive, all with distinct scores, so the ranking (and AP) depends
on the scores.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from segfusion.datasets.canonical import CanonicalSplit
from segfusion.evaluation import evaluate_fused, gather_states
from segfusion.fusion import fuse
from segfusion.io.atomic import write_json
from segfusion.io.fused import write_fused
from segfusion.types import Instances, SemanticPrediction

FP_WINDOW = (slice(4, 14), slice(10, 22))  # rows 4-13, columns 10-21: sky, above every object


def _inputs(split, rng):
    """Per image (name, image_id, Instances, SemanticPrediction): GT things + one false positive."""
    classes = split.classes
    car = classes.names.index("car")
    recs = sorted(split.images, key=lambda r: r.image_id)
    things = [[s for s in split.panoptic(r).segments if s.is_thing and not s.iscrowd] for r in recs]
    total = sum(len(t) + 1 for t in things)
    # distinct scores in [0.55, 0.99], shuffled: false positives and true positives interleave
    pool = list(rng.permutation(np.round(np.linspace(0.55, 0.99, total), 3)))
    out = []
    for r, segs in zip(recs, things, strict=True):
        gt = split.panoptic(r)
        masks = [(gt.segment_ids == s.id) for s in segs]
        fp = np.zeros(gt.image_size, bool)
        fp[FP_WINDOW] = True
        assert not np.isin(gt.segment_ids[fp], [s.id for s in gt.segments if s.is_thing]).any()
        masks.append(fp)
        labels = [s.class_index for s in segs] + [car]
        scores = [pool.pop() for _ in labels]
        inst = Instances(
            boxes=np.zeros((len(labels), 4), np.float32),
            scores=np.array(scores, np.float32),
            labels=np.array(labels),
            image_size=gt.image_size,
            mask_image=np.stack(masks).astype(np.float32),
        )
        sem = gt.semantic
        prob = np.stack([sem == k for k in range(classes.num_classes)]).astype(np.float32)
        out.append((r.name, r.image_id, inst, SemanticPrediction(prob, gt.image_size)))
    assert not pool
    return out


def _cocoeval(gt_json, results, iou_type):
    """COCOeval stats of ``results`` (a COCO results list) against the file ``gt_json``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    drop = "segmentation" if iou_type == "bbox" else "bbox"  # as detectron2 / InstanceAP
    dts = [{k: v for k, v in d.items() if k != drop} for d in results]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_json))
        ev = COCOeval(coco_gt, coco_gt.loadRes(dts), iouType=iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats[:6]]


@pytest.fixture(scope="module")
def fused_scores(street_canonical, tmp_path_factory):
    split = CanonicalSplit(street_canonical)
    out = tmp_path_factory.mktemp("fused_scores") / "kirillov"
    inputs = _inputs(split, np.random.default_rng(0))
    pans = {name: fuse("kirillov", inst, sem, split.classes, stuff_area=0) for name, _, inst, sem in inputs}
    write_fused(out, split.classes, [(name, image_id, pans[name]) for name, image_id, _, _ in inputs], meta={})
    return split, inputs, pans, out


def test_fusion_keeps_the_instance_scores(fused_scores):
    _, inputs, pans, _ = fused_scores
    for name, _, inst, _ in inputs:
        things = [s for s in pans[name].segments if s.is_thing]
        # every instance is disjoint from the others and fully free: one segment each
        assert len(things) == len(inst)
        assert sorted(s.score for s in things) == sorted(float(v) for v in inst.scores)
        for s in things:
            k = int(np.flatnonzero(inst.scores == np.float32(s.score))[0])
            assert np.array_equal(pans[name].segment_ids == s.id, inst.mask_image[k] > 0)
            assert s.class_index == inst.labels[k]


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools' decode on NumPy 2
def test_written_scores_equal_the_fused_segment_scores(fused_scores):
    from pycocotools import mask as mask_utils

    split, inputs, pans, out = fused_scores
    by_id = {image_id: pans[name] for name, image_id, _, _ in inputs}
    panoptic = json.loads((out / "panoptic.json").read_text())
    assert sorted(a["image_id"] for a in panoptic["annotations"]) == sorted(by_id)
    for ann in panoptic["annotations"]:
        pan = by_id[ann["image_id"]]
        written = {s["id"]: s["score"] for s in ann["segments_info"]}
        assert written == {s.id: s.score for s in pan.segments}
        assert len(set(v for v in written.values() if v != 1.0)) == len([s for s in pan.segments if s.is_thing])

    results = json.loads((out / "instances.json").read_text())
    n_things = sum(1 for p in pans.values() for s in p.segments if s.is_thing and not s.iscrowd)
    assert len(results) == n_things
    seen = set()
    for r in results:
        pan = by_id[r["image_id"]]
        mask = mask_utils.decode(r["segmentation"]).astype(bool)
        sid = int(np.unique(pan.segment_ids[mask])[0])
        assert np.array_equal(mask, pan.segment_ids == sid)  # the result is exactly segment sid
        seg = next(s for s in pan.segments if s.id == sid)
        assert r["score"] == seg.score
        assert r["category_id"] == split.classes.ids[seg.class_index]
        seen.add((r["image_id"], sid))
    assert len(seen) == n_things


def test_ap_after_fusion_is_cocoeval_on_the_written_instances(fused_scores, street_canonical, tmp_path):
    _, _, _, out = fused_scores
    state = evaluate_fused(street_canonical, out, None, {})
    write_json(tmp_path / "s.json", state)
    m = gather_states([str(tmp_path / "s.json")], {})["metrics"]
    results = json.loads((out / "instances.json").read_text())
    gt_json = street_canonical / "instances.json"
    keys = ("ap", "ap50", "ap75", "aps", "apm", "apl")
    for iou_type, suffix in (("segm", "_mask"), ("bbox", "_box")):
        direct = _cocoeval(gt_json, results, iou_type)
        for key, v in zip(keys, direct, strict=True):
            ours = m[f"{key}{suffix}"]
            assert (ours is None) if v < 0 else ours == pytest.approx(v, abs=1e-12), (key, suffix)
        # the case depends on the scores: with every score 1.0 the AP would differ
        ones = _cocoeval(gt_json, [{**r, "score": 1.0} for r in results], iou_type)
        assert abs(ones[0] - direct[0]) > 0.01, iou_type
    assert 0.2 < m["ap_mask"] < 0.99  # false positives above true positives cost precision
