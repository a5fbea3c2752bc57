"""Sharded prediction: K shards give exactly the metrics of one, and empty shards work end to end.

`write_cache` builds a cache by hand from realistic random predictions on the ground truth
of a canonical split (no training): every non-crowd thing segment becomes a detection with
a jittered box, a noisy 28×28 mask sampled from its ground-truth mask, a random score and
(mostly) its own class; a few false positives are added; the semantic probabilities are a
noisy softmax around the ground-truth one-hot at stride 4. The predictions of an image
depend only on its id and the seed, so any sharding sees the same per-image predictions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segfusion.datasets.canonical import CanonicalSplit, ImageRecord
from segfusion.evaluation import evaluate_fused, gather_states
from segfusion.fusion import fuse
from segfusion.inference.cache import CacheReader, CacheWriter
from segfusion.inference.shards import shard_records
from segfusion.io.atomic import write_json
from segfusion.io.fused import read_fused, write_fused
from segfusion.types import IGNORE_INDEX

FUSION_PARAMS = {"kirillov": {"stuff_area_fraction": 0.002}, "seamless": {"stuff_area_fraction": 0.002}, "semantic": {}}


def random_prediction(split: CanonicalSplit, rec: ImageRecord, seed: int = 0) -> dict:
    """Keyword arguments of `CacheWriter.add` for image ``rec`` (see the module docstring)."""
    rng = np.random.default_rng([seed, rec.image_id])
    classes = split.classes
    gt = split.panoptic(rec)
    height, width = gt.image_size
    things = classes.thing_indices
    boxes, scores, labels, masks = [], [], [], []
    segments = [s for s in gt.segments if s.is_thing and not s.iscrowd]
    for s in segments:
        x, y, w, h = s.bbox
        box = np.array([x, y, x + w, y + h], np.float64) + rng.normal(0, 1.5, 4)
        # sample the ground-truth mask on the 28x28 grid of the jittered box, then add noise
        gx = box[0] + (np.arange(28) + 0.5) / 28 * (box[2] - box[0])
        gy = box[1] + (np.arange(28) + 0.5) / 28 * (box[3] - box[1])
        cols = np.clip(np.floor(gx).astype(int), 0, width - 1)
        rows = np.clip(np.floor(gy).astype(int), 0, height - 1)
        m = (gt.segment_ids[np.ix_(rows, cols)] == s.id).astype(np.float32)
        masks.append(np.clip(0.85 * m + 0.08 + rng.normal(0, 0.12, (28, 28)), 0, 1))
        boxes.append(box)
        scores.append(rng.uniform(0.3, 1.0))
        labels.append(s.class_index if rng.random() < 0.85 else int(rng.choice(things)))
    for _ in range(int(rng.integers(0, 3))):  # false positives: random blobs
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        bw, bh = rng.uniform(4, width / 3), rng.uniform(4, height / 3)
        boxes.append(np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]))
        yy, xx = np.mgrid[0:28, 0:28]
        masks.append(np.clip(1.2 - ((yy - 13.5) ** 2 + (xx - 13.5) ** 2) / 150 + rng.normal(0, 0.1, (28, 28)), 0, 1))
        scores.append(rng.uniform(0.0, 0.9))
        labels.append(int(rng.choice(things)))
    n = len(boxes)
    # semantic: softmax of a noisy, blurred one-hot at stride 4 (void = no evidence)
    sem = gt.semantic
    h4, w4 = -(-height // 4), -(-width // 4)
    pad = np.full((h4 * 4, w4 * 4), IGNORE_INDEX, np.uint8)
    pad[:height, :width] = sem
    onehot = (np.arange(classes.num_classes)[:, None, None] == pad[None]).astype(np.float32)
    onehot = onehot.reshape(classes.num_classes, h4, 4, w4, 4).mean(axis=(2, 4))
    logits = 5.0 * onehot + rng.normal(0, 1.0, onehot.shape).astype(np.float32)
    prob = np.exp(logits - logits.max(0, keepdims=True))
    prob /= prob.sum(0, keepdims=True)
    gt_boxes = np.array([[s.bbox[0], s.bbox[1], s.bbox[0] + s.bbox[2], s.bbox[1] + s.bbox[3]] for s in segments], np.float32).reshape(-1, 4)
    proposals = np.concatenate([gt_boxes + rng.normal(0, 3, gt_boxes.shape), rng.uniform(0, width, (5, 4))]).astype(np.float32)
    return dict(
        image_size=(height, width),
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        scores=np.asarray(scores, np.float32),
        labels=np.asarray(labels, np.int64),
        mask_prob=np.asarray(masks, np.float32).reshape(n, 28, 28),
        semantic_prob=prob.astype(np.float32),
        proposals=proposals,
        forward_seconds=float(rng.uniform(0.05, 0.5)),
    )


def write_cache(split: CanonicalSplit, records: list[ImageRecord], path: Path, seed: int = 0) -> Path:
    """A hand-made cache of ``records`` with `random_prediction` outputs."""
    with CacheWriter(path, "hand_made", f"seed{seed}", split.classes, {"test": True}) as w:
        for rec in records:
            w.add(rec.name, rec.image_id, **random_prediction(split, rec, seed))
    return path


def fuse_cache(cache: Path, out: Path, method: str) -> Path:
    """Fuse every image of ``cache`` with ``method`` into the fused folder ``out`` (no timings in meta)."""
    with CacheReader(cache) as reader:
        items = ((c.name, c.image_id, fuse(method, c.instances, c.semantic, reader.classes, **FUSION_PARAMS[method])) for c in reader)
        write_fused(out, reader.classes, items, meta={"method": method})
    return out


def metrics_of(data: Path, caches: list[Path], tmp: Path, method: str) -> dict:
    """Fuse and evaluate each cache (a shard), gather them; the gathered result."""
    states = []
    for i, cache in enumerate(caches):
        fused = fuse_cache(cache, tmp / f"fused-{method}-{i}", method)
        state = tmp / f"state-{method}-{i}.json"
        write_json(state, evaluate_fused(data, fused, cache, {}))
        states.append(state)
    return gather_states(states, {"method": method}, resamples=200)


def assert_same_metrics(got: dict, expected: dict) -> None:
    """Equal metric dicts, every key exactly (diagnostics are merged with math.fsum over images)."""
    assert got == expected


def _records(ids: list[int]) -> list[ImageRecord]:
    return [ImageRecord(image_id=i, name=f"im{i}", image_path=Path("/nowhere"), height=4, width=4) for i in ids]


@pytest.mark.parametrize("n", [0, 1, 5, 6, 7, 20])
@pytest.mark.parametrize("k", [1, 2, 3, 6, 8])
def test_shard_records_cover_every_image_once_in_id_order(n: int, k: int) -> None:
    ids = list(np.random.default_rng(n).permutation(np.arange(100, 100 + 3 * n, 3)))
    records = _records([int(i) for i in ids])
    shards = [shard_records(records, i, k) for i in range(k)]
    flat = [r.image_id for s in shards for r in s]
    assert flat == sorted(r.image_id for r in records)  # each once, in id order, shards contiguous
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    if k > n:
        assert sizes.count(0) >= k - n


def test_shard_index_is_checked() -> None:
    with pytest.raises(ValueError, match="shard index 3 outside 0..2"):
        shard_records(_records([1, 2]), 3, 3)


def test_three_shards_give_the_metrics_of_one(street_canonical, tmp_path) -> None:
    split = CanonicalSplit(street_canonical)
    whole = write_cache(split, shard_records(split.images, 0, 1), tmp_path / "whole.h5")
    parts = [write_cache(split, shard_records(split.images, i, 3), tmp_path / f"part{i}.h5") for i in range(3)]
    assert sum(len(CacheReader(p)) for p in parts) == len(split.images) == 6
    for method in ("kirillov", "semantic"):
        one = metrics_of(street_canonical, [whole], tmp_path / "one", method)
        three = metrics_of(street_canonical, parts, tmp_path / "three", method)
        m = one["metrics"]
        assert 0 < m["pq"] < 1 and 0 < m["miou"] < 1 and m["n_images"] == 6
        assert m["rpn_recall"] is not None and m["detections_per_image"] > 0 and m["forward_ms_per_image"] > 0
        assert_same_metrics(three["metrics"], m)
        assert three["details"]["per_image"] == one["details"]["per_image"]


def test_more_shards_than_images_work_end_to_end(street_canonical, tmp_path) -> None:
    split = CanonicalSplit(street_canonical)
    k = 8
    parts = [write_cache(split, shard_records(split.images, i, k), tmp_path / f"part{i}.h5") for i in range(k)]
    empty = [p for p in parts if len(CacheReader(p)) == 0]
    assert len(empty) == k - len(split.images)
    with CacheReader(empty[0]) as r:
        assert r.names == [] and list(r) == []
    fused = fuse_cache(empty[0], tmp_path / "empty-fused", "kirillov")
    assert list(read_fused(fused)) == []
    state = evaluate_fused(street_canonical, fused, empty[0], {})
    assert state["n_images"] == 0
    one = metrics_of(street_canonical, [write_cache(split, split.images, tmp_path / "whole.h5")], tmp_path / "one", "kirillov")
    many = metrics_of(street_canonical, parts, tmp_path / "many", "kirillov")
    assert_same_metrics(many["metrics"], one["metrics"])
