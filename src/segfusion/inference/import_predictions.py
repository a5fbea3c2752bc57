"""Build a prediction cache from another system's outputs (``segfusion import-predictions``).

Inputs, for a canonical split (or one shard of it, `shard_records`):

* instances: COCO results JSON, a list of ``{"image_id", "category_id", "segmentation",
  "score"[, "bbox"]}`` (a ``{"annotations": [...]}`` object is accepted too). ``image_id``
  is the split's image id (``panoptic.json``; the source's own ids for COCO and ModaNet, so
  a COCO results file for those images imports unchanged), ``category_id`` the dataset's native id
  as in the split's ``classes.json``, and it must be a thing class. ``segmentation`` is an
  RLE (compressed string or uncompressed list ``counts``) or a polygon list, of the image's
  size. ``bbox`` (x, y, w, h) is kept as the detection's box when given, otherwise the
  box is the mask's bounding box. Masks are binary, so they are stored image-relative
  (``mask_image``, bit-packed) and read back as ``Instances(mask_image=...)``.
* semantic, one file per image in a folder: ``{name}.npy`` holding (C, h, w) float class
  probabilities at any stride (``--semantic-format npy``), or ``{name}.png`` holding the
  class index per pixel at image resolution, 255 = void (``--semantic-format png``), stored
  as one-hot probabilities.
* **void stays void**: a void pixel is stored as all-zero probabilities (255 in a PNG; in an
  ``.npy``, a pixel whose C values are all 0), and every fusion method leaves such a pixel
  void unless an instance covers it (`segfusion.fusion.common.BilinearField.void`), as
  panopticapi's ``combine_semantic_and_instance_predictions`` does. (A uniform 1/C would
  make its argmax class 0: road on Cityscapes.)

Every error names the file, and the image or category id at fault. The cache's
``config_hash`` is a SHA-256 of the inputs' bytes (the results file, every semantic file
read, the format), so a changed input changes the hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segfusion.datasets.canonical import CanonicalSplit, ImageRecord
from segfusion.inference.cache import CacheWriter
from segfusion.inference.shards import shard_records
from segfusion.io.images import BadImageError, read_image
from segfusion.provenance import provenance as package_provenance
from segfusion.types import ClassInfo

SEMANTIC_FORMATS = ("npy", "png")
PROBABILITY_TOLERANCE = 1e-3
"""Semantic values may stray this far outside [0, 1] (float rounding) before it is an error."""


class PredictionImportError(ValueError):
    """An input of ``import-predictions`` is missing or inconsistent; the message names it."""


@dataclass
class ImportedDetections:
    """One image's detections, decoded (binary image-relative masks)."""

    boxes: np.ndarray  # (N, 4) float32 x0, y0, x1, y1
    scores: np.ndarray  # (N,) float32
    labels: np.ndarray  # (N,) int64 class index
    masks: np.ndarray  # (N, H, W) bool


def load_results(path: str | os.PathLike, split: CanonicalSplit) -> tuple[dict[int, list[tuple[int, dict]]], bytes]:
    """COCO results of ``path`` grouped by image id: ``{image_id: [(entry index, entry)]}``, and the file's bytes.

    Checks every entry's keys, image id (must be in the split) and category id (must be a
    thing class of the split); errors name the file, the entry and the offending id.
    """
    path = Path(path)
    if not path.exists():
        raise PredictionImportError(f"instance results not found: {path}")
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PredictionImportError(f"{path}: not valid JSON ({err})") from None
    if isinstance(data, dict) and "annotations" in data:
        data = data["annotations"]
    if not isinstance(data, list):
        raise PredictionImportError(f"{path}: expected a list of COCO results, got {type(data).__name__}")
    classes = split.classes
    index = classes.index_of_id()
    thing_ids = sorted(int(classes.ids[k]) for k in classes.thing_indices)
    known_images = {r.image_id for r in split.images}
    grouped: dict[int, list[tuple[int, dict]]] = {}
    for i, entry in enumerate(data):
        where = f"{path}: result {i}"
        if not isinstance(entry, dict):
            raise PredictionImportError(f"{where}: expected an object, got {type(entry).__name__}")
        missing = [k for k in ("image_id", "category_id", "segmentation", "score") if k not in entry]
        if missing:
            raise PredictionImportError(f"{where}: missing keys {missing}")
        image_id, category = entry["image_id"], entry["category_id"]
        if not isinstance(image_id, int) or image_id not in known_images:
            raise PredictionImportError(f"{where}: image_id {image_id!r} is not an image of the split {split.root}")
        if not isinstance(category, int) or category not in index:
            raise PredictionImportError(f"{where} (image_id {image_id}): category_id {category!r} is not in {split.root / 'classes.json'} (ids {list(classes.ids)})")
        if not classes.is_thing[index[category]]:
            raise PredictionImportError(
                f"{where} (image_id {image_id}): category_id {category} ({classes.names[index[category]]}) is a stuff class; "
                f"instances must be thing classes {thing_ids}"
            )
        score = entry["score"]
        if not isinstance(score, (int, float)) or not 0.0 <= float(score) <= 1.0:
            raise PredictionImportError(f"{where} (image_id {image_id}): score {score!r} is not in [0, 1]")
        grouped.setdefault(image_id, []).append((i, entry))
    return grouped, raw


def decode_detections(entries: list[tuple[int, dict]], record: ImageRecord, classes: ClassInfo, source: Path) -> ImportedDetections:
    """Decode one image's result entries into boxes, scores, labels and (N, H, W) bool masks."""
    from pycocotools import mask as mask_utils

    height, width = record.height, record.width
    n = len(entries)
    index = classes.index_of_id()
    masks = np.zeros((n, height, width), bool)
    boxes = np.zeros((n, 4), np.float32)
    scores = np.zeros(n, np.float32)
    labels = np.zeros(n, np.int64)
    for j, (i, entry) in enumerate(entries):
        where = f"{source}: result {i} (image_id {record.image_id}, {record.name})"
        seg = entry["segmentation"]
        try:
            if isinstance(seg, dict):
                size = [int(v) for v in seg.get("size", ())]
                if size != [height, width]:
                    raise PredictionImportError(f"{where}: RLE size {seg.get('size')} differs from the image size {[height, width]}")
                counts = seg["counts"]
                rle = mask_utils.frPyObjects(seg, height, width) if isinstance(counts, list) else {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
            elif isinstance(seg, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width)) if seg else None
            else:
                raise PredictionImportError(f"{where}: segmentation must be an RLE object or a polygon list, got {type(seg).__name__}")
            if rle is None:
                mask = np.zeros((height, width), bool)
            else:
                with warnings.catch_warnings():  # pycocotools' own numpy-2 deprecation notice, not ours
                    warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
                    mask = mask_utils.decode(rle).astype(bool)
        except PredictionImportError:
            raise
        except (KeyError, TypeError, ValueError) as err:
            raise PredictionImportError(f"{where}: cannot decode segmentation ({err})") from None
        masks[j] = mask
        bbox = entry.get("bbox")
        if bbox is None:
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            bbox = [cols[0], rows[0], cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]] if len(rows) else [0, 0, 0, 0]
        elif len(bbox) != 4:
            raise PredictionImportError(f"{where}: bbox must be [x, y, w, h], got {bbox!r}")
        x, y, w, h = (float(v) for v in bbox)
        boxes[j] = (x, y, x + w, y + h)
        scores[j] = float(entry["score"])
        labels[j] = index[int(entry["category_id"])]
    return ImportedDetections(boxes, scores, labels, masks)


def load_semantic(path: Path, record: ImageRecord, classes: ClassInfo, semantic_format: str) -> tuple[np.ndarray, bytes]:
    """(C, h, w) float32 probabilities of one image from ``path``, and the file's bytes."""
    if not path.exists():
        raise PredictionImportError(f"semantic prediction of image {record.name} (id {record.image_id}) not found: {path}")
    raw = path.read_bytes()
    c = classes.num_classes
    if semantic_format == "npy":
        try:
            prob = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise PredictionImportError(f"{path}: not a readable .npy array ({err})") from None
        if prob.ndim != 3 or prob.shape[0] != c:
            raise PredictionImportError(f"{path}: expected ({c}, h, w) class probabilities, got shape {prob.shape}")
        if prob.shape[1] > record.height or prob.shape[2] > record.width or 0 in prob.shape:
            raise PredictionImportError(f"{path}: size {prob.shape[1:]} does not fit the image size {(record.height, record.width)}")
        prob = prob.astype(np.float32, copy=False)
        if not np.isfinite(prob).all():
            raise PredictionImportError(f"{path}: probabilities contain NaN or infinity")
        lo, hi = float(prob.min()), float(prob.max())
        if lo < -PROBABILITY_TOLERANCE or hi > 1 + PROBABILITY_TOLERANCE:
            raise PredictionImportError(f"{path}: values span [{lo:.4g}, {hi:.4g}]; expected probabilities in [0, 1] (softmax outputs, not logits)")
        return prob, raw
    try:
        label = read_image(path)
    except (BadImageError, OSError, ValueError) as err:
        raise PredictionImportError(f"{path}: not a readable label PNG ({err})") from None
    if label.ndim != 2:
        raise PredictionImportError(f"{path}: expected a single-channel label PNG, got shape {label.shape}")
    if label.shape != (record.height, record.width):
        raise PredictionImportError(f"{path}: size {label.shape} differs from the image size {(record.height, record.width)}")
    bad = np.unique(label[(label >= c) & (label != classes.ignore_index)])
    if len(bad):
        raise PredictionImportError(f"{path}: class indices {bad.tolist()[:10]} outside 0..{c - 1} (and {classes.ignore_index} = void)")
    # one-hot; void (255) matches no class, so its probabilities are all zero
    prob = (np.arange(c, dtype=label.dtype)[:, None, None] == label[None]).astype(np.float32)
    return prob, raw


def import_predictions(
    data: str | os.PathLike,
    instances: str | os.PathLike,
    semantic: str | os.PathLike,
    out: str | os.PathLike,
    semantic_format: str = "npy",
    shard: tuple[int, int] = (0, 1),
    model: str = "imported",
) -> dict:
    """Write the cache ``out`` for the images of shard ``shard`` = (index, count) of split ``data``.

    Returns ``{"images", "detections", "config_hash"}``. Raises PredictionImportError (a
    ValueError) naming the file, image or category id at fault; nothing is written then.
    """
    if semantic_format not in SEMANTIC_FORMATS:
        raise PredictionImportError(f"unknown semantic format {semantic_format!r}; valid: {list(SEMANTIC_FORMATS)}")
    split = CanonicalSplit(data)
    classes = split.classes
    semantic_dir = Path(semantic)
    if not semantic_dir.is_dir():
        raise PredictionImportError(f"semantic prediction folder not found: {semantic_dir}")
    grouped, raw = load_results(instances, split)
    records = shard_records(split.images, *shard)
    digest = hashlib.sha256(raw)
    digest.update(semantic_format.encode())
    provenance = {
        **package_provenance(),
        "imported_from": {"instances": str(instances), "semantic": str(semantic_dir), "semantic_format": semantic_format},
    }
    detections = 0
    from segfusion.provenance import split_identity

    lineage = {"data": {"path": str(data), "identity": split_identity(data)}, "shard": f"{shard[0]}/{shard[1]}"}  # provenance chain
    with CacheWriter(out, model, "", classes, provenance, lineage=lineage) as writer:
        for rec in records:
            det = decode_detections(grouped.get(rec.image_id, []), rec, classes, Path(instances))
            prob, sem_raw = load_semantic(semantic_dir / f"{rec.name}.{semantic_format}", rec, classes, semantic_format)
            digest.update(rec.name.encode())
            digest.update(hashlib.sha256(sem_raw).digest())
            writer.add(rec.name, rec.image_id, (rec.height, rec.width), det.boxes, det.scores, det.labels, None, prob, mask_image=det.masks)
            detections += len(det.boxes)
        writer.config_hash = digest.hexdigest()[:16]
    return {"images": len(records), "detections": detections, "config_hash": writer.config_hash}
