"""The HDF5 prediction cache (DESIGN.md "Prediction cache"): raw soft outputs, never fused.

One file per shard, format version 3. File attributes: ``format_version``, ``model``,
``config_hash``, ``classes`` (JSON), ``provenance`` (JSON), ``lineage`` (JSON: what the cache
was made from, `segfusion.provenance`), ``num_images``. Layout::

    /index/names            (I,) UTF-8 image names (fixed-length bytes), in image-id order (written on close)
    /index/ids              (I,) int64 image ids, ascending
    /index/image_size       (I, 2) int64 (H, W)
    /index/forward_seconds  (I,) float64
    /images/{name}/  one group per image:
        semantic_prob  (C, h, w) uint8, value = round(p * 255), chunk (1, h, w), Zstd
        boxes (N, 4) float32, scores (N,) float32, labels (N,) int16 class index
        mask_prob      (N, M, M) float16 box-relative masks (M = 28), uncompressed, or
        mask_image     (N, H, ceil(W / 8)) uint8: binary image-relative masks bit-packed
                       along W (``numpy.packbits``), chunk (1, H, ceil(W / 8)), Zstd;
                       written by ``segfusion import-predictions`` (COCO RLE results)
        proposals      (P, 4) float16 (optional, for RPN recall)
                       (boxes, scores, labels, mask_prob, proposals and the index: uncompressed,
                       one chunk each holding the whole array, for the checksum)
        canvas         (K, h, w) float16 (optional, e.g. an IMP canvas), shuffle + Zstd
        attrs: image_id, image_size (H, W), forward_seconds (as in the index, which the
               reader uses: one read at open instead of three per image)

Accuracy of the quantised semantic probabilities: a probability ``p`` in [0, 1] is stored
as ``q = rint(255 p)`` and read as ``q / 255``, so the error is at most 1/510 per value. The
argmax over classes can only change where the two largest probabilities are within 1/255
of each other (two values more than 1/255 apart never swap order after rounding each by at
most 1/510; exact ties are resolved towards the lower class index both before and after).
The bilinear upsampling done by fusion is linear, so upsampled values inherit the same
1/510 bound. Mask probabilities are float16 (error below 2.5e-4 around 0.5).

Compression: Zstandard level 1 (HDF5 filter 32015, from ``hdf5plugin``, imported here so
every reader can decode it) for the semantic probabilities, image masks and canvas. On
softmax outputs it gives ~15 % smaller semantic datasets than gzip level 4, compresses ~3x
and decompresses ~2x faster (``benchmarks/bench_cache.py``). gzip remains available through
``CacheWriter(compression="gzip")``; either is read transparently. A 1024×2048 image with
19 classes and 100 detections takes ~0.4 MB.

Integrity (format version 3): every dataset, the index included, carries HDF5's Fletcher32
checksum filter (per chunk, applied after compression, so a flipped byte inside a Zstd chunk
is caught before it is decompressed). A checksum failure is a `CacheError` naming the file
and the image. Values are range-checked on read (`check_values`): scores in [0, 1], mask
probabilities finite and in [0, 1], boxes finite with x0 <= x1 and y0 <= y1, proposals and
canvas finite. Caches of format 2 (no checksums) are refused with "re-run predict". The read
cost of the checksum is measured by ``python -m benchmarks cache``.

Written to a temporary name and renamed on close, so a killed job never leaves a file that
looks complete (its leftover temporary is removed by the next write of the same path,
`segfusion.io.atomic`). Readers check ``format_version`` and, when asked, ``config_hash``
and ``identity`` (`segfusion.provenance.cache_identity`); a missing, truncated or corrupt
file is a `CacheError` naming the file.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import h5py
import hdf5plugin  # noqa: F401  (registers the Zstd filter with HDF5, for writing and reading)
import numpy as np

from segfusion.inference.paste import paste_masks
from segfusion.io.atomic import atomic_path
from segfusion.types import ClassInfo, Instances, SemanticPrediction

FORMAT_VERSION = 3
"""3: Fletcher32 checksums on every dataset, fixed-length index names, ``lineage``. 2: no checksums."""
COMPRESSIONS = ("zstd", "gzip")
"""Compression filters `CacheWriter` can write; HDF5 decodes either on read."""
ZSTD_LEVEL = 1
GZIP_LEVEL = 4


class CacheError(ValueError):
    """A cache file that is missing, corrupt, of another format version or stale."""


@dataclass
class CachedDetections:
    """The instance part of one cached image (no semantic probabilities are read).

    proposals: (P, 4) float32 RPN proposals, or None when the model stored none.
    forward_seconds: measured network time of the image (its batch's time / batch size).
    """

    name: str
    image_id: int
    instances: Instances
    proposals: np.ndarray | None
    forward_seconds: float


@dataclass
class CachedImage:
    """Everything cached for one image.

    image_masks: full (N, H, W) image-relative masks, pasted on request.
    canvas:  (K, h, w) float32, when the model stored one (e.g. IMP's canvas).
    """

    name: str
    image_id: int
    instances: Instances
    semantic: SemanticPrediction
    proposals: np.ndarray | None
    forward_seconds: float
    canvas: np.ndarray | None = None

    def image_masks(self, threshold: float | None = None) -> np.ndarray:
        """(N, H, W) float32 image-relative masks, or bool ``prob >= threshold``.

        For small images and tests: 100 masks at 1024×2048 take 800 MB.
        """
        crops = paste_masks(self.instances)
        height, width = self.instances.image_size
        full = np.zeros((len(crops), height, width), np.float32)
        for i, (crop, (y0, x0)) in enumerate(crops):
            full[i, y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        return full if threshold is None else full >= threshold


def quantize(prob: np.ndarray) -> np.ndarray:
    """Probabilities (any shape, float) -> uint8 ``rint(255 * clip(p, 0, 1))``.

    Raises ValueError on NaN (a NaN probability is a bug upstream, not a value to store).
    """
    t = np.clip(np.asarray(prob, dtype=np.float32), 0.0, 1.0)
    t *= np.float32(255.0)
    np.rint(t, out=t)
    if np.isnan(t).any():
        raise ValueError("quantize: probabilities contain NaN")
    return t.astype(np.uint8)


def dequantize(q: np.ndarray) -> np.ndarray:
    """uint8 -> float32 ``q / 255`` (the inverse of `quantize`, error at most 1/510)."""
    out = q.astype(np.float32)
    out *= np.float32(1.0 / 255.0)
    return out


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """Binary masks (N, H, W) (bool, or values ``>= 0.5`` are on) -> (N, H, ceil(W / 8)) uint8 bits."""
    m = np.asarray(masks)
    if m.dtype != bool:
        m = m >= 0.5
    return np.packbits(m, axis=-1)


def unpack_masks(packed: np.ndarray, width: int) -> np.ndarray:
    """Inverse of `pack_masks`: (N, H, ceil(W / 8)) uint8 -> (N, H, W) bool."""
    return np.unpackbits(packed, axis=-1, count=width).view(bool)


def _filter(compression: str, shuffle: bool) -> dict[str, Any]:
    """h5py ``create_dataset`` keywords of one compression choice."""
    if compression == "zstd":
        return {**hdf5plugin.Zstd(clevel=ZSTD_LEVEL), "shuffle": shuffle}
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": GZIP_LEVEL, "shuffle": shuffle}
    raise ValueError(f"unknown cache compression {compression!r}; valid: {list(COMPRESSIONS)}")


def check_values(where: str, instances: Instances, proposals: np.ndarray | None = None, canvas: np.ndarray | None = None) -> None:
    """Refuse values no model produces (a corrupt or hand-edited cache): CacheError naming ``where``.

    scores in [0, 1]; mask probabilities finite and in [0, 1]; boxes finite with x0 <= x1 and
    y0 <= y1; proposals and canvas finite.
    """
    s, b = instances.scores, instances.boxes
    if len(s) and not (np.isfinite(s).all() and s.min() >= 0.0 and s.max() <= 1.0):
        bad = s[~(np.isfinite(s) & (s >= 0) & (s <= 1))]
        raise CacheError(f"{where}: scores outside [0, 1] (e.g. {float(bad[0])!r}); the cache is corrupt, re-run predict")
    if len(b):
        if not np.isfinite(b).all():
            raise CacheError(f"{where}: boxes are not finite; the cache is corrupt, re-run predict")
        wrong = np.flatnonzero((b[:, 0] > b[:, 2]) | (b[:, 1] > b[:, 3]))
        if len(wrong):
            raise CacheError(f"{where}: box {int(wrong[0])} {b[wrong[0]].tolist()} has x0 > x1 or y0 > y1; the cache is corrupt, re-run predict")
    m = instances.mask_prob
    if m is not None and m.size:
        lo, hi = float(np.min(m)), float(np.max(m))  # NaN propagates through min/max
        if not (0.0 <= lo and hi <= 1.0):
            raise CacheError(f"{where}: mask probabilities not finite or outside [0, 1] (min {lo}, max {hi}); the cache is corrupt, re-run predict")
    for key, a in (("proposals", proposals), ("canvas", canvas)):
        if a is not None and a.size and not np.isfinite(a).all():
            raise CacheError(f"{where}: {key} are not finite; the cache is corrupt, re-run predict")


class CacheWriter:
    """Context manager: ``with CacheWriter(path, ...) as w: w.add(...)``; renamed into place on success.

    compression: ``"zstd"`` (default) or ``"gzip"`` for the large datasets.
    ``config_hash`` may be reassigned before the writer closes (``segfusion
    import-predictions`` hashes its inputs while reading them).
    lineage: what the cache is made from (`segfusion.provenance.cache_lineage`: the model
    file's digest, the data split's identity, the shard); stored as the ``lineage`` attribute.
    checksum: Fletcher32 on every dataset (default; ``False`` only for the benchmark's baseline).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        model: str,
        config_hash: str,
        classes: ClassInfo,
        provenance: dict | None = None,
        compression: str = "zstd",
        lineage: dict | None = None,
        checksum: bool = True,
    ):
        self.path = Path(path)
        _filter(compression, False)  # validate early
        self.compression = compression
        self.lineage = dict(lineage or {})
        self.checksum = bool(checksum)
        self.model = model
        self.config_hash = config_hash
        self.classes = classes
        self.provenance = dict(provenance or {})
        self._ctx = atomic_path(self.path, suffix=".h5")
        self._names: list[str] = []
        self._ids: list[int] = []
        self._sizes: list[tuple[int, int]] = []
        self._seconds: list[float] = []
        self._id_set: set[int] = set()

    @property
    def count(self) -> int:
        """Images added so far."""
        return len(self._names)

    def _write_attrs(self) -> None:
        attrs = self._file.attrs
        attrs["format_version"] = FORMAT_VERSION
        attrs["model"] = self.model
        attrs["config_hash"] = self.config_hash
        attrs["classes"] = self.classes.to_json()
        attrs["provenance"] = json.dumps(self.provenance)
        attrs["lineage"] = json.dumps(self.lineage, sort_keys=True)
        attrs["num_images"] = self.count

    def __enter__(self) -> "CacheWriter":
        tmp = self._ctx.__enter__()
        try:
            # libver v110: a one-chunk dataset gets the single-chunk index (no B-tree), so the
            # chunking that the checksum requires costs little per small dataset read.
            self._file = h5py.File(tmp, "w", libver=("v110", "latest"))
            self._images = self._file.create_group("images")
            self._write_attrs()
        except BaseException:
            self._ctx.__exit__(*sys.exc_info())
            raise
        return self

    def _write_index(self) -> None:
        order = np.argsort(np.asarray(self._ids, np.int64), kind="stable")
        index = self._file.create_group("index")
        # Fixed-length UTF-8 bytes: HDF5 filters (the checksum) do not apply to variable-length strings.
        names = np.array([self._names[i].encode() for i in order], dtype=np.bytes_)
        for key, array in (
            ("names", names),
            ("ids", np.asarray(self._ids, np.int64)[order].reshape(-1)),
            ("image_size", np.asarray(self._sizes, np.int64).reshape(-1, 2)[order]),
            ("forward_seconds", np.asarray(self._seconds, np.float64).reshape(-1)[order]),
        ):
            self._small(index, key, array)
        self._write_attrs()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:  # the body failed: drop the temporary file, let the error propagate
            self._file.close()
            return self._ctx.__exit__(exc_type, exc, tb)
        try:
            self._write_index()
        except BaseException as err:
            self._file.close()
            self._ctx.__exit__(type(err), err, err.__traceback__)
            raise
        self._file.close()
        return self._ctx.__exit__(None, None, None)

    @property
    def _checksummed(self) -> dict[str, Any]:
        """The Fletcher32 checksum's keyword (none without ``checksum``)."""
        return {"fletcher32": True} if self.checksum else {}

    def _small(self, group: h5py.Group, key: str, array: np.ndarray) -> None:
        """An uncompressed dataset, checksummed as one chunk (the whole array).

        One chunk, not h5py's automatic chunking (which cuts 100 float16 28 x 28 masks into
        16 chunks): with libver v110 a one-chunk dataset has the single-chunk index, so it is
        read with one I/O and one checksum, which halves the checksum's read cost
        (``benchmarks/bench_cache.py``). Unchecksummed (the benchmark's baseline): contiguous.
        """
        chunks = {"chunks": array.shape} if self.checksum and array.size else {}
        group.create_dataset(key, data=array, **chunks, **self._checksummed)

    def _chunked(self, array: np.ndarray, shuffle: bool) -> dict[str, Any]:
        """Dataset keywords of a 3-d array: one compressed, checksummed chunk per leading index (none if empty)."""
        if array.size == 0:
            return {}
        return {"chunks": (1, *array.shape[1:]), **_filter(self.compression, shuffle), **self._checksummed}

    def add(
        self,
        name: str,
        image_id: int,
        image_size: tuple[int, int],
        boxes: np.ndarray,
        scores: np.ndarray,
        labels: np.ndarray,
        mask_prob: np.ndarray | None,
        semantic_prob: np.ndarray,
        proposals: np.ndarray | None = None,
        forward_seconds: float = 0.0,
        mask_image: np.ndarray | None = None,
        canvas: np.ndarray | None = None,
    ) -> None:
        """Add one image's raw outputs.

        image_size: (H, W). boxes (N, 4) x0, y0, x1, y1; scores (N,); labels (N,) class
        index. Exactly one of mask_prob (N, M, M) box-relative probabilities or mask_image
        (N, H, W) binary image-relative masks (bool, or on where ``>= 0.5``).
        semantic_prob (C, h, w) probabilities in [0, 1] at any stride. proposals (P, 4).
        canvas (K, h, w) any float values (stored as float16).
        Raises CacheError naming the image on a duplicate name or inconsistent shapes.
        """
        where = f"{self.path}: image {name!r}"
        if not name or "/" in name:
            raise CacheError(f"{where}: image names must be non-empty and contain no '/'")
        if name in self._images:
            raise CacheError(f"{where} was already added")
        if int(image_id) in self._id_set:
            raise CacheError(f"{where}: image_id {int(image_id)} was already used by another image")
        height, width = (int(v) for v in image_size)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores = np.asarray(scores, np.float32).reshape(-1)
        labels = np.asarray(labels).reshape(-1)
        n = len(boxes)
        if len(scores) != n or len(labels) != n:
            raise CacheError(f"{where}: boxes {n}, scores {len(scores)}, labels {len(labels)} disagree")
        if n and (labels.min() < 0 or labels.max() >= self.classes.num_classes):
            raise CacheError(f"{where}: labels {sorted(set(labels.tolist()))} outside 0..{self.classes.num_classes - 1}")
        if (mask_prob is None) == (mask_image is None):
            raise CacheError(f"{where}: give exactly one of mask_prob or mask_image")
        sem = np.asarray(semantic_prob)
        if sem.ndim != 3:
            raise CacheError(f"{where}: semantic_prob must be (C, h, w), got {sem.shape}")
        try:
            q = quantize(sem)
        except ValueError as err:
            raise CacheError(f"{where}: {err}") from None

        # Validate and convert everything first, so a rejected image leaves nothing behind.
        if mask_prob is not None:
            m = np.asarray(mask_prob, np.float16)
            if m.ndim != 3 or len(m) != n:
                raise CacheError(f"{where}: mask_prob must be (N={n}, M, M), got {m.shape}")
        else:
            mi = np.asarray(mask_image)
            if mi.shape != (n, height, width):
                raise CacheError(f"{where}: mask_image must be (N, H, W) = {(n, height, width)}, got {mi.shape}")
            packed = pack_masks(mi)
        cv = None if canvas is None else np.asarray(canvas, np.float16)
        if cv is not None and cv.ndim != 3:
            raise CacheError(f"{where}: canvas must be (K, h, w), got {cv.shape}")

        g = self._images.create_group(name)
        g.attrs["image_id"] = int(image_id)
        g.attrs["image_size"] = np.asarray((height, width), np.int64)
        g.attrs["forward_seconds"] = float(forward_seconds)
        g.create_dataset("semantic_prob", data=q, **self._chunked(q, shuffle=False))
        self._small(g, "boxes", boxes)
        self._small(g, "scores", scores)
        self._small(g, "labels", labels.astype(np.int16))
        if mask_prob is not None:
            # Uncompressed: float16 mask probabilities barely compress (157 -> 113 kB for 100
            # masks) and decompressing them costs ~6x the read (benchmarks/bench_cache.py).
            self._small(g, "mask_prob", m)
        else:
            g.create_dataset("mask_image", data=packed, **self._chunked(packed, shuffle=False)).attrs["width"] = width
        if proposals is not None:
            self._small(g, "proposals", np.asarray(proposals, np.float16).reshape(-1, 4))
        if cv is not None:
            g.create_dataset("canvas", data=cv, **self._chunked(cv, shuffle=True))
        self._names.append(name)
        self._ids.append(int(image_id))
        self._sizes.append((height, width))
        self._seconds.append(float(forward_seconds))
        self._id_set.add(int(image_id))


class CacheReader:
    """Read a cache; iterate `CachedImage` in image-id order.

    ``read(name)`` gives everything, ``read_detections(name)`` only the instances (fast: no
    semantic probabilities are decompressed), ``read_semantic(name)`` only the semantic part.
    """

    def __init__(self, path: str | os.PathLike, expect_config_hash: str | None = None, expect_identity: str | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise CacheError(f"prediction cache not found: {self.path}")
        try:
            self._file = h5py.File(self.path, "r")
            attrs = dict(self._file.attrs)
        except OSError as err:
            raise CacheError(f"{self.path}: corrupt or truncated HDF5 prediction cache ({err})") from None
        try:
            self._open(attrs, expect_config_hash, expect_identity)
        except BaseException:
            self._file.close()
            raise

    def _open(self, attrs: dict, expect_config_hash: str | None, expect_identity: str | None) -> None:
        version = attrs.get("format_version")
        if version != FORMAT_VERSION:
            older = " (an older format, without checksums)" if isinstance(version, (int, np.integer)) and version < FORMAT_VERSION else ""
            raise CacheError(f"{self.path}: cache format_version {version}{older}, this segfusion reads {FORMAT_VERSION}; re-run predict")
        self.format_version = int(version)
        self.config_hash = str(attrs.get("config_hash"))
        if expect_config_hash is not None and expect_config_hash != self.config_hash:
            raise CacheError(
                f"{self.path}: stale cache: config_hash {self.config_hash} differs from the expected {expect_config_hash}; re-run predict"
            )
        try:
            self.model = str(attrs["model"])
            self.classes = ClassInfo.from_json(attrs["classes"])
            self.provenance = json.loads(attrs.get("provenance", "{}"))
            self.lineage = json.loads(attrs.get("lineage", "{}"))
            self.names: list[str] = [n.decode() if isinstance(n, bytes) else str(n) for n in self._file["index/names"][()]]
            self.image_ids: list[int] = [int(i) for i in self._file["index/ids"][()]]
            sizes = self._file["index/image_size"][()]
            seconds = self._file["index/forward_seconds"][()]
            self._images = self._file["images"]
        except (OSError, KeyError, ValueError) as err:
            raise CacheError(f"{self.path}: corrupt or incomplete cache index ({err})") from None
        n = len(self.names)
        if not (len(self.image_ids) == len(sizes) == len(seconds) == n == int(attrs.get("num_images", -1))):
            raise CacheError(f"{self.path}: corrupt cache index ({n} names, {len(self.image_ids)} ids, num_images {attrs.get('num_images')})")
        self._meta = {
            name: (image_id, (int(hw[0]), int(hw[1])), float(sec))
            for name, image_id, hw, sec in zip(self.names, self.image_ids, sizes, seconds)
        }
        from segfusion.provenance import cache_identity

        self.identity = cache_identity(self.model, self.config_hash, self.lineage)
        if expect_identity is not None and expect_identity != self.identity:
            raise CacheError(
                f"{self.path}: cache identity {self.identity} differs from the expected {expect_identity} (the cache was rewritten "
                "since its consumer was made); re-run what reads it"
            )

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._meta

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "CacheReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _group(self, name: str) -> h5py.h5g.GroupID:
        """The low-level group of image ``name`` (reads below use h5py's low-level API: half
        the per-dataset overhead of ``group[key][()]``, which dominates reading instances)."""
        if name not in self._meta:
            raise CacheError(f"{self.path}: no image {name!r} in the cache")
        return h5py.h5g.open(self._images.id, name.encode())

    @staticmethod
    def _array(group: h5py.h5g.GroupID, key: str, optional: bool = False) -> np.ndarray | None:
        """The whole dataset ``key`` of ``group``; None when ``optional`` and absent."""
        k = key.encode()
        if optional and k not in group:
            return None
        d = h5py.h5d.open(group, k)  # KeyError naming the dataset when it is missing
        out = np.empty(d.shape, d.dtype)
        if out.size:
            d.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
        return out

    def _guard(self, name: str, read):
        """Run ``read()``; turn h5py's errors into a CacheError naming the file and image."""
        try:
            return read()
        except CacheError:
            raise
        except KeyError as err:
            raise CacheError(f"{self.path}: image {name!r} is missing or incomplete ({err})") from None
        except (OSError, ValueError, RuntimeError) as err:
            raise CacheError(f"{self.path}: image {name!r} cannot be read, the file is corrupt (checksum or decompression failed: {err}); re-run predict") from None

    def _instances(self, g: h5py.h5g.GroupID, size: tuple[int, int]) -> Instances:
        boxes, scores = self._array(g, "boxes"), self._array(g, "scores")
        labels = self._array(g, "labels").astype(np.int64)
        mask_prob = self._array(g, "mask_prob", optional=True)
        if mask_prob is not None:
            return Instances(boxes, scores, labels, size, mask_prob=mask_prob.astype(np.float32))
        return Instances(boxes, scores, labels, size, mask_image=unpack_masks(self._array(g, "mask_image"), size[1]))

    def read_detections(self, name: str) -> CachedDetections:
        """Instances, proposals and timing of image ``name``; the semantic part is not read."""

        def read() -> CachedDetections:
            g = self._group(name)
            image_id, size, seconds = self._meta[name]
            proposals = self._array(g, "proposals", optional=True)
            proposals = None if proposals is None else proposals.astype(np.float32)
            inst = self._instances(g, size)
            check_values(f"{self.path}: image {name!r}", inst, proposals)
            return CachedDetections(name, image_id, inst, proposals, seconds)

        return self._guard(name, read)

    def read_semantic(self, name: str) -> SemanticPrediction:
        """The dequantised (C, h, w) float32 semantic probabilities of image ``name``."""

        def read() -> SemanticPrediction:
            return SemanticPrediction(dequantize(self._array(self._group(name), "semantic_prob")), self._meta[name][1])

        return self._guard(name, read)

    def read(self, name: str) -> CachedImage:
        """Everything cached for image ``name``."""
        det = self.read_detections(name)
        sem = self.read_semantic(name)

        def canvas() -> np.ndarray | None:
            c = self._array(self._group(name), "canvas", optional=True)
            if c is not None and c.size and not np.isfinite(c).all():
                raise CacheError(f"{self.path}: image {name!r}: canvas is not finite; the cache is corrupt, re-run predict")
            return None if c is None else c.astype(np.float32)

        return CachedImage(det.name, det.image_id, det.instances, sem, det.proposals, det.forward_seconds, self._guard(name, canvas))

    def iter_detections(self) -> Iterator[CachedDetections]:
        """`read_detections` of every image, in image-id order."""
        for name in self.names:
            yield self.read_detections(name)

    def __iter__(self) -> Iterator[CachedImage]:
        for name in self.names:
            yield self.read(name)
