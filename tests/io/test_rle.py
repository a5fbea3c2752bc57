"""COCO RLE without full-frame masks (`segfusion.io.rle`, issue 13 item 5): pycocotools'
``mask.encode`` is the reference, and every encoder that used one full-frame mask per
segment (fused instance results, canonical instance RLEs, AP's segment RLEs, evaluate's and
export's detection RLEs) must give today's bytes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from segfusion.datasets.canonical import _instance_rles
from segfusion.inference.paste import instance_crop, masks_to_image
from segfusion.io.coco_results import coco_result
from segfusion.io.fused import fused_instance_results, write_fused
from segfusion.io.rle import compress, crop_rle, crop_rle_counts, segment_rle_counts, segment_rles
from segfusion.metrics.instance import _rle_json, panoptic_segment_rles
from segfusion.types import ClassInfo, Instances, Panoptic


def _encode(mask: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def _sizes(rng, n):
    """Frame sizes: empty (0 × w, h × 0), one pixel, one row / column, and random."""
    fixed = [(0, 0), (0, 5), (4, 0), (1, 1), (1, 9), (9, 1)]
    return fixed + [tuple(int(v) for v in rng.integers(1, 33, 2)) for _ in range(n)]


def test_crop_rle_matches_pycocotools_encode_on_random_masks() -> None:
    rng = np.random.default_rng(0)
    for h, w in _sizes(rng, 600):
        full = rng.random((h, w)) < rng.choice([0.0, 0.05, 0.5, 0.95, 1.0])
        boxes = [(0, h, 0, w)] + [
            (*sorted(rng.integers(0, h + 1, 2)), *sorted(rng.integers(0, w + 1, 2))) for _ in range(3)
        ]
        for y0, y1, x0, x1 in boxes:
            ref = np.zeros((h, w), bool)
            ref[y0:y1, x0:x1] = full[y0:y1, x0:x1]
            got = crop_rle(full[y0:y1, x0:x1], (y0, x0), (h, w))
            assert got == _encode(ref), (h, w, y0, y1, x0, x1)
            # and the uncompressed counts are pycocotools' own (frPyObjects / decode round trip)
            counts = crop_rle_counts(full[y0:y1, x0:x1], (y0, x0), (h, w))
            assert int(counts.sum()) == h * w
            again = mask_utils.frPyObjects({"size": [h, w], "counts": counts.tolist()}, h, w)
            assert again == got
            if h * w:
                np.testing.assert_array_equal(mask_utils.decode(got), ref)


def test_crop_rle_joins_runs_across_columns_and_rejects_crops_outside() -> None:
    """A run reaching the bottom row continues in the next column when it starts at row 0."""
    m = np.ones((3, 2), bool)
    m[1, 0] = False
    assert crop_rle(m, (0, 1), (3, 4)) == _encode(np.pad(m, ((0, 0), (1, 1))))
    with pytest.raises(ValueError, match="outside"):
        crop_rle(m, (1, 0), (3, 4))


def test_segment_rles_match_pycocotools_encode_on_random_maps() -> None:
    rng = np.random.default_rng(1)
    for h, w in _sizes(rng, 400):
        k = int(rng.integers(1, 12))
        seg = rng.integers(0, k, (h, w)).astype(np.int32)
        if rng.random() < 0.5:  # blocky maps: long runs crossing column ends
            seg = np.repeat(seg, 3, axis=0)[:h]
        ids = list(range(-1, k + 2))  # absent ids get the empty mask
        rles = segment_rles(seg, ids)
        assert list(rles) == ids
        for i in ids:
            assert rles[i] == _encode(seg == i), (h, w, i)
        assert {i: c.tolist() for i, c in segment_rle_counts(seg, ids).items()} == {i: _counts_of(seg == i) for i in ids}


def _counts_of(mask: np.ndarray) -> list[int]:
    """Uncompressed counts the plain way: Fortran-order run lengths starting with zeros."""
    flat = mask.ravel(order="F").astype(np.int8)
    if flat.size == 0:
        return [0]
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate(([0], edges, [flat.size]))).tolist()
    return ([0] + runs) if flat[0] else runs


# ----------------------------------------------------------------- today's encoders, byte for byte

CLASSES = ClassInfo(
    names=("road", "sky", "car", "person"),
    is_thing=(False, False, True, True),
    category=("flat", "sky", "vehicle", "human"),
    ids=(7, 23, 26, 24),
    colors=((1, 0, 0), (2, 0, 0), (3, 0, 0), (4, 0, 0)),
)


def random_panoptic(rng, h: int, w: int, n: int) -> Panoptic:
    """Many segments: random rectangles (many touching the borders) and blobs over stuff,
    some crowd, some void; ``n = 0`` with a void map is an empty image."""
    seg = np.zeros((h, w), np.int32)
    info: dict[int, tuple[int, bool, bool, float]] = {}
    if n:
        seg[:] = 1
        seg[: h // 3] = 2
        info = {1: (0, False, False, 1.0), 2: (1, False, False, 1.0)}
    for k in range(3, n + 3):
        y0, x0 = int(rng.integers(-h // 4, h)), int(rng.integers(-w // 4, w))
        y1, x1 = y0 + int(rng.integers(1, h // 2 + 2)), x0 + int(rng.integers(1, w // 2 + 2))
        region = np.zeros((h, w), bool)
        region[max(y0, 0) : y1, max(x0, 0) : x1] = True
        if rng.random() < 0.3:
            region &= rng.random((h, w)) < 0.6  # scattered pixels: many runs
        seg[region] = k
        info[k] = (int(rng.integers(2, 4)), True, bool(rng.random() < 0.1), float(rng.random()))
    if n:
        seg[rng.random((h, w)) < 0.02] = 0  # void pixels
    return Panoptic.from_segment_map(seg, info)


def _old_fused_instance_results(image_id: int, pan: Panoptic, classes: ClassInfo) -> list[dict]:
    """Today's path (before issue 13): one full-frame mask and one encode per segment."""
    return [
        coco_result(image_id, classes.ids[s.class_index], pan.segment_ids == s.id, s.score, s.bbox)
        for s in pan.segments
        if s.is_thing and not s.iscrowd
    ]


def _panoptics(seed: int = 2):
    rng = np.random.default_rng(seed)
    out = [("empty", random_panoptic(rng, 7, 9, 0))]
    for k in range(40):
        h, w = (int(v) for v in rng.integers(1, 60, 2))
        out.append((f"img{k}", random_panoptic(rng, h, w, int(rng.integers(1, 40)))))
    out.append(("big", random_panoptic(rng, 256, 512, 150)))
    return out


def test_fused_instance_results_are_todays_bytes() -> None:
    for image_id, (_, pan) in enumerate(_panoptics()):
        new = fused_instance_results(image_id, pan, CLASSES)
        old = _old_fused_instance_results(image_id, pan, CLASSES)
        assert json.dumps(new) == json.dumps(old)


def test_write_fused_is_byte_identical_to_the_full_frame_path(tmp_path, monkeypatch) -> None:
    items = [(name, k, pan) for k, (name, pan) in enumerate(_panoptics(3))]
    write_fused(tmp_path / "new", CLASSES, items, meta={"m": 1})
    monkeypatch.setattr("segfusion.io.fused.fused_instance_results", _old_fused_instance_results)
    write_fused(tmp_path / "old", CLASSES, items, meta={"m": 1})
    new = sorted(p.relative_to(tmp_path / "new") for p in (tmp_path / "new").rglob("*") if p.is_file())
    old = sorted(p.relative_to(tmp_path / "old") for p in (tmp_path / "old").rglob("*") if p.is_file())
    assert new == old and len(new) == 3 + 2 * len(items)
    for rel in new:
        assert (tmp_path / "new" / rel).read_bytes() == (tmp_path / "old" / rel).read_bytes(), rel
    assert json.loads((tmp_path / "new" / "instances.json").read_text())  # not vacuous


def test_canonical_and_ap_segment_rles_are_todays() -> None:
    for _, pan in _panoptics(4):
        old = {}
        for s in pan.segments:
            if s.is_thing:
                rle = _encode(pan.segment_ids == s.id)
                rle["counts"] = rle["counts"].decode("ascii")
                old[int(s.id)] = rle
        assert json.dumps(_instance_rles(pan)) == json.dumps(old)
        ids = [s.id for s in pan.segments][::-1]
        assert panoptic_segment_rles(pan, ids) == [_rle_json(_encode(pan.segment_ids == i)) for i in ids]


@pytest.mark.parametrize("form", ["mask_prob", "mask_image"])
def test_detection_rles_from_crops_are_the_full_resolution_ones(form: str) -> None:
    """evaluate's path (`_evaluate_cache`): per detection from `instance_crop`, not
    `masks_to_image` of all detections; boxes crossing the borders included."""
    rng = np.random.default_rng(5)
    for _ in range(20):
        h, w = (int(v) for v in rng.integers(5, 70, 2))
        n = int(rng.integers(0, 12))
        xy = rng.uniform(-10, [w + 5, h + 5], (n, 2))
        wh = rng.uniform(0.3, [w, h], (n, 2))
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        kw = (
            {"mask_prob": rng.random((n, 28, 28)).astype(np.float32)}
            if form == "mask_prob"
            else {"mask_image": (rng.random((n, h, w)) * (rng.random((n, 1, 1)) < 0.8)).astype(np.float32)}
        )
        inst = Instances(boxes=boxes, scores=rng.random(n).astype(np.float32), labels=np.full(n, 2), image_size=(h, w), **kw)
        old = [_encode(m) for m in masks_to_image(inst, threshold=0.5)] if n else []
        crops = (instance_crop(inst, i) for i in range(n))
        new = compress([crop_rle_counts(c >= 0.5, off, inst.image_size) for c, off in crops], inst.image_size)
        assert new == old
