"""Batched prediction of a canonical split (or a shard of it) into the HDF5 cache."""

from __future__ import annotations

import time

import torch
from tqdm import tqdm

from segfusion.datasets.canonical import CanonicalSplit, ImageRecord
from segfusion.inference.cache import CacheWriter
from segfusion.inference.shards import shard_records  # noqa: F401  (re-exported)
from segfusion.specs import InferenceSpec, PredictSpec


def predict_split(
    model, split: CanonicalSplit, records: list[ImageRecord], writer: CacheWriter, spec: PredictSpec, inference: InferenceSpec
) -> dict:
    """Run ``model.predict`` with the test-time settings ``inference`` over ``records`` in
    batches of ``spec.batch_size`` and add each image to ``writer``.

    ``spec.store_canvas``: also store the IMP canvas of IMP models that have a semantic head
    (for ``maskrcnn_imp`` the canvas already is ``semantic_prob``).

    Returns throughput figures (images, seconds, images_per_second).
    """
    t_start = time.perf_counter()
    batch_size = spec.batch_size
    device = next(model.parameters()).device  # the images go where the model is
    for start in tqdm(range(0, len(records), batch_size), desc="predict", unit="batch"):
        batch = records[start : start + batch_size]
        images = [torch.from_numpy(split.image(r)).to(device).permute(2, 0, 1).float() / 255.0 for r in batch]
        t0 = time.perf_counter()
        preds = model.predict(images, inference)
        per_image = (time.perf_counter() - t0) / len(batch)
        for rec, p in zip(batch, preds):
            writer.add(
                rec.name,
                rec.image_id,
                p.image_size,
                p.boxes,
                p.scores,
                p.labels,
                p.mask_prob,
                p.semantic_prob,
                proposals=p.proposals,
                forward_seconds=per_image,
                canvas=p.canvas if spec.store_canvas else None,
            )
    seconds = time.perf_counter() - t_start
    return {"images": len(records), "seconds": seconds, "images_per_second": len(records) / max(seconds, 1e-9)}
