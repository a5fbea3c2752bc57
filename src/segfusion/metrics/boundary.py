"""Accuracy as a function of the distance to the ground-truth boundary (IMP paper, Fig. 5).

Fu, Berg, Berg, "IMP: Instance Mask Projection" (ICCV 2019), Sec. 4 ablation "Accuracy near
the boundary", Fig. 5: mIoU and mAccuracy of pixels within 10-400 px (L2) of the ground-truth
object boundary. The paper does not define the boundary or the binning; our choices:

* a **boundary pixel** is one whose 4-neighbour (up, down, left, right) has a different
  ground-truth label, the ignore label included (the image border is not a boundary);
  both sides of a label change are boundary pixels, at distance 0;
* a pixel's distance is the Euclidean distance to the nearest boundary pixel
  (`segfusion.metrics.distance.distance_to`: ``scipy.ndimage.distance_transform_edt`` on the
  non-boundary mask, or the same values compiled for large images); in an image without any
  boundary every pixel is at distance +inf;
* ``bins=(0, 10, 20, 50, 100, 200, 400)`` are the edges of the disjoint bins [0, 10),
  [10, 20), ..., [200, 400) and [400, inf); one confusion matrix is kept per bin;
* ``result()`` reports per bin (``bins``) and cumulatively (``within``: all pixels at
  distance < upper edge, the paper's "within d pixels" reading) the mIoU and mAcc, with the
  Cityscapes rules of `SemanticConfusion` (ignored ground truth left out, predicted void is a
  false negative, classes absent from both excluded).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from segfusion.metrics.distance import distance_to
from segfusion.metrics.semantic import (
    STATE_VERSION,
    check_same_size,
    check_state,
    confusion_counts,
    nan_to_none,
    scores_from_confusion,
)


def boundary_mask(gt: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels with a 4-neighbour of a different ground-truth label."""
    gt = np.asarray(gt)
    b = np.zeros(gt.shape, dtype=bool)
    dv = gt[1:, :] != gt[:-1, :]
    b[1:, :] |= dv
    b[:-1, :] |= dv
    dh = gt[:, 1:] != gt[:, :-1]
    b[:, 1:] |= dh
    b[:, :-1] |= dh
    return b


def boundary_distance(gt: np.ndarray) -> np.ndarray:
    """(H, W) float L2 distance of every pixel to the nearest ground-truth boundary pixel."""
    b = boundary_mask(gt)
    if not b.any():
        return np.full(b.shape, np.inf)
    return distance_to(b)


class BoundaryAccuracy:
    """Mergeable per-distance-bin confusion matrices (IMP Fig. 5). See the module docstring.

    ``update(gt_semantic, pred_semantic, image_id=None)`` adds one image of (H, W) class maps.
    ``result()``: ``{"bins": [...], "within": [...], "n_images": int}``, each bin entry
    ``{"lo", "hi" (None = inf), "miou", "macc", "pixels", "iou" (per class)}``.
    """

    kind = "BoundaryAccuracy"

    def __init__(
        self,
        num_classes: int,
        bins: Sequence[float] = (0, 10, 20, 50, 100, 200, 400),
        ignore_index: int = 255,
    ):
        edges = [float(b) for b in bins]
        if not edges or edges[0] != 0 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise ValueError(
                f"BoundaryAccuracy: bins must start at 0 and increase strictly, got {tuple(bins)}"
            )
        if len(edges) > 255:
            raise ValueError(f"BoundaryAccuracy: at most 255 bins, got {len(edges)}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.bins = tuple(edges)
        self.confusion = np.zeros((len(edges), self.num_classes, self.num_classes + 1), dtype=np.int64)
        self.n_images = 0

    def update(
        self, gt_semantic: np.ndarray, pred_semantic: np.ndarray, image_id: object | None = None
    ) -> None:
        gt = np.asarray(gt_semantic)
        pred = np.asarray(pred_semantic)
        check_same_size(gt, pred, image_id, self.kind)
        dist = boundary_distance(gt)
        # bin k holds edges[k] <= d < edges[k+1]; the last bin is open-ended
        group = np.zeros(dist.shape, dtype=np.uint8)
        for edge in self.bins[1:]:
            group += dist >= edge
        del dist
        self.confusion += confusion_counts(
            gt,
            pred,
            self.num_classes,
            self.ignore_index,
            group=group,
            num_groups=len(self.bins),
            image_id=image_id,
            what=self.kind,
        )
        self.n_images += 1

    def merge(self, other: "BoundaryAccuracy") -> None:
        if not isinstance(other, BoundaryAccuracy):
            raise TypeError(f"BoundaryAccuracy.merge: cannot merge {type(other).__name__}")
        if (other.num_classes, other.ignore_index, other.bins) != (
            self.num_classes,
            self.ignore_index,
            self.bins,
        ):
            raise ValueError(
                "BoundaryAccuracy.merge: incompatible accumulators (classes, ignore_index or bins differ)"
            )
        self.confusion += other.confusion
        self.n_images += other.n_images

    def _entry(self, cm: np.ndarray, lo: float, hi: float | None) -> dict[str, Any]:
        s = scores_from_confusion(cm)
        return {
            "lo": lo,
            "hi": hi,
            "miou": s["miou"],
            "macc": s["macc"],
            "pixels": int(cm.sum()),
            "iou": nan_to_none(s["iou"]),
        }

    def result(self) -> dict[str, Any]:
        edges = list(self.bins)
        his: list[float | None] = edges[1:] + [None]
        per_bin = [self._entry(self.confusion[k], edges[k], his[k]) for k in range(len(edges))]
        cumulative = np.cumsum(self.confusion, axis=0)
        within = [self._entry(cumulative[k], 0.0, his[k]) for k in range(len(edges))]
        return {"bins": per_bin, "within": within, "n_images": self.n_images}

    def state(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "version": STATE_VERSION,
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "bins": list(self.bins),
            "confusion": self.confusion.tolist(),
            "n_images": self.n_images,
        }

    @classmethod
    def from_state(cls, state: dict) -> "BoundaryAccuracy":
        check_state(state, cls.kind)
        m = cls(state["num_classes"], tuple(state["bins"]), state["ignore_index"])
        cm = np.asarray(state["confusion"], dtype=np.int64)
        if cm.shape != m.confusion.shape:
            raise ValueError(
                f"BoundaryAccuracy.from_state: confusion has shape {cm.shape}, expected {m.confusion.shape}"
            )
        m.confusion = cm
        m.n_images = int(state["n_images"])
        return m
