"""Export a prediction cache in the exchange format of ``segfusion import-predictions``.

``out_dir/instances.json``: COCO results, one entry per detection in cache order:
``image_id`` (the split's id), ``category_id`` (native id from the cache's classes),
``segmentation`` (compressed RLE of the image-relative mask binarised as ``prob >=
threshold``, box-relative masks pasted with `segfusion.inference.paste`), ``score`` and
``bbox`` (the detection's box as x, y, w, h).
``out_dir/semantic/{name}.npy``: the (C, h, w) float32 semantic probabilities as cached
(dequantised, so re-importing them stores the very same uint8 values).

With a 0.5 threshold (the fusion methods' and AP's binarisation), fusion methods that use
binarised masks (kirillov, seamless, semantic) give the same outputs on the re-imported
cache as on the original one; soft-mask methods (jsis, costea) see binary masks instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from segfusion.inference.cache import CacheReader
from segfusion.inference.paste import instance_crop
from segfusion.io.atomic import atomic_dir, write_json
from segfusion.io.coco_results import coco_result_rle
from segfusion.io.rle import crop_rle


def cached_instance_results(reader: CacheReader, name: str, threshold: float = 0.5) -> list[dict]:
    """COCO results of one cached image (see the module docstring)."""
    det = reader.read_detections(name)
    inst = det.instances
    out = []
    for i in range(len(inst)):
        crop, (y0, x0) = instance_crop(inst, i)
        rle = crop_rle(crop >= threshold, (y0, x0), inst.image_size)  # from the crop, no full-frame mask
        b = inst.boxes[i].astype(np.float64)
        out.append(coco_result_rle(det.image_id, reader.classes.ids[int(inst.labels[i])], rle, inst.scores[i], (b[0], b[1], b[2] - b[0], b[3] - b[1])))
    return out


def export_predictions(cache: str | os.PathLike, out_dir: str | os.PathLike, threshold: float = 0.5) -> dict:
    """Write ``out_dir`` (atomically) from ``cache``; returns ``{"images", "detections"}``."""
    results: list[dict] = []
    with CacheReader(cache) as reader, atomic_dir(out_dir) as tmp:
        (tmp / "semantic").mkdir()
        for name in reader.names:
            results += cached_instance_results(reader, name, threshold)
            np.save(tmp / "semantic" / f"{name}.npy", reader.read_semantic(name).prob)
        write_json(Path(tmp) / "instances.json", results)
        images = len(reader)
    return {"images": images, "detections": len(results)}
