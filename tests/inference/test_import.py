"""`segfusion import-predictions` / `export-predictions`: another system's outputs -> cache.

The round trip (own predictions -> export -> import -> fuse -> evaluate) must reproduce the
original cache's metrics for the fusion methods that only see binarised masks.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from segfusion.cli import main
from segfusion.datasets.canonical import CanonicalSplit
from segfusion.inference.cache import CacheReader
from segfusion.inference.export_predictions import export_predictions
from segfusion.inference.import_predictions import PredictionImportError, import_predictions
from segfusion.inference.shards import shard_records
from segfusion.io.fused import read_fused
from segfusion.io.images import write_png
from tests.inference.test_shards import fuse_cache, metrics_of, write_cache

# Diagnostics that do not travel through COCO results (proposals, network time).
NOT_EXPORTED = ("rpn_recall", "forward_ms_per_image")


@pytest.fixture(scope="module")
def own(street_canonical, tmp_path_factory):
    """A hand-made cache of the split, and its export (via the CLI)."""
    tmp = tmp_path_factory.mktemp("own")
    split = CanonicalSplit(street_canonical)
    cache = write_cache(split, split.images, tmp / "own.h5")
    assert main(["export-predictions", "--cache", str(cache), "--out", str(tmp / "exported")]) == 0
    return cache, tmp / "exported"


def _import(data, exported, out, **kw) -> int:
    args = ["import-predictions", "--data", str(data), "--instances", str(exported / "instances.json"), "--semantic", str(exported / "semantic"), "--out", str(out)]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return main(args)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools under numpy 2
def test_export_writes_coco_results_and_npy(street_canonical, own, tmp_path):
    cache, exported = own
    results = json.loads((exported / "instances.json").read_text())
    stats = export_predictions(cache, tmp_path / "again")
    assert stats == {"images": 6, "detections": len(results)}
    assert (tmp_path / "again" / "instances.json").read_text() == (exported / "instances.json").read_text()
    split = CanonicalSplit(street_canonical)
    with CacheReader(cache) as r:
        assert len(results) == sum(len(d.instances) for d in r.iter_detections()) > 0
        first = r.read(r.names[0])
        entries = [e for e in results if e["image_id"] == first.image_id]
        from pycocotools import mask as mask_utils

        for e, m in zip(entries, first.image_masks(threshold=0.5), strict=True):
            assert e["category_id"] in split.classes.ids and set(e) == {"image_id", "category_id", "segmentation", "score", "bbox"}
            assert np.array_equal(mask_utils.decode(e["segmentation"]).astype(bool), m)
        for name in r.names:
            np.testing.assert_array_equal(np.load(exported / "semantic" / f"{name}.npy"), r.read_semantic(name).prob)


def test_round_trip_reproduces_the_metrics(street_canonical, own, tmp_path):
    cache, exported = own
    imported = tmp_path / "imported.h5"
    assert _import(street_canonical, exported, imported) == 0
    with CacheReader(cache) as a, CacheReader(imported) as b:
        assert a.names == b.names and a.image_ids == b.image_ids and b.model == "imported"
        assert b.provenance["imported_from"]["semantic_format"] == "npy"
        for name in a.names:
            x, y = a.read(name), b.read(name)
            assert y.instances.mask_image is not None and y.proposals is None
            np.testing.assert_array_equal(y.instances.mask_image, x.image_masks(threshold=0.5))
            np.testing.assert_array_equal(y.instances.boxes, x.instances.boxes)
            np.testing.assert_array_equal(y.instances.scores, x.instances.scores)
            np.testing.assert_array_equal(y.instances.labels, x.instances.labels)
            np.testing.assert_array_equal(y.semantic.prob, x.semantic.prob)
    for method in ("kirillov", "seamless", "semantic"):
        before = metrics_of(street_canonical, [cache], tmp_path / "a", method)
        after = metrics_of(street_canonical, [imported], tmp_path / "b", method)
        m, n = before["metrics"], after["metrics"]
        assert 0 < m["pq"] < 1 and m["ap_mask_before_fusion"] > 0
        # proposals and network time do not travel through COCO results
        assert n["rpn_recall"] is None and n["forward_ms_per_image"] == 0 and m["rpn_recall"] is not None
        assert {k: v for k, v in n.items() if k not in NOT_EXPORTED} == {k: v for k, v in m.items() if k not in NOT_EXPORTED}
        for (_, _, p), (_, _, q) in zip(read_fused(tmp_path / "a" / f"fused-{method}-0"), read_fused(tmp_path / "b" / f"fused-{method}-0"), strict=True):
            assert np.array_equal(p.segment_ids, q.segment_ids) and p.segments == q.segments


def test_import_one_shard_and_hash_follows_inputs(street_canonical, own, tmp_path):
    _, exported = own
    split = CanonicalSplit(street_canonical)
    stats = import_predictions(street_canonical, exported / "instances.json", exported / "semantic", tmp_path / "s1.h5", shard=(1, 3))
    with CacheReader(tmp_path / "s1.h5") as r:
        assert r.names == [rec.name for rec in shard_records(split.images, 1, 3)] and stats["images"] == 2
        assert r.config_hash == stats["config_hash"] and len(r.config_hash) == 16
    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    again = import_predictions(street_canonical, copy / "instances.json", copy / "semantic", tmp_path / "s2.h5", shard=(1, 3))
    assert again["config_hash"] == stats["config_hash"]  # same bytes, same hash, wherever they live
    name = split.images[2].name
    np.save(copy / "semantic" / f"{name}.npy", np.load(copy / "semantic" / f"{name}.npy")[:, ::-1].copy())
    changed = import_predictions(street_canonical, copy / "instances.json", copy / "semantic", tmp_path / "s3.h5", shard=(1, 3))
    assert changed["config_hash"] != stats["config_hash"]


def test_label_png_semantic_is_one_hot(street_canonical, own, tmp_path):
    _, exported = own
    split = CanonicalSplit(street_canonical)
    labels = tmp_path / "labels"
    for rec in split.images:
        write_png(labels / f"{rec.name}.png", split.semantic(rec))
    out = tmp_path / "png.h5"
    import_predictions(street_canonical, exported / "instances.json", labels, out, semantic_format="png")
    with CacheReader(out) as r:
        for rec in split.images:
            sem = r.read_semantic(rec.name)
            gt = split.semantic(rec)
            assert sem.prob.shape == (split.classes.num_classes, rec.height, rec.width)
            valid = gt != 255
            assert np.array_equal(sem.prob.argmax(0)[valid], gt[valid])
            assert np.all(sem.prob.max(0)[valid] == 1.0)
            assert np.all(sem.prob[:, ~valid] == 0)  # void: no class at all (not a uniform 1/C)
    fused = fuse_cache(out, tmp_path / "fused", "semantic")
    for name, _, pan in read_fused(fused):
        gt = split.semantic(split.record(name))
        assert np.array_equal(pan.semantic, gt)  # void stays void


def _results(exported):
    return json.loads((exported / "instances.json").read_text())


def _bad_inputs(exported, tmp_path, edit):
    """A copy of the exported inputs with ``edit(results)`` applied to the results list."""
    bad = tmp_path / "bad"
    shutil.copytree(exported, bad)
    results = _results(exported)
    edit(results)
    (bad / "instances.json").write_text(json.dumps(results))
    return bad


def test_import_errors_name_file_image_and_category(street_canonical, own, tmp_path):
    _, exported = own
    split = CanonicalSplit(street_canonical)

    def set_first(**kw):
        return lambda results: results[0].update(kw)

    cases = [
        (set_first(category_id=999), r"instances\.json: result 0 \(image_id \d+\): category_id 999 is not in .*classes\.json"),
        (set_first(category_id=7), r"result 0 \(image_id \d+\): category_id 7 \(road\) is a stuff class"),
        (set_first(image_id=4242), r"result 0: image_id 4242 is not an image of the split"),
        (set_first(score=1.5), r"result 0 \(image_id \d+\): score 1.5 is not in \[0, 1\]"),
        (lambda results: results[1].pop("segmentation"), r"result 1: missing keys \['segmentation'\]"),
        (lambda results: results[0]["segmentation"].update(size=[10, 10]), r"result 0 \(image_id \d+, \w+\): RLE size \[10, 10\] differs from the image size \[64, 128\]"),
        (lambda results: results[0]["segmentation"].update(counts="not an rle"), r"result 0 \(image_id \d+, \w+\): cannot decode segmentation"),
    ]
    for i, (edit, pattern) in enumerate(cases):
        bad = _bad_inputs(exported, tmp_path / str(i), edit)
        with pytest.raises(PredictionImportError, match=pattern):
            import_predictions(street_canonical, bad / "instances.json", bad / "semantic", tmp_path / "x.h5")
        assert not (tmp_path / "x.h5").exists()

    name = split.images[3].name
    bad = _bad_inputs(exported, tmp_path / "sem", lambda r: None)
    (bad / "semantic" / f"{name}.npy").unlink()
    with pytest.raises(PredictionImportError, match=rf"semantic prediction of image {name} \(id \d+\) not found: .*{name}\.npy"):
        import_predictions(street_canonical, bad / "instances.json", bad / "semantic", tmp_path / "x.h5")
    np.save(bad / "semantic" / f"{name}.npy", np.zeros((5, 16, 32), np.float32))
    with pytest.raises(PredictionImportError, match=rf"{name}\.npy: expected \(19, h, w\) class probabilities, got shape \(5, 16, 32\)"):
        import_predictions(street_canonical, bad / "instances.json", bad / "semantic", tmp_path / "x.h5")
    np.save(bad / "semantic" / f"{name}.npy", np.full((19, 16, 32), 3.0, np.float32))
    with pytest.raises(PredictionImportError, match=rf"{name}\.npy: values span .*not logits"):
        import_predictions(street_canonical, bad / "instances.json", bad / "semantic", tmp_path / "x.h5")

    labels = tmp_path / "labels"
    for rec in split.images:
        write_png(labels / f"{rec.name}.png", np.where(rec.name == name, 40, split.semantic(rec)).astype(np.uint8))
    with pytest.raises(PredictionImportError, match=rf"{name}\.png: class indices \[40\] outside 0..18"):
        import_predictions(street_canonical, exported / "instances.json", labels, tmp_path / "x.h5", semantic_format="png")
    assert not (tmp_path / "x.h5").exists()


def test_cli_reports_import_errors_in_one_line(street_canonical, own, tmp_path, capsys):
    _, exported = own
    bad = _bad_inputs(exported, tmp_path, lambda results: results[0].update(category_id=999))
    assert _import(street_canonical, bad, tmp_path / "x.h5") == 1
    err = capsys.readouterr().err
    assert "segfusion import-predictions: error:" in err and "category_id 999" in err and "Traceback" not in err


def test_polygons_uncompressed_rle_and_missing_bbox(street_canonical, own, tmp_path):
    _, exported = own
    split = CanonicalSplit(street_canonical)
    rec = split.images[0]
    h, w = rec.height, rec.width
    car = split.classes.ids[split.classes.names.index("car")]
    square = np.zeros((h, w), np.uint8)
    square[10:20, 30:50] = 1
    flat = square.ravel(order="F")  # uncompressed COCO RLE counts run down the columns
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [2]])) != 0)
    counts = np.diff(np.concatenate([[0], change])).tolist()
    results = [
        {"image_id": rec.image_id, "category_id": car, "score": 0.9, "segmentation": {"size": [h, w], "counts": counts}},
        {"image_id": rec.image_id, "category_id": car, "score": 0.8, "segmentation": [[30, 10, 50, 10, 50, 20, 30, 20]]},
    ]
    (tmp_path / "r.json").write_text(json.dumps(results))
    import_predictions(street_canonical, tmp_path / "r.json", exported / "semantic", tmp_path / "c.h5")
    with CacheReader(tmp_path / "c.h5") as r:
        inst = r.read_detections(rec.name).instances
        others = [r.read_detections(n).instances for n in r.names if n != rec.name]
    assert all(len(o) == 0 for o in others) and len(inst) == 2
    assert np.array_equal(inst.mask_image[0], square.astype(bool))
    np.testing.assert_array_equal(inst.boxes[0], [30, 10, 50, 20])  # from the mask when bbox is absent
    assert abs(int(inst.mask_image[1].sum()) - 200) <= 40  # the rasterised 20x10 polygon
