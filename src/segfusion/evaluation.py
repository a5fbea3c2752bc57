"""Evaluation glue between files and the pure metric accumulators (`segfusion.metrics`).

`evaluate_fused` reads one fused shard and its ground truth and returns the JSON state of
every accumulator; `gather_states` merges shard states and computes the final metrics
once (AP on the concatenated detections).
"""

from __future__ import annotations

import os

import numpy as np
from tqdm import tqdm

from segfusion.datasets.canonical import CanonicalSplit
from segfusion.io.atomic import read_json
from segfusion.io.fused import read_fused
from segfusion.metrics import (
    BoundaryAccuracy,
    InstanceAP,
    PanopticQuality,
    SemanticConfusion,
    accumulator_from_state,
)

DEFAULT_BOUNDARY_BINS = (0, 2, 4, 8, 16, 32, 64)


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of x0, y0, x1, y1 boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def rpn_recall(gt_boxes: np.ndarray, proposals: np.ndarray, iou: float = 0.5) -> float | None:
    """Fraction of ground-truth boxes covered by a proposal with IoU >= ``iou`` (JSIS Table 4)."""
    if len(gt_boxes) == 0:
        return None
    return float((_box_iou(gt_boxes, proposals).max(axis=1, initial=0) >= iou).mean())


def evaluate_fused(data: str | os.PathLike, fused: str | os.PathLike, cache: str | os.PathLike | None, params: dict) -> dict:
    split = CanonicalSplit(data)
    classes = split.classes
    c = classes.num_classes
    acc = {
        "semantic": SemanticConfusion(c, is_thing=classes.is_thing),
        "panoptic": PanopticQuality(classes),
        "boundary": BoundaryAccuracy(c, bins=tuple(params.get("boundary_bins", DEFAULT_BOUNDARY_BINS))),
        "instance": InstanceAP(classes),
    }
    gts = {}
    n = 0
    for name, _, pred in tqdm(read_fused(fused), desc="evaluate"):
        rec = split.record(name)
        gt = split.panoptic(rec)
        if gt.image_size != pred.image_size:
            raise ValueError(f"image {name}: prediction size {pred.image_size} differs from ground truth {gt.image_size}")
        gt_sem = gt.semantic
        acc["semantic"].update(gt_sem, pred.semantic, image_id=name)
        acc["panoptic"].update(gt, pred, image_id=name)
        acc["boundary"].update(gt_sem, pred.semantic, image_id=name)
        acc["instance"].update(gt, pred, image_id=name)
        gts[name] = gt
        n += 1
    diagnostics: dict = {}
    if cache:
        acc["instance_before_fusion"], diagnostics = _evaluate_cache(cache, gts, classes)
    return {"n_images": n, "accumulators": {k: v.state() for k, v in acc.items()}, "diagnostics": diagnostics}


def _evaluate_cache(cache, gts: dict, classes):
    """AP of the raw detections (before fusion) and the prediction diagnostics."""
    from pycocotools import mask as mask_utils

    from segfusion.inference.cache import CacheReader
    from segfusion.inference.paste import masks_to_image

    ap = InstanceAP(classes)
    recalls, dets, seconds = [], [], []
    with CacheReader(cache) as reader:
        for cached in reader:
            gt = gts.get(cached.name)
            if gt is None:
                continue
            inst = cached.instances
            masks = masks_to_image(inst, threshold=0.5) if len(inst) else np.zeros((0, *inst.image_size), bool)
            rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
            ap.add_ground_truth(cached.name, gt)
            ap.add_detections(cached.name, inst.labels, inst.scores, inst.boxes, rles)
            gt_boxes = np.array([[s.bbox[0], s.bbox[1], s.bbox[0] + s.bbox[2], s.bbox[1] + s.bbox[3]] for s in gt.segments if s.is_thing and not s.iscrowd], np.float64).reshape(-1, 4)
            if cached.proposals is not None:
                r = rpn_recall(gt_boxes, cached.proposals.astype(np.float64))
                if r is not None:
                    recalls.append(r)
            dets.append(len(inst))
            seconds.append(cached.forward_seconds)
    diag = {"rpn_recall_sum": float(sum(recalls)), "rpn_recall_images": len(recalls), "detections_sum": int(sum(dets)), "forward_seconds_sum": float(sum(seconds)), "images": len(dets)}
    return ap, diag


def _merge_diagnostics(diags: list[dict]) -> dict:
    total: dict = {}
    for d in diags:
        for k, v in d.items():
            total[k] = total.get(k, 0) + v
    if not total:
        return {}
    return {
        "rpn_recall": total["rpn_recall_sum"] / total["rpn_recall_images"] if total.get("rpn_recall_images") else None,
        "detections_per_image": total["detections_sum"] / max(total["images"], 1),
        "forward_ms_per_image": 1000 * total["forward_seconds_sum"] / max(total["images"], 1),
    }


def most_frequent_class_miou(confusion: np.ndarray) -> float | None:
    """mIoU of the trivial baseline that predicts the most frequent ground-truth class everywhere.

    confusion (C, C + 1): rows ground truth, columns prediction (last = void). Classes absent
    from the ground truth and not predicted are excluded, as in the real mIoU.
    """
    gt = confusion.sum(axis=1).astype(np.float64)
    total = gt.sum()
    if total == 0:
        return None
    k = int(gt.argmax())
    present = gt > 0
    present[k] = True
    return float(gt[k] / total / present.sum())


def gather_states(paths: list[str], meta: dict) -> dict:
    """Merge shard states; return ``{meta, metrics (flat headline numbers), details}``."""
    merged: dict = {}
    diags = []
    n = 0
    for path in paths:
        state = read_json(path)
        n += state["n_images"]
        diags.append(state.get("diagnostics", {}))
        for key, s in state["accumulators"].items():
            a = accumulator_from_state(s)
            if key in merged:
                merged[key].merge(a)
            else:
                merged[key] = a
    results = {k: v.result() for k, v in merged.items()}
    metrics: dict = {"n_images": n}
    sem, pq = results.get("semantic", {}), results.get("panoptic", {})
    for k in ("miou", "macc", "pixel_acc", "miou_things", "miou_stuff"):
        metrics[k] = sem.get(k)
    for k in ("pq", "sq", "rq", "pq_things", "sq_things", "rq_things", "pq_stuff", "sq_stuff", "rq_stuff", "pq_dagger"):
        metrics[k] = pq.get(k)
    for key, suffix in (("instance", ""), ("instance_before_fusion", "_before_fusion")):
        for k, v in results.get(key, {}).items():
            if k.startswith("ap") and not isinstance(v, dict):
                metrics[f"{k}{suffix}"] = v
    if "semantic" in merged:
        metrics["miou_most_frequent_class"] = most_frequent_class_miou(merged["semantic"].confusion)
    metrics.update(_merge_diagnostics(diags))
    return {"meta": meta, "metrics": metrics, "details": results}
