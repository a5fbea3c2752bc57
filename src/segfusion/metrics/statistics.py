"""Pure statistics over metric counts: per-class IoU, PQ/mIoU from summed counts, the
percentile bootstrap of `gather`, RPN recall and the most-frequent-class baseline.

No I/O and no accumulator state: these take arrays (or the JSON-able per-image statistics
that `segfusion.evaluation` collects) and return numbers.
"""

from __future__ import annotations

import numpy as np

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
BOOTSTRAP_LEVEL = 0.95


def class_iou(tp: np.ndarray, gt_total: np.ndarray, pred_total: np.ndarray) -> np.ndarray:
    """Per-class IoU = TP / (GT + P - TP) (Cityscapes pixel-level rule); NaN where GT + P = 0.

    The one IoU formula of the semantic metrics: `SemanticConfusion` and the bootstrap's
    `miou_from_sums` both use it. Arrays of any (equal) shape; float64 result.
    """
    tp = np.asarray(tp, dtype=np.float64)
    denom = np.asarray(gt_total, dtype=np.float64) + np.asarray(pred_total, dtype=np.float64) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, tp / np.where(denom > 0, denom, 1.0), np.nan)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
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
    return float((box_iou(gt_boxes, proposals).max(axis=1, initial=0) >= iou).mean())


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


def dense_per_image(rows: list[list[list[float]]], num_classes: int, width: int) -> np.ndarray:
    """(N, C, width) float64 from per-image sparse ``[class, v1, ..., v_width]`` rows."""
    out = np.zeros((len(rows), num_classes, width), dtype=np.float64)
    for i, row in enumerate(rows):
        for entry in row:
            out[i, int(entry[0])] = entry[1:]
    return out


def pq_from_sums(s: np.ndarray) -> np.ndarray:
    """PQ from per-class sums (..., C, 4) of ``tp, fp, fn, iou_sum``; NaN where no class counts.

    Same rules as `PanopticQuality.result` (panopticapi): PQ_c = iou_sum / (TP + FP/2 + FN/2)
    over classes with TP + FP + FN > 0, averaged over those classes.
    """
    tp, fp, fn, iou = s[..., 0], s[..., 1], s[..., 2], s[..., 3]
    denom = tp + 0.5 * fp + 0.5 * fn
    present = denom > 0
    pq_c = np.where(present, iou / np.where(present, denom, 1.0), 0.0)
    n = present.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(np.where(n > 0, pq_c.sum(axis=-1) / np.maximum(n, 1), np.nan), 0.0, 1.0)


def miou_from_sums(s: np.ndarray) -> np.ndarray:
    """mIoU from per-class sums (..., C, 3) of ``tp, gt_pixels, predicted_pixels``; NaN where no class counts.

    Same rules as `SemanticConfusion` (Cityscapes): IoU_c = TP / (GT + P - TP) over classes
    with GT + P > 0.
    """
    iou = class_iou(s[..., 0], s[..., 1], s[..., 2])
    present = ~np.isnan(iou)
    iou = np.where(present, iou, 0.0)
    n = present.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(np.where(n > 0, iou.sum(axis=-1) / np.maximum(n, 1), np.nan), 0.0, 1.0)


def bootstrap_ci(
    per_image_stats: dict,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = BOOTSTRAP_LEVEL,
) -> dict[str, list[float] | None]:
    """Percentile bootstrap confidence intervals of the dataset-level PQ and mIoU.

    The papers report point estimates only; with a few hundred validation images the
    difference between two fusion methods is often within the sampling noise, so we add an
    interval. Procedure (Efron's percentile bootstrap over images):

    1. draw ``resamples`` resamples of the N images, with replacement, from
       ``numpy.random.default_rng(seed)`` (fixed seed: the interval is deterministic);
    2. for each resample, sum the per-image class statistics (PQ: TP, FP, FN, IoU sum per
       class; mIoU: TP, ground-truth and predicted pixels per class) with the image
       multiplicities and recompute PQ and mIoU **with the dataset-level rules**, i.e. the
       same statistic as the point estimate, not a mean of per-image scores;
    3. the interval is the ((1 - level) / 2, (1 + level) / 2) percentiles of the resampled
       values (resamples where no class counts are dropped), clipped to [0, 1].

    Returns ``{"pq": [lo, hi] | None, "miou": [lo, hi] | None}`` (None without images).
    """
    if not 0 < level < 1:
        raise ValueError(f"bootstrap_ci: level must be in (0, 1), got {level}")
    names = per_image_stats.get("images", [])
    n = len(names)
    out: dict[str, list[float] | None] = {"pq": None, "miou": None}
    if n == 0 or resamples < 1:
        return out
    c = int(per_image_stats["num_classes"])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    # multiplicity of every image in every resample, (B, N)
    weights = np.bincount((idx + n * np.arange(resamples)[:, None]).ravel(), minlength=resamples * n)
    weights = weights.reshape(resamples, n).astype(np.float64)
    q = [50 * (1 - level), 50 * (1 + level)]
    for key, width, stat in (("pq", 4, pq_from_sums), ("miou", 3, miou_from_sums)):
        rows = per_image_stats.get("panoptic" if key == "pq" else "semantic")
        if rows is None or len(rows) != n:
            continue
        dense = dense_per_image(rows, c, width).reshape(n, c * width)
        values = stat((weights @ dense).reshape(resamples, c, width))
        values = values[~np.isnan(values)]
        if len(values):
            lo, hi = np.percentile(values, q)
            out[key] = [float(np.clip(lo, 0, 1)), float(np.clip(hi, 0, 1))]
    return out
