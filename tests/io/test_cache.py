import h5py
import numpy as np
import pytest

from segfusion.datasets.cityscapes import cityscapes_classes
from segfusion.inference.cache import CacheError, CacheReader, CacheWriter, dequantize, quantize


def _write(path, config_hash="abc", n_images=3):
    rng = np.random.default_rng(0)
    classes = cityscapes_classes()
    written = {}
    with CacheWriter(path, "panoptic_fpn", config_hash, classes, {"segfusion": "test"}) as w:
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


def test_roundtrip_returns_typed_objects(tmp_path):
    path = tmp_path / "c.h5"
    written = _write(path)
    with CacheReader(path, expect_config_hash="abc") as r:
        assert r.model == "panoptic_fpn" and r.classes == cityscapes_classes()
        assert r.names == ["img2", "img1", "img0"]  # image-id order
        for cached in r:
            src = written[cached.name]
            assert cached.instances.image_size == (32, 64) and cached.semantic.image_size == (32, 64)
            np.testing.assert_array_equal(cached.instances.boxes, src["boxes"])
            np.testing.assert_array_equal(cached.instances.labels, src["labels"])
            np.testing.assert_allclose(cached.instances.mask_prob, src["mask_prob"], atol=1e-3)
            assert np.abs(cached.semantic.prob - src["semantic_prob"]).max() <= 1 / 510 + 1e-7


def test_quantisation_error_bound():
    p = np.linspace(0, 1, 10001, dtype=np.float32)
    assert np.abs(dequantize(quantize(p)) - p).max() <= 1 / 510 + 1e-7


def test_stale_and_corrupt_caches_fail_clearly(tmp_path):
    path = tmp_path / "c.h5"
    _write(path)
    with pytest.raises(CacheError, match="stale cache.*abc.*xyz"):
        CacheReader(path, expect_config_hash="xyz")
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(CacheError, match="format_version 99"):
        CacheReader(path)
    truncated = tmp_path / "t.h5"
    _write(truncated)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(CacheError, match="corrupt or truncated"):
        CacheReader(truncated)
    with pytest.raises(CacheError, match="not found"):
        CacheReader(tmp_path / "missing.h5")


def test_killed_writer_leaves_no_file(tmp_path):
    path = tmp_path / "c.h5"
    with pytest.raises(RuntimeError):
        with CacheWriter(path, "m", "h", cityscapes_classes()) as w:
            w.add("a", 0, (4, 4), np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros((0, 28, 28)), np.zeros((19, 1, 1)))
            raise RuntimeError("killed")
    assert not path.exists() and list(tmp_path.iterdir()) == []
