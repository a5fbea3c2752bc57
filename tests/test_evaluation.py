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
