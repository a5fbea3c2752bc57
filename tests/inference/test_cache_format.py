"""The HDF5 prediction cache: round trip, quantisation bounds, masks, pasting, failure modes.

(The tests formerly in tests/io/test_cache.py are here, every assertion kept.)
"""

import h5py
import numpy as np
import pytest
import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image

from segfusion.datasets.cityscapes import cityscapes_classes
from segfusion.inference.cache import (
    FORMAT_VERSION,
    CacheError,
    CacheReader,
    CacheWriter,
    dequantize,
    pack_masks,
    quantize,
    unpack_masks,
)
from segfusion.inference.paste import paste_masks
from segfusion.types import Instances, SemanticPrediction


def _write(path, config_hash="abc", n_images=3, compression="zstd"):
    rng = np.random.default_rng(0)
    classes = cityscapes_classes()
    written = {}
    with CacheWriter(path, "panoptic_fpn", config_hash, classes, {"segfusion": "test"}, compression=compression) as w:
        for k in range(n_images):
            n = k  # 0, 1, 2 detections: the empty case included
            prob = rng.random((19, 8, 16)).astype(np.float32)
            prob /= prob.sum(0, keepdims=True)
            boxes = rng.uniform(0, 30, (n, 4)).astype(np.float32)
            boxes[:, 2:] += boxes[:, :2]
            data = dict(
                boxes=boxes, scores=rng.random(n).astype(np.float32), labels=rng.integers(11, 19, n),
                mask_prob=rng.random((n, 28, 28)).astype(np.float32), semantic_prob=prob,
            )
            w.add(f"img{k}", 10 - k, (32, 64), **data, proposals=boxes, forward_seconds=0.5)
            written[f"img{k}"] = data
    return written


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_roundtrip_returns_typed_objects(tmp_path, compression):
    path = tmp_path / "c.h5"
    written = _write(path, compression=compression)
    with CacheReader(path, expect_config_hash="abc") as r:
        assert r.model == "panoptic_fpn" and r.classes == cityscapes_classes()
        assert r.format_version == FORMAT_VERSION and r.provenance == {"segfusion": "test"}
        assert r.names == ["img2", "img1", "img0"]  # image-id order
        assert r.image_ids == [8, 9, 10] and len(r) == 3 and "img1" in r and "img9" not in r
        for cached in r:
            src = written[cached.name]
            assert isinstance(cached.instances, Instances) and isinstance(cached.semantic, SemanticPrediction)
            assert cached.instances.image_size == (32, 64) and cached.semantic.image_size == (32, 64)
            np.testing.assert_array_equal(cached.instances.boxes, src["boxes"])
            np.testing.assert_array_equal(cached.instances.labels, src["labels"])
            np.testing.assert_allclose(cached.instances.mask_prob, src["mask_prob"], atol=1e-3)
            assert np.abs(cached.semantic.prob - src["semantic_prob"]).max() <= 1 / 510 + 1e-7
            assert cached.semantic.prob.dtype == np.float32 and cached.instances.mask_image is None
            assert cached.forward_seconds == 0.5 and cached.canvas is None
            np.testing.assert_allclose(cached.proposals, src["boxes"], atol=0.02)
            det = r.read_detections(cached.name)
            assert det.image_id == cached.image_id and np.array_equal(det.instances.scores, cached.instances.scores)


def test_quantisation_error_bound():
    p = np.linspace(0, 1, 10001, dtype=np.float32)
    assert np.abs(dequantize(quantize(p)) - p).max() <= 1 / 510 + 1e-7


def test_quantisation_keeps_the_argmax_unless_top_two_are_within_1_255():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (19, 200, 300)).astype(np.float32)
    p = np.exp(logits - logits.max(0))
    p /= p.sum(0)
    changed = dequantize(quantize(p)).argmax(0) != p.argmax(0)
    top2 = np.sort(p, axis=0)[-2:]
    gap = top2[1] - top2[0]
    assert changed.any()  # the bound is not vacuous on this data
    assert (gap[changed] <= 1 / 255 + 1e-7).all()
    # binarising at 0.5 is exact: q >= 128 iff p >= 0.5
    x = np.linspace(0.49, 0.51, 20001, dtype=np.float32)
    assert np.array_equal(dequantize(quantize(x)) >= 0.5, x >= 0.5)


def test_quantize_rejects_nan(tmp_path):
    prob = np.full((19, 2, 2), 0.5, np.float32)
    prob[3, 1, 1] = np.nan
    with pytest.raises(CacheError, match="'bad'.*NaN"):
        with CacheWriter(tmp_path / "c.h5", "m", "h", cityscapes_classes()) as w:
            w.add("bad", 0, (8, 8), np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros((0, 28, 28)), prob)
    assert not (tmp_path / "c.h5").exists()


def test_stale_and_corrupt_caches_fail_clearly(tmp_path):
    path = tmp_path / "c.h5"
    _write(path)
    with pytest.raises(CacheError, match="stale cache.*abc.*xyz"):
        CacheReader(path, expect_config_hash="xyz")
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(CacheError, match="format_version 99.*reads 3"):
        CacheReader(path)
    truncated = tmp_path / "t.h5"
    _write(truncated)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(CacheError, match="corrupt or truncated"):
        CacheReader(truncated)
    with pytest.raises(CacheError, match="not found"):
        CacheReader(tmp_path / "missing.h5")


def test_damaged_image_data_names_file_and_image(tmp_path):
    path = tmp_path / "c.h5"
    _write(path)
    with h5py.File(path, "a") as f:
        del f["images/img1/scores"]
    with CacheReader(path) as r:
        with pytest.raises(CacheError, match=r"c\.h5: image 'img1' is missing or incomplete"):
            r.read("img1")
        with pytest.raises(CacheError, match="no image 'nope'"):
            r.read_detections("nope")
        assert len(r.read("img2").instances) == 2
    # flip bytes inside the compressed semantic chunks: a decode error, not an h5py traceback
    with h5py.File(path, "r") as f:
        offset = f["images/img0/semantic_prob"].id.get_chunk_info(0).byte_offset
    raw = bytearray(path.read_bytes())
    raw[offset : offset + 64] = bytes(64)
    path.write_bytes(bytes(raw))
    with CacheReader(path) as r:
        with pytest.raises(CacheError, match=r"c\.h5: image 'img0'"):
            r.read_semantic("img0")


def test_a_file_without_index_is_incomplete(tmp_path):
    path = tmp_path / "c.h5"
    _write(path)
    with h5py.File(path, "a") as f:
        del f["index"]
    with pytest.raises(CacheError, match=r"c\.h5: corrupt or incomplete cache index"):
        CacheReader(path)


def test_killed_writer_leaves_no_file(tmp_path):
    path = tmp_path / "c.h5"
    with pytest.raises(RuntimeError):
        with CacheWriter(path, "m", "h", cityscapes_classes()) as w:
            w.add("a", 0, (4, 4), np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros((0, 28, 28)), np.zeros((19, 1, 1)))
            raise RuntimeError("killed")
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_writer_rejects_inconsistent_inputs(tmp_path):
    classes = cityscapes_classes()
    sem = np.full((19, 2, 2), 1 / 19, np.float32)
    with CacheWriter(tmp_path / "c.h5", "m", "h", classes) as w:
        w.add("a", 0, (8, 8), np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros((0, 28, 28)), sem)
        with pytest.raises(CacheError, match="'a' was already added"):
            w.add("a", 1, (8, 8), np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros((0, 28, 28)), sem)
        with pytest.raises(CacheError, match="boxes 1, scores 2"):
            w.add("b", 1, (8, 8), np.zeros((1, 4)), np.zeros(2), np.zeros(1), np.zeros((1, 28, 28)), sem)
        with pytest.raises(CacheError, match=r"labels \[19\] outside 0..18"):
            w.add("c", 1, (8, 8), np.zeros((1, 4)), np.zeros(1), np.full(1, 19), np.zeros((1, 28, 28)), sem)
        with pytest.raises(CacheError, match="exactly one of mask_prob or mask_image"):
            w.add("d", 1, (8, 8), np.zeros((0, 4)), np.zeros(0), np.zeros(0), None, sem)
        with pytest.raises(CacheError, match=r"mask_image must be \(N, H, W\) = \(1, 8, 8\)"):
            w.add("e", 1, (8, 8), np.zeros((1, 4)), np.zeros(1), np.full(1, 11), None, sem, mask_image=np.zeros((1, 8, 9)))
        with pytest.raises(CacheError, match="no '/'"):
            w.add("f/g", 1, (8, 8), np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros((0, 28, 28)), sem)
        with pytest.raises(CacheError, match=r"mask_prob must be \(N=1, M, M\)"):
            w.add("e", 1, (8, 8), np.zeros((1, 4)), np.zeros(1), np.full(1, 11), np.zeros((2, 28, 28)), sem)
        # a rejected image leaves nothing behind: its name can be added afterwards
        w.add("e", 2, (8, 8), np.zeros((1, 4)), np.zeros(1), np.full(1, 11), None, sem, mask_image=np.ones((1, 8, 8), bool))
    with CacheReader(tmp_path / "c.h5") as r:
        assert r.names == ["a", "e"]
        assert r.read_detections("e").instances.mask_image.all()


def test_pack_masks_roundtrip():
    rng = np.random.default_rng(4)
    for width in (1, 7, 8, 9, 130):
        m = rng.random((3, 5, width)) < 0.4
        packed = pack_masks(m)
        assert packed.shape == (3, 5, -(-width // 8)) and packed.dtype == np.uint8
        assert np.array_equal(unpack_masks(packed, width), m)
    assert np.array_equal(pack_masks(np.array([[[0.2, 0.5, 0.7]]])), pack_masks(np.array([[[False, True, True]]])))


def test_image_relative_masks_roundtrip(tmp_path):
    classes = cityscapes_classes()
    rng = np.random.default_rng(5)
    masks = rng.random((4, 30, 45)) < 0.3
    masks[2] = False  # an empty mask survives too
    boxes = np.tile(np.array([[1, 2, 20, 25]], np.float32), (4, 1))
    inst = Instances(boxes, rng.random(4), np.array([11, 12, 13, 18]), (30, 45), mask_image=masks)
    sem = SemanticPrediction(np.full((19, 30, 45), 1 / 19, np.float32), (30, 45))
    with CacheWriter(tmp_path / "c.h5", "imported", "h", classes) as w:
        w.add("x", 3, inst.image_size, inst.boxes, inst.scores, inst.labels, None, sem.prob, mask_image=inst.mask_image)
        w.add("none", 4, (30, 45), np.zeros((0, 4)), np.zeros(0), np.zeros(0), None, sem.prob, mask_image=np.zeros((0, 30, 45), bool))
    with CacheReader(tmp_path / "c.h5") as r:
        got = r.read("x")
        assert got.instances.mask_prob is None and got.instances.mask_image.dtype == bool
        assert np.array_equal(got.instances.mask_image, masks)
        np.testing.assert_array_equal(got.instances.boxes, boxes)
        np.testing.assert_array_equal(got.image_masks(), masks.astype(np.float32))
        np.testing.assert_array_equal(got.image_masks(threshold=0.5), masks)
        empty = r.read("none")
        assert len(empty.instances) == 0 and empty.instances.mask_image.shape == (0, 30, 45)


def test_read_with_paste_matches_torchvision(tmp_path):
    rng = np.random.default_rng(6)
    size = (40, 70)
    n = 12
    x0, y0 = rng.uniform(-10, 60, n), rng.uniform(-10, 35, n)
    boxes = np.stack([x0, y0, x0 + rng.uniform(1, 30, n), y0 + rng.uniform(1, 20, n)], 1).astype(np.float32)
    masks = rng.random((n, 28, 28)).astype(np.float32)
    with CacheWriter(tmp_path / "c.h5", "m", "h", cityscapes_classes()) as w:
        w.add("a", 0, size, boxes, rng.random(n), rng.integers(11, 19, n), masks, np.full((19, 10, 18), 1 / 19))
    with CacheReader(tmp_path / "c.h5") as r:
        cached = r.read("a")
    pasted = paste_masks(cached.instances)
    assert len(pasted) == n
    # the cache holds float16 masks: paste those with torchvision
    stored = masks.astype(np.float16).astype(np.float32)
    expected = paste_masks_in_image(torch.from_numpy(stored)[:, None], torch.from_numpy(boxes), size)[:, 0].numpy()
    np.testing.assert_allclose(cached.image_masks(), expected, atol=1e-5)
    for (crop, (py, px)), e in zip(pasted, expected):
        assert crop.dtype == np.float32
        # outside the crop torchvision's full mask is zero
        outside = e.copy()
        outside[py : py + crop.shape[0], px : px + crop.shape[1]] = 0
        assert not outside.any()


def test_canvas_is_stored_on_request(tmp_path):
    canvas = np.random.default_rng(7).normal(0, 2, (20, 8, 16)).astype(np.float32)
    with CacheWriter(tmp_path / "c.h5", "maskrcnn_imp", "h", cityscapes_classes()) as w:
        w.add("a", 0, (32, 64), np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros((0, 28, 28)), np.full((19, 8, 16), 0.05), canvas=canvas)
    with CacheReader(tmp_path / "c.h5") as r:
        got = r.read("a").canvas
    np.testing.assert_allclose(got, canvas, rtol=1e-3, atol=1e-3)


def test_empty_cache(tmp_path):
    with CacheWriter(tmp_path / "c.h5", "m", "h", cityscapes_classes()) as w:
        assert w.count == 0
    with CacheReader(tmp_path / "c.h5") as r:
        assert len(r) == 0 and r.names == [] and list(r) == [] and list(r.iter_detections()) == []


def test_duplicate_image_ids_are_rejected(tmp_path):
    sem = np.full((19, 2, 2), 1 / 19, np.float32)
    with CacheWriter(tmp_path / "c.h5", "m", "h", cityscapes_classes()) as w:
        w.add("a", 7, (8, 8), np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros((0, 28, 28)), sem)
        with pytest.raises(CacheError, match="'b': image_id 7 was already used"):
            w.add("b", 7, (8, 8), np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros((0, 28, 28)), sem)


def test_failure_while_closing_leaves_no_file(tmp_path, monkeypatch):
    def broken(self):
        raise OSError("disk full")

    monkeypatch.setattr(CacheWriter, "_write_index", broken)
    with pytest.raises(OSError, match="disk full"):
        with CacheWriter(tmp_path / "c.h5", "m", "h", cityscapes_classes()):
            pass
    assert list(tmp_path.iterdir()) == []
