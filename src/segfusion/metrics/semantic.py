"""Semantic segmentation metrics: a mergeable confusion matrix (mIoU, mAcc, pixel accuracy).

The rules are those of the Cityscapes pixel-level benchmark
(``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling``), which the tests check
to 1e-9 through its real file format:

* ground-truth pixels labelled ``ignore_index`` are left out entirely;
* a prediction of ``ignore_index`` (void, "no decision") on a valid ground-truth pixel is a
  false negative of the ground-truth class and a false positive of nothing;
* IoU_c = TP / (TP + FP + FN); a class with TP + FP + FN = 0 (absent from both ground truth
  and prediction) has no IoU and is excluded from the mean;
* Acc_c = TP / (TP + FN) (per-class recall), excluded when the class is absent from the
  ground truth; ``pixel_acc`` = correct / valid ground-truth pixels.

Pure computation: arrays in, numbers out; no file I/O, no torch.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from segfusion.metrics.statistics import class_iou

STATE_VERSION = 1


# --------------------------------------------------------------------------- helpers
def _image_name(image_id: object | None) -> str:
    return "" if image_id is None else f" in image {image_id!r}"


def check_same_size(gt: np.ndarray, pred: np.ndarray, image_id: object | None, what: str) -> None:
    """Raise ValueError naming both shapes (and the image) when ``gt`` and ``pred`` differ."""
    if gt.ndim != 2 or pred.ndim != 2:
        raise ValueError(
            f"{what}: expected (H, W) maps{_image_name(image_id)}, got ground truth {gt.shape} "
            f"and prediction {pred.shape}"
        )
    if gt.shape != pred.shape:
        raise ValueError(
            f"{what}: size mismatch{_image_name(image_id)}: ground truth {gt.shape[0]}x{gt.shape[1]} "
            f"(shape {gt.shape}) vs prediction {pred.shape[0]}x{pred.shape[1]} (shape {pred.shape})"
        )


RUNS_MAX_FRACTION = 0.125


def paired_runs(*maps: np.ndarray, max_fraction: float | None = None) -> tuple[Any, ...]:
    """Run-length encoding of same-shape maps read together in raster order.

    Returns (values of map 1 (R,), ..., values of map k (R,), lengths (R,) int64): the
    flattened sequence of k-tuples is R runs of constant tuples. Label maps are piecewise
    constant, so R is a few thousand at 1024x2048 and counting over runs replaces counting
    over pixels: comparisons of adjacent pixels are the only full-image passes (about 2 ms
    for two uint8 or int32 maps at 1024x2048).

    When R exceeds ``max_fraction`` of the pixels (noisy maps), the run encoding no longer
    pays off and the flattened maps themselves are returned with ``lengths = None`` (each
    pixel its own run; ``np.bincount(..., weights=None)`` then counts pixels).
    ``max_fraction`` defaults to the module's ``RUNS_MAX_FRACTION``.
    """
    if max_fraction is None:
        max_fraction = RUNS_MAX_FRACTION
    flat = [np.ascontiguousarray(m).ravel() for m in maps]
    n = flat[0].size
    if n == 0:
        return (*(f[:0] for f in flat), np.zeros(0, dtype=np.int64))
    change = flat[0][1:] != flat[0][:-1]
    for f in flat[1:]:
        change |= f[1:] != f[:-1]
    idx = np.flatnonzero(change)
    if len(idx) > max_fraction * n:
        return (*flat, None)
    starts = np.empty(len(idx) + 1, dtype=np.intp)
    starts[0] = 0
    starts[1:] = idx + 1
    lengths = np.diff(starts, append=n).astype(np.int64)
    return (*(f[starts] for f in flat), lengths)


def _codes(labels: np.ndarray, num_classes: int, ignore_index: int, scale: int) -> np.ndarray:
    """Map a label map to ``code * scale`` (int64, flattened).

    code = label for 0 <= label < num_classes, ``num_classes`` for ``ignore_index`` and
    ``num_classes + 1`` for anything else (invalid; reported by the caller).
    uint8 maps go through a 256-entry lookup table (the fast path, a few ms at 1024x2048).
    """
    flat = labels.ravel()
    if flat.dtype == np.uint8 and 0 <= ignore_index <= 255:
        lut = np.full(256, num_classes + 1, dtype=np.int64)
        lut[:num_classes] = np.arange(num_classes)
        lut[ignore_index] = num_classes
        return lut[flat] * scale if scale != 1 else lut[flat]
    flat = flat.astype(np.int64, copy=False)
    code = np.where((flat >= 0) & (flat < num_classes), flat, num_classes + 1)
    code[flat == ignore_index] = num_classes
    return code * scale


def confusion_counts(
    gt: np.ndarray,
    pred: np.ndarray,
    num_classes: int,
    ignore_index: int = 255,
    group: np.ndarray | None = None,
    num_groups: int = 1,
    image_id: object | None = None,
    what: str = "SemanticConfusion",
) -> np.ndarray:
    """Confusion counts of one image, one np.bincount pass.

    gt, pred: (H, W) integer class maps (class index, ``ignore_index`` = ignore / void).
    group:    optional (H, W) int array in [0, num_groups) splitting pixels into groups
              (the distance bins of `BoundaryAccuracy`).
    Returns int64 (num_groups, C, C + 1): rows = ground-truth class, columns = predicted
    class, the last column = predicted void. Ignored ground-truth pixels are dropped.
    Counting is over the runs of `paired_runs` (weights = run lengths; float64 weights are
    exact below 2^53 pixels), or over pixels for noisy maps; one np.bincount either way.
    Raises ValueError (naming the image) on a size mismatch or labels outside
    ``0..C-1 ∪ {ignore_index}``.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    check_same_size(gt, pred, image_id, what)
    c2 = num_classes + 2
    if group is None:
        g_run, p_run, lengths = paired_runs(gt, pred)
        code = _codes(g_run, num_classes, ignore_index, c2)
    else:
        group = np.asarray(group)
        if group.shape != gt.shape:
            raise ValueError(f"{what}: group map {group.shape} differs from the label maps {gt.shape}")
        g_run, p_run, grp_run, lengths = paired_runs(gt, pred, group)
        code = _codes(g_run, num_classes, ignore_index, c2)
        code += grp_run.astype(np.int64) * (c2 * c2)
    code += _codes(p_run, num_classes, ignore_index, 1)
    counts = np.bincount(code, weights=lengths, minlength=num_groups * c2 * c2)
    if lengths is not None:
        counts = np.rint(counts)
    counts = counts.astype(np.int64).reshape(num_groups, c2, c2)
    if counts[:, num_classes + 1, :].any() or counts[:, :, num_classes + 1].any():
        for name, arr in (("ground truth", gt), ("prediction", pred)):
            vals = np.unique(arr)
            bad = vals[((vals < 0) | (vals >= num_classes)) & (vals != ignore_index)]
            if len(bad):
                raise ValueError(
                    f"{what}: {name}{_image_name(image_id)} has labels {bad[:10].tolist()} outside "
                    f"0..{num_classes - 1} and ignore_index={ignore_index}"
                )
    return counts[:, :num_classes, : num_classes + 1].astype(np.int64)


def scores_from_confusion(cm: np.ndarray) -> dict[str, Any]:
    """IoU / accuracy from a (C, C + 1) confusion matrix (last column = predicted void).

    Returns numpy float arrays ``iou`` and ``acc`` (NaN where undefined) and the scalars
    ``miou``, ``macc``, ``pixel_acc`` (None where undefined).
    """
    cm = np.asarray(cm, dtype=np.int64)
    c = cm.shape[0]
    tp = np.diag(cm[:, :c]).astype(np.float64)
    gt_total = cm.sum(axis=1).astype(np.float64)  # TP + FN (FN includes void predictions)
    pred_total = cm[:, :c].sum(axis=0).astype(np.float64)  # TP + FP (valid GT only)
    iou = class_iou(tp, gt_total, pred_total)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.where(gt_total > 0, tp / np.where(gt_total > 0, gt_total, 1), np.nan)
    total = gt_total.sum()
    return {
        "iou": iou,
        "acc": acc,
        "miou": _nanmean(iou),
        "macc": _nanmean(acc),
        "pixel_acc": float(tp.sum() / total) if total > 0 else None,
    }


def _miou(cm: np.ndarray) -> float | None:
    """mIoU of a (C, C + 1) confusion matrix (the ``miou`` of `scores_from_confusion`, without the rest)."""
    c = cm.shape[0]
    return _nanmean(class_iou(cm.diagonal(), cm.sum(axis=1), cm[:, :c].sum(axis=0)))


def _nanmean(values: np.ndarray) -> float | None:
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(np.clip(v.mean(), 0.0, 1.0)) if len(v) else None


def nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(float(x)) else float(x) for x in values]


def check_state(state: dict, kind: str) -> None:
    """Validate the header of an accumulator state dict."""
    if not isinstance(state, dict):
        raise ValueError(f"{kind}.from_state: expected a dict, got {type(state).__name__}")
    if state.get("type") != kind:
        raise ValueError(f"{kind}.from_state: state has type {state.get('type')!r}, expected {kind!r}")
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"{kind}.from_state: unsupported state version {state.get('version')!r}")


# --------------------------------------------------------------------------- accumulator
class SemanticConfusion:
    """Mergeable semantic-segmentation confusion matrix (Cityscapes pixel-level rules).

    ``update(gt, pred)`` adds one image; ``merge(other)`` adds another accumulator (the
    sum over shards equals the accumulator of the whole split, exactly: counts are int64
    and the per-image list is concatenated in shard order); ``result()`` returns

    * ``miou``, ``macc``, ``pixel_acc``: floats in [0, 1] (None when nothing was evaluated);
    * ``iou``, ``acc``: per-class lists, None for classes excluded (absent from both);
    * ``miou_things``, ``miou_stuff``: when ``is_thing`` is given;
    * ``n_images``, ``n_pixels`` (valid ground-truth pixels).

    The state also keeps each image's own mIoU as ``(image_id, miou)`` for worst-image
    galleries and bootstrap confidence intervals.
    """

    kind = "SemanticConfusion"

    def __init__(self, num_classes: int, ignore_index: int = 255, is_thing: Sequence[bool] | None = None):
        if num_classes < 1:
            raise ValueError(f"SemanticConfusion: num_classes must be >= 1, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"SemanticConfusion: ignore_index={ignore_index} collides with a class index")
        if is_thing is not None and len(is_thing) != num_classes:
            raise ValueError(
                f"SemanticConfusion: is_thing has {len(is_thing)} entries, num_classes={num_classes}"
            )
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.is_thing = None if is_thing is None else tuple(bool(t) for t in is_thing)
        self.confusion = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)
        self.per_image: list[tuple[str | None, float | None]] = []

    def update(
        self, gt_semantic: np.ndarray, pred_semantic: np.ndarray, image_id: object | None = None
    ) -> None:
        """Add one image. gt_semantic, pred_semantic: (H, W) int class maps (255 = ignore/void)."""
        cm = confusion_counts(
            gt_semantic, pred_semantic, self.num_classes, self.ignore_index, image_id=image_id, what=self.kind
        )[0]
        self.confusion += cm
        self.per_image.append((None if image_id is None else str(image_id), _miou(cm)))

    def _check_compatible(self, other: "SemanticConfusion") -> None:
        if not isinstance(other, SemanticConfusion):
            raise TypeError(f"SemanticConfusion.merge: cannot merge {type(other).__name__}")
        if (other.num_classes, other.ignore_index, other.is_thing) != (
            self.num_classes,
            self.ignore_index,
            self.is_thing,
        ):
            raise ValueError(
                "SemanticConfusion.merge: incompatible accumulators "
                f"(num_classes {self.num_classes} vs {other.num_classes}, ignore_index "
                f"{self.ignore_index} vs {other.ignore_index}, is_thing differ: {self.is_thing != other.is_thing})"
            )

    def merge(self, other: "SemanticConfusion") -> None:
        """Add ``other`` into ``self`` in place."""
        self._check_compatible(other)
        self.confusion += other.confusion
        self.per_image.extend(other.per_image)

    def result(self) -> dict[str, Any]:
        s = scores_from_confusion(self.confusion)
        out: dict[str, Any] = {
            "miou": s["miou"],
            "macc": s["macc"],
            "pixel_acc": s["pixel_acc"],
            "iou": nan_to_none(s["iou"]),
            "acc": nan_to_none(s["acc"]),
            "n_images": len(self.per_image),
            "n_pixels": int(self.confusion.sum()),
        }
        if self.is_thing is not None:
            thing = np.asarray(self.is_thing, dtype=bool)
            out["miou_things"] = _nanmean(s["iou"][thing])
            out["miou_stuff"] = _nanmean(s["iou"][~thing])
        return out

    def state(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "version": STATE_VERSION,
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "is_thing": None if self.is_thing is None else list(self.is_thing),
            "confusion": self.confusion.tolist(),
            "per_image": [[i, m] for i, m in self.per_image],
        }

    @classmethod
    def from_state(cls, state: dict) -> "SemanticConfusion":
        check_state(state, cls.kind)
        m = cls(state["num_classes"], state["ignore_index"], state["is_thing"])
        cm = np.asarray(state["confusion"], dtype=np.int64)
        if cm.shape != m.confusion.shape:
            raise ValueError(
                f"SemanticConfusion.from_state: confusion has shape {cm.shape}, expected {m.confusion.shape}"
            )
        m.confusion = cm
        m.per_image = [(i, v) for i, v in state["per_image"]]
        return m
