"""Evaluation glue: ground truth fed as the prediction scores perfectly, and shards merge exactly."""

import json

import numpy as np
import pytest

from segfusion.cli import main
from segfusion.datasets.canonical import CanonicalSplit
from segfusion.evaluation import evaluate_fused, gather_states
from segfusion.io.atomic import write_json
from segfusion.io.fused import read_fused, write_fused
from segfusion.metrics.statistics import most_frequent_class_miou, rpn_recall


def _gt_as_fused(split_dir, out, names=None):
    split = CanonicalSplit(split_dir)
    recs = [r for r in split.images if names is None or r.name in names]
    write_fused(out, split.classes, ((r.name, r.image_id, split.panoptic(r)) for r in recs), meta={"method": "ground_truth"})


def test_ground_truth_as_prediction_is_perfect(street_canonical, tmp_path):
    _gt_as_fused(street_canonical, tmp_path / "fused")
    state = evaluate_fused(street_canonical, tmp_path / "fused", None, {})
    write_json(tmp_path / "s.json", state)
    m = gather_states([tmp_path / "s.json"], {"model": "gt"})["metrics"]
    assert m["n_images"] == 6
    assert m["pq"] == pytest.approx(1.0) and m["miou"] == pytest.approx(1.0) and m["pq_dagger"] == pytest.approx(1.0)
    assert m["ap_mask"] == pytest.approx(1.0, abs=1e-6)
    assert 0 < m["miou_most_frequent_class"] < 0.5


def test_shards_merge_to_the_whole(street_canonical, tmp_path):
    split = CanonicalSplit(street_canonical)
    names = [r.name for r in split.images]
    # A deliberately imperfect prediction: every image's first segment becomes void.
    def degraded(recs):
        from segfusion.types import Panoptic

        for r in recs:
            p = split.panoptic(r)
            ids = p.segment_ids.copy()
            ids[ids == p.segments[0].id] = 0
            yield r.name, r.image_id, Panoptic(ids, p.segments[1:])

    write_fused(tmp_path / "whole", split.classes, degraded(split.images), meta={})
    write_fused(tmp_path / "a", split.classes, degraded(split.images[:2]), meta={})
    write_fused(tmp_path / "b", split.classes, degraded(split.images[2:]), meta={})
    for name in ("whole", "a", "b"):
        write_json(tmp_path / f"{name}.json", evaluate_fused(street_canonical, tmp_path / name, None, {}))
    whole = gather_states([tmp_path / "whole.json"], {})["metrics"]
    parts = gather_states([tmp_path / "a.json", tmp_path / "b.json"], {})["metrics"]
    assert whole == parts and whole["pq"] < 1.0 and len(names) == 6


def test_evaluate_rejects_size_mismatch_naming_the_image(street_canonical, tmp_path):
    split = CanonicalSplit(street_canonical)
    from segfusion.types import Panoptic

    r = split.images[0]
    p = split.panoptic(r)
    small = Panoptic(p.segment_ids[:-4], ())
    write_fused(tmp_path / "f", split.classes, [(r.name, r.image_id, Panoptic.from_segment_map(small.segment_ids, {s.id: (s.class_index, s.is_thing, s.iscrowd, 1.0) for s in p.segments}))], meta={})
    with pytest.raises(ValueError, match=r.name):
        evaluate_fused(street_canonical, tmp_path / "f", None, {})
    rc = main(["evaluate", "--data", str(street_canonical), "--fused", str(tmp_path / "f"), "--out", str(tmp_path / "s.json")])
    assert rc == 1 and not (tmp_path / "s.json").exists()


def test_fused_roundtrip(street_canonical, tmp_path):
    _gt_as_fused(street_canonical, tmp_path / "fused")
    split = CanonicalSplit(street_canonical)
    for name, _, pan in read_fused(tmp_path / "fused"):
        gt = split.panoptic(split.record(name))
        assert np.array_equal(pan.segment_ids, gt.segment_ids) and pan.segments == gt.segments
    results = json.loads((tmp_path / "fused" / "instances.json").read_text())
    assert results and all(r["category_id"] in (24, 25, 26, 27, 28, 33) for r in results)


def test_rpn_recall_and_trivial_baseline():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    assert rpn_recall(gt, np.array([[0, 0, 10, 11]], float)) == 0.5
    assert rpn_recall(np.zeros((0, 4)), gt) is None
    cm = np.zeros((3, 4), np.int64)
    cm[0, 0], cm[1, 1] = 30, 10  # class 0: 75 % of pixels; class 2 absent
    assert most_frequent_class_miou(cm) == pytest.approx(0.75 / 2)


def _iou(a, b):
    """IoU of two x0, y0, x1, y1 boxes, by hand."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_rpn_recall_counts_proposals_from_iou_one_half():
    gt = np.array([[0, 0, 10, 10], [100, 100, 110, 110]], float)
    proposals = np.array([[0, 0, 10, 6], [100, 100, 110, 104]], float)  # IoU 0.6 with gt 0, 0.4 with gt 1
    assert _iou(gt[0], proposals[0]) == pytest.approx(0.6) and _iou(gt[1], proposals[1]) == pytest.approx(0.4)
    assert rpn_recall(gt, proposals) == 0.5  # default IoU 0.5: the 0.6 proposal counts, the 0.4 one not
    assert rpn_recall(gt, proposals, iou=0.5) == 0.5
    assert rpn_recall(gt, proposals, iou=0.6) == 0.5  # ">=": a proposal at exactly the IoU counts
    assert rpn_recall(gt, proposals, iou=0.7) == 0.0
    assert rpn_recall(gt, proposals, iou=0.4) == 1.0
    assert rpn_recall(gt, proposals[1:]) == 0.0  # the 0.4 proposal alone covers nothing
    assert rpn_recall(gt, np.zeros((0, 4))) == 0.0


def test_evaluate_reports_rpn_recall_at_iou_one_half(street_canonical, tmp_path):
    """Proposals shifted along x by w / 4 (IoU 0.6) for even GT boxes, by 3 w / 7 (IoU 0.4) for odd ones."""
    from segfusion.inference.cache import CacheWriter

    split = CanonicalSplit(street_canonical)
    recs = sorted(split.images, key=lambda r: r.image_id)
    _gt_as_fused(street_canonical, tmp_path / "fused")
    c = split.classes.num_classes
    expected = {0.5: [], 0.7: []}
    with CacheWriter(tmp_path / "c.h5", "toy", "h", split.classes) as w:
        for r in recs:
            things = [s for s in split.panoptic(r).segments if s.is_thing and not s.iscrowd]
            gt = [(x, y, x + bw, y + bh) for x, y, bw, bh in (s.bbox for s in things)]
            props = []
            for k, (x0, y0, x1, y1) in enumerate(gt):
                d = (x1 - x0) / 4 if k % 2 == 0 else 3 * (x1 - x0) / 7
                props.append((x0 + d, y0, x1 + d, y1))
            props = np.array(props, np.float64).reshape(-1, 4)
            stored = props.astype(np.float16).astype(np.float64)  # the cache keeps proposals as float16
            best = [max((_iou(g, p) for p in stored), default=0.0) for g in gt]
            for t in expected:
                expected[t].append(sum(b >= t for b in best) / len(gt))
            prob = np.full((c, 16, 32), 1.0 / c, np.float32)
            empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros((0, 28, 28), np.float32))
            w.add(r.name, r.image_id, (r.height, r.width), *empty, prob, proposals=props)
    assert expected[0.5] != expected[0.7] and 0 < min(expected[0.5])  # the case tells 0.5 from 0.7
    state = evaluate_fused(street_canonical, tmp_path / "fused", tmp_path / "c.h5", {})
    assert state["diagnostics"]["rpn_recall_values"] == pytest.approx(expected[0.5], abs=1e-12)
    write_json(tmp_path / "s.json", state)
    m = gather_states([tmp_path / "s.json"], {})["metrics"]
    assert m["rpn_recall"] == pytest.approx(sum(expected[0.5]) / len(recs), abs=1e-12)
