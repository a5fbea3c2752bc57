"""Evaluate -> gather: per-image lists, bootstrap intervals, timings and model cost, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from segfusion.datasets.canonical import CanonicalSplit, DatasetError
from segfusion.evaluation import (
    UNIT_INTERVAL_KEYS,
    _check_unit_interval,
    evaluate_fused,
    gather_states,
)
from segfusion.io.atomic import read_json, write_json
from segfusion.io.fused import write_fused
from segfusion.metrics.statistics import bootstrap_ci, dense_per_image, miou_from_sums, pq_from_sums
from segfusion.types import Panoptic


def _degraded(split, recs, rng=None):
    """Every image loses its first segment (to void); with ``rng``, segment classes are shuffled too."""
    for r in recs:
        p = split.panoptic(r)
        ids = p.segment_ids.copy()
        ids[ids == p.segments[0].id] = 0
        segs = p.segments[1:]
        if rng is not None:
            from dataclasses import replace

            things = split.classes.thing_indices.tolist()
            stuff = split.classes.stuff_indices.tolist()
            segs = tuple(replace(s, class_index=int(rng.choice(things if s.is_thing else stuff))) for s in segs)
        yield r.name, r.image_id, Panoptic(ids, segs)


def _states(tmp_path, split_dir, bounds, rng_seed=None, meta=None):
    """Write fused shards cut at ``bounds`` and evaluate each; returns the state paths."""
    split = CanonicalSplit(split_dir)
    recs = sorted(split.images, key=lambda r: r.image_id)
    paths = []
    for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        rng = None if rng_seed is None else np.random.default_rng(rng_seed + k)
        fused = tmp_path / f"fused{len(bounds)}_{k}"
        write_fused(fused, split.classes, _degraded(split, recs[a:b], rng), meta=(meta or [{}] * len(bounds))[k])
        state = evaluate_fused(split_dir, fused, None, {})
        paths.append(tmp_path / f"state{len(bounds)}_{k}.json")
        write_json(paths[-1], state)
    return paths, recs


def test_per_image_lists_survive_gather_of_several_shards(street_canonical, tmp_path):
    whole, recs = _states(tmp_path, street_canonical, [0, 6])
    parts, _ = _states(tmp_path, street_canonical, [0, 2, 3, 6])
    g1 = gather_states([str(p) for p in whole], {"model": "x"})
    g3 = gather_states([str(p) for p in parts], {"model": "x"})
    per1, per3 = g1["details"]["per_image"], g3["details"]["per_image"]
    assert [e["image"] for e in per3] == [r.name for r in recs]
    assert per1 == per3
    assert all(0.0 <= e["pq"] <= 1.0 and 0.0 <= e["miou"] <= 1.0 for e in per3)
    assert any(e["pq"] < 1.0 for e in per3)
    # the intervals are computed from the concatenated per-image statistics: identical
    assert g1["metrics"] == g3["metrics"]


def _direct_bootstrap(stats, resamples, seed, percentiles=(2.5, 97.5)):
    """The percentile bootstrap of PQ and mIoU recomputed with plain loops (no segfusion code).

    Same resampling as documented by `bootstrap_ci`: ``default_rng(seed).integers(0, n,
    size=(resamples, n))``; per resample the images' per-class counts are summed and PQ
    (mean over classes with TP + FP + FN > 0 of iou_sum / (TP + FP/2 + FN/2)) and mIoU (mean
    over classes with GT + P > 0 of TP / (GT + P - TP)) are computed from the sums.
    """
    n = len(stats["images"])
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    values = {"pq": [], "miou": []}
    for draw in idx:
        pan, sem = {}, {}
        for i in draw:
            for c, tp, fp, fn, iou in stats["panoptic"][i]:
                t = pan.setdefault(int(c), [0.0, 0.0, 0.0, 0.0])
                t[0], t[1], t[2], t[3] = t[0] + tp, t[1] + fp, t[2] + fn, t[3] + iou
            for c, tp, gt, pred in stats["semantic"][i]:
                t = sem.setdefault(int(c), [0, 0, 0])
                t[0], t[1], t[2] = t[0] + tp, t[1] + gt, t[2] + pred
        pq = [iou / (tp + fp / 2 + fn / 2) for tp, fp, fn, iou in pan.values() if tp + fp + fn > 0]
        miou = [tp / (gt + pred - tp) for tp, gt, pred in sem.values() if gt + pred > 0]
        if pq:
            values["pq"].append(sum(pq) / len(pq))
        if miou:
            values["miou"].append(sum(miou) / len(miou))
    return {k: [float(v) for v in np.percentile(values[k], percentiles)] for k in values}


def test_bootstrap_ci_contains_the_point_estimate_and_is_deterministic(street_canonical, tmp_path):
    paths, _ = _states(tmp_path, street_canonical, [0, 3, 6], rng_seed=1)
    a = gather_states([str(p) for p in paths], {})
    b = gather_states([str(p) for p in paths], {})
    m = a["metrics"]
    assert m["pq_ci"] == b["metrics"]["pq_ci"] and m["miou_ci"] == b["metrics"]["miou_ci"]
    assert m["pq_ci"][0] <= m["pq"] <= m["pq_ci"][1]
    assert m["miou_ci"][0] <= m["miou"] <= m["miou_ci"][1]
    assert m["pq_ci"][0] < m["pq_ci"][1]  # imperfect predictions on 6 images: a real interval
    other = gather_states([str(p) for p in paths], {}, seed=7)["metrics"]
    assert other["pq_ci"] != m["pq_ci"] and other["pq_ci"][0] <= m["pq"] <= other["pq_ci"][1]
    assert a["details"]["bootstrap"]["resamples"] == 1000
    # the values: the 95 % percentile interval of the shards' concatenated per-image statistics
    parts = [read_json(p)["per_image_stats"] for p in paths]
    stats = {key: [row for p in parts for row in p[key]] for key in ("images", "panoptic", "semantic")}
    for seed, got in ((a["details"]["bootstrap"]["seed"], m), (7, other)):
        want = _direct_bootstrap(stats, 1000, seed)
        assert got["pq_ci"] == pytest.approx(want["pq"], abs=1e-12), seed
        assert got["miou_ci"] == pytest.approx(want["miou"], abs=1e-12), seed


def test_bootstrap_ci_is_the_direct_percentile_interval(street_canonical, tmp_path):
    paths, _ = _states(tmp_path, street_canonical, [0, 6], rng_seed=5)
    stats = read_json(paths[0])["per_image_stats"]
    assert len(stats["images"]) == 6
    want = _direct_bootstrap(stats, 500, 123)
    got = bootstrap_ci(stats, resamples=500, seed=123)
    assert got["pq"] == pytest.approx(want["pq"], abs=1e-12)
    assert got["miou"] == pytest.approx(want["miou"], abs=1e-12)
    assert got == bootstrap_ci(stats, resamples=500, seed=123, level=0.95)  # the default level is 95 %
    # sensitive to the level: a halved level (47.5 %) is a much narrower, different interval
    half = bootstrap_ci(stats, resamples=500, seed=123, level=0.475)
    assert half["pq"] == pytest.approx(_direct_bootstrap(stats, 500, 123, (26.25, 73.75))["pq"], abs=1e-12)
    for key in ("pq", "miou"):
        assert want[key][0] < want[key][1]
        assert half[key][1] - half[key][0] < 0.8 * (want[key][1] - want[key][0]), key
    # other levels follow ((1 - level) / 2, (1 + level) / 2)
    got = bootstrap_ci(stats, resamples=500, seed=123, level=0.8)
    want = _direct_bootstrap(stats, 500, 123, (10, 90))
    assert got["pq"] == pytest.approx(want["pq"], abs=1e-12) and got["miou"] == pytest.approx(want["miou"], abs=1e-12)


def test_sums_of_per_image_statistics_reproduce_the_point_estimates(street_canonical, tmp_path):
    paths, _ = _states(tmp_path, street_canonical, [0, 2, 6], rng_seed=3)
    m = gather_states([str(p) for p in paths], {})["metrics"]
    stats = [read_json(p)["per_image_stats"] for p in paths]
    c = stats[0]["num_classes"]
    pan = np.concatenate([dense_per_image(s["panoptic"], c, 4) for s in stats]).sum(axis=0)
    sem = np.concatenate([dense_per_image(s["semantic"], c, 3) for s in stats]).sum(axis=0)
    assert float(pq_from_sums(pan)) == pytest.approx(m["pq"], abs=1e-12)
    assert float(miou_from_sums(sem)) == pytest.approx(m["miou"], abs=1e-12)


def test_bootstrap_of_a_perfect_prediction_and_of_nothing():
    stats = {"num_classes": 2, "images": ["a", "b"], "semantic": [[[0, 5, 5, 5]], [[1, 3, 3, 3]]],
             "panoptic": [[[0, 1, 0, 0, 1.0]], [[1, 2, 0, 0, 2.0]]]}  # fmt: skip
    assert bootstrap_ci(stats) == {"pq": [1.0, 1.0], "miou": [1.0, 1.0]}
    assert bootstrap_ci({"num_classes": 2, "images": []}) == {"pq": None, "miou": None}
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(stats, level=1.5)


def test_fusion_time_is_weighted_by_images(street_canonical, tmp_path):
    meta = [{"fusion_ms_per_image": 10.0}, {"fusion_ms_per_image": 40.0}]
    paths, _ = _states(tmp_path, street_canonical, [0, 2, 6], meta=meta)
    m = gather_states([str(p) for p in paths], {})["metrics"]
    assert m["fusion_ms_per_image"] == pytest.approx((2 * 10.0 + 4 * 40.0) / 6)


def test_model_cost_flows_from_the_cache_provenance(street_canonical, tmp_path):
    from segfusion.inference.cache import CacheWriter

    split = CanonicalSplit(street_canonical)
    recs = sorted(split.images, key=lambda r: r.image_id)[:2]
    write_fused(tmp_path / "f", split.classes, ((r.name, r.image_id, split.panoptic(r)) for r in recs), meta={"fusion_ms_per_image": 1.5})
    eff = {"parameters": 1234, "flops": 5_000_000, "flops_image_hw": [64, 128]}
    c = split.classes.num_classes
    with CacheWriter(tmp_path / "c.h5", "toy", "h", split.classes, {"efficiency": eff}) as w:
        for r in recs:
            prob = np.full((c, 16, 32), 1.0 / c, np.float32)
            w.add(r.name, r.image_id, (r.height, r.width), np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                  np.zeros(0, np.int64), np.zeros((0, 28, 28), np.float32), prob, forward_seconds=0.02)  # fmt: skip
    write_json(tmp_path / "s.json", evaluate_fused(street_canonical, tmp_path / "f", tmp_path / "c.h5", {}))
    g = gather_states([str(tmp_path / "s.json")], {})
    m = g["metrics"]
    assert m["parameters"] == 1234 and m["flops"] == 5_000_000
    assert m["forward_ms_per_image"] == pytest.approx(20.0) and m["fusion_ms_per_image"] == pytest.approx(1.5)
    assert g["details"]["efficiency"]["flops_image_hw"] == [64, 128]


# --------------------------------------------------------------------------- bad input
def _gt_fused(split_dir, out, n=2):
    split = CanonicalSplit(split_dir)
    recs = sorted(split.images, key=lambda r: r.image_id)[:n]
    write_fused(out, split.classes, ((r.name, r.image_id, split.panoptic(r)) for r in recs), meta={})
    return recs


def test_size_mismatch_names_the_image(street_canonical, tmp_path):
    split = CanonicalSplit(street_canonical)
    r = sorted(split.images, key=lambda r: r.image_id)[0]
    p = split.panoptic(r)
    info = {s.id: (s.class_index, s.is_thing, s.iscrowd, 1.0) for s in p.segments}
    write_fused(tmp_path / "f", split.classes, [(r.name, r.image_id, Panoptic.from_segment_map(p.segment_ids[:, :-8], info))], meta={})
    with pytest.raises(ValueError, match=f"image {r.name}.*differs"):
        evaluate_fused(street_canonical, tmp_path / "f", None, {})


def test_predicted_id_missing_from_its_json_names_the_image(street_canonical, tmp_path):
    recs = _gt_fused(street_canonical, tmp_path / "f")
    data = json.loads((tmp_path / "f" / "panoptic.json").read_text())
    dropped = data["annotations"][1]["segments_info"].pop(0)
    (tmp_path / "f" / "panoptic.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"\[{dropped['id']}\] in image '{recs[1].name}'.*no segment info"):
        evaluate_fused(street_canonical, tmp_path / "f", None, {})


def test_predicted_category_outside_the_class_list_names_the_image(street_canonical, tmp_path):
    recs = _gt_fused(street_canonical, tmp_path / "f")
    data = json.loads((tmp_path / "f" / "panoptic.json").read_text())
    data["annotations"][0]["segments_info"][0]["category_id"] = 9999
    (tmp_path / "f" / "panoptic.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"{recs[0].name}\.png.*category 9999 outside the class list"):
        evaluate_fused(street_canonical, tmp_path / "f", None, {})


@pytest.mark.parametrize("defect", ["missing_id", "bad_category"])
def test_ground_truth_defects_name_the_image(street_canonical, tmp_path, defect):
    gt = tmp_path / "gt"
    shutil.copytree(street_canonical, gt)
    recs = _gt_fused(street_canonical, tmp_path / "f")
    data = json.loads((gt / "panoptic.json").read_text())
    ann = next(a for a in data["annotations"] if a["image_id"] == recs[0].image_id)
    if defect == "missing_id":
        ann["segments_info"].pop(0)
        pattern = rf"{recs[0].name}\.png: ids .* missing from panoptic.json"
    else:
        ann["segments_info"][0]["category_id"] = 9999
        pattern = rf"{recs[0].name}\.png: segment .* category 9999 outside classes.json"
    (gt / "panoptic.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=pattern):
        evaluate_fused(gt, tmp_path / "f", None, {})


def test_metrics_stay_in_the_unit_interval(street_canonical, tmp_path):
    paths, _ = _states(tmp_path, street_canonical, [0, 6], rng_seed=11)
    g = gather_states([str(p) for p in paths], {})
    m = g["metrics"]
    for key in UNIT_INTERVAL_KEYS:
        assert m.get(key) is None or 0.0 <= m[key] <= 1.0, key
    for ci in (m["pq_ci"], m["miou_ci"]):
        assert 0.0 <= ci[0] <= ci[1] <= 1.0
    per_class = g["details"]["semantic"]["iou"] + [v["pq"] for v in g["details"]["panoptic"]["per_class"].values()]
    assert all(v is None or 0.0 <= v <= 1.0 for v in per_class)
    assert m["pq"] < 1.0  # shuffled classes really are wrong
    with pytest.raises(ValueError, match="pq = 1.2 outside"):
        _check_unit_interval({"pq": 1.2}, "test")
    with pytest.raises(ValueError, match="miou_ci"):
        _check_unit_interval({"miou_ci": [0.2, 1.3]}, "test")
