"""The HDF5 prediction cache (DESIGN.md "Prediction cache"): raw soft outputs, never fused.

One file per shard. File attributes: ``format_version``, ``model``, ``config_hash``,
``classes`` (JSON), ``provenance`` (JSON). One group per image (named by image name):

    semantic_prob  (C, h, w) uint8, value = round(p * 255), chunked + gzip/shuffle.
                   Quantisation error is at most 1/510 per probability; the argmax can only
                   change where the top two classes are within 1/255 (see tests).
    boxes (N, 4) float32, scores (N,) float32, labels (N,) int16, mask_prob (N, 28, 28) float16
    proposals (P, 4) float16 (optional, for RPN recall)
    attrs: image_id, image_size (H, W), forward_seconds

Written to a temporary name and renamed on close, so a killed job never leaves a file
that looks complete. Readers check ``format_version`` and, when asked, ``config_hash``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from segfusion.io.atomic import atomic_path
from segfusion.types import ClassInfo, Instances, SemanticPrediction

FORMAT_VERSION = 1


class CacheError(ValueError):
    """A cache file that is missing, corrupt, of another format version or stale."""


@dataclass
class CachedImage:
    name: str
    image_id: int
    instances: Instances
    semantic: SemanticPrediction
    proposals: np.ndarray | None
    forward_seconds: float


def quantize(prob: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(prob, 0.0, 1.0) * 255.0).astype(np.uint8)


def dequantize(q: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * np.float32(1.0 / 255.0)


class CacheWriter:
    """Context manager: ``with CacheWriter(path, ...) as w: w.add(...)``; renamed into place on success."""

    def __init__(self, path: str | os.PathLike, model: str, config_hash: str, classes: ClassInfo, provenance: dict | None = None):
        self.path = Path(path)
        self._ctx = atomic_path(self.path, suffix=".h5")
        self._attrs = {
            "format_version": FORMAT_VERSION,
            "model": model,
            "config_hash": config_hash,
            "classes": classes.to_json(),
            "provenance": json.dumps(provenance or {}),
        }
        self.count = 0

    def __enter__(self) -> "CacheWriter":
        tmp = self._ctx.__enter__()
        self._file = h5py.File(tmp, "w")
        for k, v in self._attrs.items():
            self._file.attrs[k] = v
        return self

    def __exit__(self, exc_type, exc, tb):
        self._file.attrs["num_images"] = self.count
        self._file.close()
        return self._ctx.__exit__(exc_type, exc, tb)

    def add(
        self,
        name: str,
        image_id: int,
        image_size: tuple[int, int],
        boxes: np.ndarray,
        scores: np.ndarray,
        labels: np.ndarray,
        mask_prob: np.ndarray,
        semantic_prob: np.ndarray,
        proposals: np.ndarray | None = None,
        forward_seconds: float = 0.0,
    ) -> None:
        g = self._file.create_group(name)
        g.attrs["image_id"] = int(image_id)
        g.attrs["image_size"] = np.asarray(image_size, np.int64)
        g.attrs["forward_seconds"] = float(forward_seconds)
        q = quantize(semantic_prob)
        c, h, w = q.shape
        g.create_dataset("semantic_prob", data=q, chunks=(1, h, w), compression="gzip", compression_opts=4, shuffle=True)
        g.create_dataset("boxes", data=np.asarray(boxes, np.float32).reshape(-1, 4))
        g.create_dataset("scores", data=np.asarray(scores, np.float32))
        g.create_dataset("labels", data=np.asarray(labels, np.int16))
        m = np.asarray(mask_prob, np.float16)
        g.create_dataset("mask_prob", data=m, compression="gzip" if len(m) else None, shuffle=bool(len(m)))
        if proposals is not None:
            g.create_dataset("proposals", data=np.asarray(proposals, np.float16).reshape(-1, 4))
        self.count += 1


class CacheReader:
    """Read a cache; iterate `CachedImage` in image-id order."""

    def __init__(self, path: str | os.PathLike, expect_config_hash: str | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise CacheError(f"prediction cache not found: {self.path}")
        try:
            self._file = h5py.File(self.path, "r")
            attrs = dict(self._file.attrs)
        except OSError as err:
            raise CacheError(f"{self.path}: corrupt or truncated HDF5 prediction cache ({err})") from None
        version = attrs.get("format_version")
        if version != FORMAT_VERSION:
            raise CacheError(f"{self.path}: cache format_version {version}, this segfusion reads {FORMAT_VERSION}; re-run predict")
        self.config_hash = str(attrs.get("config_hash"))
        if expect_config_hash is not None and expect_config_hash != self.config_hash:
            raise CacheError(
                f"{self.path}: stale cache: config_hash {self.config_hash} differs from the expected {expect_config_hash}; re-run predict"
            )
        self.model = str(attrs.get("model"))
        self.classes = ClassInfo.from_json(attrs["classes"])
        self.provenance = json.loads(attrs.get("provenance", "{}"))
        try:
            self.names = sorted(self._file.keys(), key=lambda n: int(self._file[n].attrs["image_id"]))
        except (OSError, KeyError) as err:
            raise CacheError(f"{self.path}: corrupt cache index ({err})") from None

    def __len__(self) -> int:
        return len(self.names)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "CacheReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read(self, name: str) -> CachedImage:
        try:
            g = self._file[name]
            size = tuple(int(v) for v in g.attrs["image_size"])
            inst = Instances(
                boxes=g["boxes"][()],
                scores=g["scores"][()],
                labels=g["labels"][()].astype(np.int64),
                image_size=size,
                mask_prob=g["mask_prob"][()].astype(np.float32),
            )
            sem = SemanticPrediction(dequantize(g["semantic_prob"][()]), size)
            proposals = g["proposals"][()].astype(np.float32) if "proposals" in g else None
            return CachedImage(name, int(g.attrs["image_id"]), inst, sem, proposals, float(g.attrs["forward_seconds"]))
        except KeyError as err:
            raise CacheError(f"{self.path}: image {name!r} is missing or incomplete ({err})") from None
        except OSError as err:
            raise CacheError(f"{self.path}: image {name!r} cannot be read, the file is corrupt ({err})") from None

    def __iter__(self):
        for name in self.names:
            yield self.read(name)
