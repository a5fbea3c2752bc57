"""Evaluation glue between files and the pure metric accumulators (`segfusion.metrics`).

`evaluate_fused` reads one fused shard and its ground truth and returns the JSON state of
every accumulator, plus per-image class statistics (for confidence intervals) and
diagnostics (timings, model size and FLOPs); `gather_states` merges shard states and
computes the final metrics once (AP on the concatenated detections).

The gathered JSON is ``{"meta", "metrics", "details"}``:

* ``metrics``: flat headline numbers (``pq``, ``miou``, ``ap_mask``, ...), the bootstrap
  intervals ``pq_ci`` and ``miou_ci`` (``[lo, hi]``, see `segfusion.metrics.statistics.bootstrap_ci`), and, when the
  shards carry them, ``forward_ms_per_image`` (measured network time, from the cache),
  ``fusion_ms_per_image`` (from the fused shards' ``panoptic.json`` meta, weighted by
  images), ``parameters`` and ``flops`` (from the cache provenance, written by
  ``segfusion predict``; IMP Table 6, Seamless Sec. 5.4);
* ``details``: every accumulator's ``result()``, ``per_image`` (``[{"image", "pq",
  "miou"}]`` in shard order, from the accumulator states) and ``efficiency``.

No torch here: the cache is read with h5py.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

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
from segfusion.metrics.statistics import (
    BOOTSTRAP_LEVEL,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    bootstrap_ci,
    most_frequent_class_miou,
    rpn_recall,
)

DEFAULT_BOUNDARY_BINS = (0, 2, 4, 8, 16, 32, 64)
PER_IMAGE_STATS_VERSION = 1
# Metrics that are ratios: checked to lie in [0, 1] before they are reported.
UNIT_INTERVAL_KEYS = (
    "miou", "macc", "pixel_acc", "miou_things", "miou_stuff", "pq", "sq", "rq", "pq_things", "sq_things",
    "rq_things", "pq_stuff", "sq_stuff", "rq_stuff", "pq_dagger", "miou_most_frequent_class", "rpn_recall",
)  # fmt: skip


# --------------------------------------------------------------------------- per-image statistics
def _semantic_row(cm: np.ndarray) -> list[list[int]]:
    """Sparse per-class ``[class, tp, gt_pixels, predicted_pixels]`` of one image's (C, C + 1) confusion.

    ``gt_pixels`` counts valid ground truth (void predictions included, they are false
    negatives); ``predicted_pixels`` counts predictions on valid ground truth. Classes with
    no pixel on either side are left out.
    """
    c = cm.shape[0]
    tp = np.diag(cm[:, :c])
    gt = cm.sum(axis=1)
    pred = cm[:, :c].sum(axis=0)
    return [[int(k), int(tp[k]), int(gt[k]), int(pred[k])] for k in np.flatnonzero(gt + pred)]


def _panoptic_row(pq: PanopticQuality) -> list[list[float]]:
    """Sparse per-class ``[class, tp, fp, fn, iou_sum]`` of a one-image `PanopticQuality`."""
    out = []
    for k in np.flatnonzero(pq.tp + pq.fp + pq.fn):
        out.append([int(k), int(pq.tp[k]), int(pq.fp[k]), int(pq.fn[k]), pq.iou_q[k] / float(1 << 64)])
    return out


def _fusion_ms(fused: Path) -> float | None:
    """``fusion_ms_per_image`` from a fused shard's ``panoptic.json`` meta (None when absent)."""
    path = fused / "panoptic.json"
    if not path.exists():
        return None
    v = read_json(path).get("meta", {}).get("fusion_ms_per_image")
    return None if v is None else float(v)


def evaluate_fused(data: str | os.PathLike, fused: str | os.PathLike, cache: str | os.PathLike | None, params: dict) -> dict:
    """Metric state of one fused shard against the canonical split ``data``.

    Returns ``{"n_images", "accumulators" (each state()), "per_image_stats", "diagnostics"}``.
    Each image is first scored by fresh one-image accumulators that are then merged into the
    shard's ones, so the per-image class statistics (for `segfusion.metrics.statistics.bootstrap_ci`) cost no second pass.
    Raises ValueError naming the image when a prediction's size differs from its ground
    truth, when its id map holds an id missing from ``panoptic.json``, or when a class is
    outside the class list.
    """
    from segfusion.provenance import evaluation_lineage

    lineage = evaluation_lineage(data, fused, cache, params)  # provenance chain: refuses a mismatched cache or fused output
    split = CanonicalSplit(data)
    classes = split.classes
    c = classes.num_classes
    acc = {
        "semantic": SemanticConfusion(c, is_thing=classes.is_thing),
        "panoptic": PanopticQuality(classes),
        "boundary": BoundaryAccuracy(c, bins=tuple(params.get("boundary_bins", DEFAULT_BOUNDARY_BINS))),
        "instance": InstanceAP(classes, native_ids=True),
    }
    gts = {}
    names: list[str] = []
    image_ids: list[int] = []
    sem_rows: list[list[list[int]]] = []
    pan_rows: list[list[list[float]]] = []
    for rec, pred in tqdm(_fused_images(split, fused), desc="evaluate"):
        name = rec.name
        gt = split.panoptic(rec)
        if gt.image_size != pred.image_size:
            raise ValueError(f"image {name}: prediction size {pred.image_size} differs from ground truth {gt.image_size}")
        # Panoptic first: it rejects ids of the id map that panoptic.json does not list
        # (Panoptic.semantic would silently turn them into void).
        one_pq = PanopticQuality(classes)
        one_pq.update(gt, pred, image_id=name)
        gt_sem = gt.semantic
        one_sem = SemanticConfusion(c, is_thing=classes.is_thing)
        one_sem.update(gt_sem, pred.semantic, image_id=name)
        acc["panoptic"].merge(one_pq)
        acc["semantic"].merge(one_sem)
        acc["boundary"].update(gt_sem, pred.semantic, image_id=name)
        add_instance_ground_truth(acc["instance"], split, rec, gt)
        acc["instance"].add_panoptic_detections(name, pred)
        names.append(name)
        image_ids.append(rec.image_id)
        sem_rows.append(_semantic_row(one_sem.confusion))
        pan_rows.append(_panoptic_row(one_pq))
        gts[name] = (rec, gt)
    diagnostics: dict = {}
    fusion_ms = _fusion_ms(Path(fused))
    if fusion_ms is not None and names:
        diagnostics.update(fusion_ms_sum=fusion_ms * len(names), fusion_images=len(names))
    if cache:
        acc["instance_before_fusion"], cache_diag = _evaluate_cache(cache, gts, split)
        diagnostics.update(cache_diag)
    per_image_stats = {
        "version": PER_IMAGE_STATS_VERSION,
        "num_classes": c,
        "images": names,
        "image_ids": image_ids,
        "semantic": sem_rows,
        "panoptic": pan_rows,
    }
    return {
        "n_images": len(names),
        "accumulators": {k: v.state() for k, v in acc.items()},
        "per_image_stats": per_image_stats,
        "diagnostics": diagnostics,
        "lineage": lineage,
    }


def add_instance_ground_truth(ap: InstanceAP, split: CanonicalSplit, rec, gt) -> None:
    """One image's AP ground truth: the split's ``instances.json`` as given when it has one
    (COCO / ModaNet annotations: overlaps, crowd, annotation boxes), else the thing segments
    of the panoptic ground truth ``gt`` (splits written before ``instances.json`` existed)."""
    if split.has_instances:
        ap.add_coco_ground_truth(
            rec.name, rec.height, rec.width, split.instance_annotations(rec), coco_id=rec.image_id, source=split.root / "instances.json"
        )
    else:
        ap.add_ground_truth(rec.name, gt, coco_id=rec.image_id)


def _fused_images(split: CanonicalSplit, fused):
    """(record, Panoptic) of every image of the fused folder, matched to the split by image id.

    The fused folder may be ours or any COCO-panoptic prediction (panopticapi, detectron2,
    mmdetection: `read_fused`); classes are the split's. An image id of the prediction that
    the split does not have is an error naming both files.
    """
    for name, image_id, pred in read_fused(fused, classes=split.classes):
        try:
            rec = split.record_by_id(image_id)
        except KeyError:
            raise ValueError(f"{fused}: prediction for image id {image_id} ({name}), which is not an image of {split.root / 'panoptic.json'}") from None
        yield rec, pred


def _evaluate_cache(cache, gts: dict, split: CanonicalSplit):
    """AP of the raw detections (before fusion), the prediction diagnostics and the model's cost."""
    from segfusion.inference.cache import CacheReader
    from segfusion.inference.paste import instance_crop
    from segfusion.io.rle import compress, crop_rle_counts

    classes = split.classes
    ap = InstanceAP(classes, native_ids=True)
    recalls, dets, seconds = [], [], []
    with CacheReader(cache) as reader:
        efficiency = dict(reader.provenance.get("efficiency") or {})
        for cached in reader.iter_detections():  # the semantic part is not needed here
            if cached.name not in gts:
                continue
            rec, gt = gts[cached.name]
            inst = cached.instances
            # one detection at a time, from its crop: never all masks at full resolution
            crops = (instance_crop(inst, i) for i in range(len(inst)))
            rles = compress([crop_rle_counts(crop >= 0.5, offset, inst.image_size) for crop, offset in crops], inst.image_size)
            add_instance_ground_truth(ap, split, rec, gt)
            ap.add_detections(cached.name, inst.labels, inst.scores, inst.boxes, rles)
            gt_boxes = np.array([[s.bbox[0], s.bbox[1], s.bbox[0] + s.bbox[2], s.bbox[1] + s.bbox[3]] for s in gt.segments if s.is_thing and not s.iscrowd], np.float64).reshape(-1, 4)
            if cached.proposals is not None:
                r = rpn_recall(gt_boxes, cached.proposals.astype(np.float64))
                if r is not None:
                    recalls.append(r)
            dets.append(len(inst))
            seconds.append(cached.forward_seconds)
    # Per-image values, not sums: gather adds them with math.fsum, so K shards give bit-for-bit
    # the figures of one.
    diag: dict[str, Any] = {"rpn_recall_values": recalls, "forward_seconds_values": seconds, "detections_sum": int(sum(dets)), "images": len(dets)}
    if efficiency:
        diag["efficiency"] = efficiency
    return ap, diag


def _merge_diagnostics(diags: list[dict]) -> dict:
    """Sum the shards' counters into per-image figures; the model's cost is taken from any shard.

    ``fusion_ms_per_image`` is the image-weighted mean of the shards' fusion times.
    """
    total: dict = {}
    values: dict[str, list[float]] = {}
    efficiency: dict = {}
    for d in diags:
        for k, v in d.items():
            if k == "efficiency":
                efficiency = efficiency or dict(v)
            elif isinstance(v, list):
                values.setdefault(k, []).extend(v)
            elif isinstance(v, (int, float)):
                total[k] = total.get(k, 0) + v
    out: dict = {}
    if "images" in total:
        recalls = values.get("rpn_recall_values", [])
        out.update(
            rpn_recall=math.fsum(recalls) / len(recalls) if recalls else None,
            detections_per_image=total["detections_sum"] / max(total["images"], 1),
            forward_ms_per_image=1000 * math.fsum(values.get("forward_seconds_values", [])) / max(total["images"], 1),
        )
    if total.get("fusion_images"):
        out["fusion_ms_per_image"] = total["fusion_ms_sum"] / total["fusion_images"]
    if efficiency:
        out["parameters"] = efficiency.get("parameters")
        out["flops"] = efficiency.get("flops")
        out["efficiency"] = efficiency
    return out


# --------------------------------------------------------------------------- bootstrap
def _concat_per_image_stats(parts: list[dict | None]) -> dict | None:
    """Concatenate shard per-image statistics (None when any shard lacks them)."""
    if not parts or any(p is None for p in parts):
        return None
    c = {int(p["num_classes"]) for p in parts}
    if len(c) != 1:
        raise ValueError(f"gather: shards disagree on the number of classes {sorted(c)}")
    out: dict = {"version": PER_IMAGE_STATS_VERSION, "num_classes": c.pop(), "images": [], "image_ids": [], "semantic": [], "panoptic": []}
    for p in parts:
        for key in ("images", "semantic", "panoptic"):
            out[key].extend(p[key])
        out["image_ids"].extend(p.get("image_ids") or [None] * len(p["images"]))
    return out


def _per_image_scores(merged: dict, ids: dict[str, int] | None = None) -> list[dict]:
    """``[{"image", "image_id", "pq", "miou"}]`` from the accumulators' own per-image lists.

    ``image_id`` is the split's (native) image id of the image, None when the shards predate it.
    """
    ids = ids or {}
    pq = merged["panoptic"].per_image if "panoptic" in merged else []
    sem = dict(merged["semantic"].per_image) if "semantic" in merged else {}
    rows = [{"image": name, "image_id": ids.get(name), "pq": v, "miou": sem.get(name)} for name, v in pq]
    seen = {name for name, _ in pq}
    rows += [{"image": name, "image_id": ids.get(name), "pq": None, "miou": v} for name, v in sem.items() if name not in seen]
    return rows


def _check_unit_interval(metrics: dict, where: str) -> None:
    """Refuse to report a ratio outside [0, 1] (a bug upstream, never a result)."""
    for key in UNIT_INTERVAL_KEYS:
        v = metrics.get(key)
        if v is not None and not (0.0 <= v <= 1.0):
            raise ValueError(f"{where}: metric {key} = {v} outside [0, 1]")
    for key in ("pq_ci", "miou_ci"):
        ci = metrics.get(key)
        if ci is not None and not (0.0 <= ci[0] <= ci[1] <= 1.0):
            raise ValueError(f"{where}: interval {key} = {ci} is not inside [0, 1]")


def gather_states(paths: list[str], meta: dict, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict:
    """Merge shard states; return ``{meta, metrics (flat headline numbers), details}``.

    Shards are merged in the order given (the per-image lists follow it). ``resamples`` and
    ``seed`` parametrise the bootstrap intervals (`bootstrap_ci`).
    """
    merged: dict = {}
    diags = []
    from segfusion.provenance import check_same_generation

    stats_parts: list[dict | None] = []
    lineages: list[dict | None] = []
    n = 0
    for path in paths:
        state = read_json(path)
        lineages.append(state.get("lineage"))
        check_same_generation(paths[0], lineages[0], path, lineages[-1])  # before merging (provenance chain)
        n += state["n_images"]
        diags.append(state.get("diagnostics", {}))
        stats_parts.append(state.get("per_image_stats"))
        for key, s in state["accumulators"].items():
            a = accumulator_from_state(s)
            if key in merged:
                merged[key].merge(a)
            else:
                merged[key] = a
    results: dict[str, Any] = {k: v.result() for k, v in merged.items()}
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
    diag = _merge_diagnostics(diags)
    efficiency = diag.pop("efficiency", None)
    metrics.update(diag)
    stats = _concat_per_image_stats(stats_parts)
    ci = bootstrap_ci(stats, resamples=resamples, seed=seed) if stats else {"pq": None, "miou": None}
    metrics["pq_ci"], metrics["miou_ci"] = ci["pq"], ci["miou"]
    _check_unit_interval(metrics, f"gather {meta}")
    ids = {n: i for n, i in zip(stats["images"], stats["image_ids"]) if i is not None} if stats else {}
    results["per_image"] = _per_image_scores(merged, ids)
    # For the claims' paired bootstrap over images x seeds (segfusion.claim_statistics): the
    # per-image class statistics and which classes are things.
    if stats:
        results["per_image_stats"] = stats
    if "panoptic" in merged:
        classes = merged["panoptic"].classes
        results["classes"] = {"names": list(classes.names), "is_thing": [bool(t) for t in classes.is_thing]}
    if efficiency:
        results["efficiency"] = efficiency
    results["bootstrap"] = {"resamples": resamples, "seed": seed, "level": BOOTSTRAP_LEVEL, "method": "percentile, images resampled"}
    from segfusion.provenance import gathered_lineage

    return {"meta": meta, "metrics": metrics, "details": results, "lineage": gathered_lineage(paths, lineages)}
