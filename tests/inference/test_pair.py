"""Pairs: the instances of one cache fused with the semantic output of another (`PairedCacheReader`,
``segfusion fuse --semantic-cache``) equal fusing one cache that holds both; mismatches name both files."""

import numpy as np
import pytest

from segfusion.cli import main
from segfusion.datasets.cityscapes import cityscapes_classes
from segfusion.inference.cache import CacheError, CacheWriter
from segfusion.inference.pair import PairedCacheReader
from segfusion.io.fused import read_fused

SIZE = (32, 64)


def _images(seed: int, n_images: int = 3):
    """Per image: detections (thing labels) and semantic probabilities, from ``seed``."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_images):
        n = k + 1
        boxes = rng.uniform(0, 24, (n, 4)).astype(np.float32)
        boxes[:, 2:] += boxes[:, :2] + 4
        prob = rng.random((19, 8, 16)).astype(np.float32)
        prob /= prob.sum(0, keepdims=True)
        out.append({
            "boxes": boxes, "scores": rng.uniform(0.4, 1.0, n).astype(np.float32), "labels": rng.integers(11, 19, n),
            "mask_prob": rng.random((n, 28, 28)).astype(np.float32), "semantic_prob": prob,
        })  # fmt: skip
    return out


def _write(path, images, names=None, sizes=None, classes=None, instances_from=None, semantic_from=None):
    """A cache of ``images``; ``instances_from`` / ``semantic_from`` replace one part by another list's."""
    classes = classes or cityscapes_classes()
    with CacheWriter(path, "m", "h", classes) as w:
        for k in range(len(images)):
            inst = (instances_from or images)[k]
            sem = (semantic_from or images)[k]
            w.add((names or [f"img{i}" for i in range(len(images))])[k], 100 + k, (sizes or [SIZE] * len(images))[k],
                  boxes=inst["boxes"], scores=inst["scores"], labels=inst["labels"], mask_prob=inst["mask_prob"],
                  semantic_prob=sem["semantic_prob"])  # fmt: skip
    return path


def _fused(out):
    return {name: (image_id, pan) for name, image_id, pan in read_fused(out)}


@pytest.mark.parametrize("method", ["kirillov", "jsis", "costea", "semantic"])
def test_pair_fused_from_two_caches_equals_one_cache_with_both(tmp_path, method):
    det, sem = _images(1), _images(2)
    a = _write(tmp_path / "instances.h5", det)
    b = _write(tmp_path / "semantic.h5", sem)
    both = _write(tmp_path / "both.h5", det, instances_from=det, semantic_from=sem)
    assert main(["fuse", "--cache", str(a), "--semantic-cache", str(b), "--method", method, "--out", str(tmp_path / "pair")]) == 0
    assert main(["fuse", "--cache", str(both), "--method", method, "--out", str(tmp_path / "one")]) == 0
    pair, one = _fused(tmp_path / "pair"), _fused(tmp_path / "one")
    assert sorted(pair) == sorted(one) == ["img0", "img1", "img2"]
    for name in one:
        assert pair[name][0] == one[name][0]
        np.testing.assert_array_equal(pair[name][1].segment_ids, one[name][1].segment_ids)
        assert pair[name][1].segments == one[name][1].segments
    # and it differs from fusing either cache alone (the test would be vacuous otherwise)
    assert main(["fuse", "--cache", str(a), "--method", method, "--out", str(tmp_path / "a")]) == 0
    alone = _fused(tmp_path / "a")
    assert any(not np.array_equal(alone[n][1].segment_ids, one[n][1].segment_ids) for n in one)


def test_paired_reader_takes_instances_from_one_and_semantics_from_the_other(tmp_path):
    det, sem = _images(1), _images(2)
    with PairedCacheReader(_write(tmp_path / "a.h5", det), _write(tmp_path / "b.h5", sem)) as r:
        assert len(r) == 3 and r.names == ["img0", "img1", "img2"] and r.image_ids == [100, 101, 102]
        for k, cached in enumerate(r):
            np.testing.assert_array_equal(cached.instances.boxes, det[k]["boxes"])
            assert np.abs(cached.semantic.prob - sem[k]["semantic_prob"]).max() <= 1 / 510 + 1e-7


def test_mismatched_caches_are_an_error_naming_both(tmp_path):
    det, sem = _images(1), _images(2)
    a = _write(tmp_path / "a.h5", det)
    cases = {
        "images": _write(tmp_path / "names.h5", sem, names=["img0", "img1", "other"]),
        "sizes": _write(tmp_path / "sizes.h5", sem, sizes=[SIZE, SIZE, (32, 60)]),
    }
    with pytest.raises(CacheError, match="different images") as err:
        PairedCacheReader(a, cases["images"])
    assert str(a) in str(err.value) and str(cases["images"]) in str(err.value) and "'other'" in str(err.value)
    with pytest.raises(CacheError, match="32x64") as err:
        with PairedCacheReader(a, cases["sizes"]) as r:
            list(r)
    assert str(a) in str(err.value) and str(cases["sizes"]) in str(err.value)

    from segfusion.types import ClassInfo

    c = cityscapes_classes()
    other = ClassInfo(names=tuple(n.upper() for n in c.names), is_thing=c.is_thing, category=c.category, ids=c.ids, colors=c.colors)
    b = _write(tmp_path / "classes.h5", sem, classes=other)
    with pytest.raises(CacheError, match="different classes") as err:
        PairedCacheReader(a, b)
    assert str(a) in str(err.value) and str(b) in str(err.value)
    # the CLI reports it on one line, exit status 1, no output written
    assert main(["fuse", "--cache", str(a), "--semantic-cache", str(b), "--method", "kirillov", "--out", str(tmp_path / "x")]) == 1
    assert not (tmp_path / "x").exists()
