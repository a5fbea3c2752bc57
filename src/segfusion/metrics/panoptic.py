"""Panoptic quality (PQ, SQ, RQ) and Seamless' PQ† as a mergeable accumulator.

PQ follows panopticapi's ``pq_compute_single_core`` (Kirillov et al., "Panoptic
Segmentation"; cityscapesscripts' ``evalPanopticSemanticLabeling`` is the same code), and the
tests check it to 1e-9 through the official files. Per image, with GT = ground-truth segments
and P = predicted segments:

* **IoU.** ``IoU(g, p) = |g ∩ p| / (|g| + |p| - |g ∩ p| - |p ∩ void|)``: the predicted
  segment's pixels on ground-truth void (segment id 0) are left out of the union. Pixels on
  a ground-truth *crowd* region are **not** left out of the union (panopticapi subtracts
  only void there; Seamless Sec. 4 describes the same rule).
* **Match (TP).** same class, ground truth not crowd, IoU > 0.5 strictly (an IoU of exactly
  0.5 is not a match). Matches are unique because IoU > 0.5.
* **FN.** an unmatched non-crowd ground-truth segment. Crowd segments are never FN.
* **FP.** an unmatched predicted segment, unless more than half of it (strictly) lies on
  ground-truth void plus the ground-truth crowd region of its own class. As in panopticapi,
  when a class has several crowd segments in one image only the last one listed counts.
* **Averages.** PQ_c = Σ_TP IoU / (TP + FP/2 + FN/2), SQ_c = Σ_TP IoU / TP (0 when TP = 0),
  RQ_c = TP / (TP + FP/2 + FN/2); classes with TP + FP + FN = 0 over the whole set are
  excluded; PQ, SQ, RQ are the means over the remaining classes, and ``*_things`` /
  ``*_stuff`` over the remaining thing / stuff classes (None when none remain).

The predicted ``iscrowd`` flag is ignored (as in panopticapi). Segment areas are measured on
the id maps (panopticapi measures predicted areas on the PNG and reads ground-truth areas from
the JSON; they agree for a well-formed ground truth).

**PQ† (Porzi et al., "Seamless Scene Segmentation", CVPR 2019, Sec. 4).** For a thing class
PQ†_c = PQ_c. For a stuff class, M_c = {(s, ŝ) ∈ S_c × Ŝ_c : IoU(s, ŝ) > 0} (pairs of ground
truth and predicted segments of class c *in the same image*; segments of different images do
not overlap) and PQ†_c = (1/|M_c|) Σ_{M_c} IoU(s, ŝ). Choices where the text is silent:

* the IoU is the same void-aware IoU as above (Sec. 4: "pixels labeled as void in the ground
  truth are not counted in IoU computations"); crowd ground-truth segments never pair;
* literally, an unmatched stuff segment (ground truth without any overlapping prediction of
  its class, or a prediction without overlapping ground truth) is not in M_c and does not
  lower PQ†_c; we keep this literal definition;
* a stuff class with M_c = ∅ but counted by PQ (TP + FP + FN > 0) gets PQ†_c = 0 (its
  predictions never overlap its ground truth); a class with M_c = ∅ and TP + FP + FN = 0 is
  excluded. PQ† = mean of PQ†_c over the classes not excluded (Sec. 4: over all classes).

**Exact merging.** IoU sums are accumulated in fixed point, as Python integers counting units
of 2^-64 (``floor(|g ∩ p| * 2^64 / union)``), so that the sum over shards is bit-identical to
the sum over the whole set whatever the order; the truncation (< 2^-64 per match) is far
below the 1e-9 agreement with the official tool.

**Speed.** Per image, the pair of id maps is run-length encoded in raster order
(`paired_runs`: the only full-image passes are two comparisons of adjacent pixels), the run
values are relabelled to 0..K (void, the segments in list order, unknown ids) with
``searchsorted``, and the full GT × prediction intersection matrix comes from a single
``np.bincount`` over the runs (weights = run lengths); matching is then done on the small
K_gt × K_pred matrix. Noisy maps (runs > 1/8 of the pixels) fall back to one bincount over
pixels, relabelled through a lookup table.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from segfusion.metrics.semantic import STATE_VERSION, _image_name, check_same_size, check_state, paired_runs
from segfusion.types import ClassInfo, Panoptic

Q_BITS = 64
_Q = 1 << Q_BITS


def _segment_table(p: Panoptic, classes: ClassInfo, image_id: object | None, which: str):
    """(ids int64 (K,), class int64 (K,), crowd bool (K,)) of the segments, validated."""
    ids = np.array([s.id for s in p.segments], dtype=np.int64)
    cls = np.array([s.class_index for s in p.segments], dtype=np.int64)
    crowd = np.array([bool(s.iscrowd) for s in p.segments], dtype=bool)
    bad = (cls < 0) | (cls >= classes.num_classes)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"PanopticQuality: {which} segment {int(ids[k])}{_image_name(image_id)} has class index "
            f"{int(cls[k])} outside the {classes.num_classes} classes 0..{classes.num_classes - 1}"
        )
    return ids, cls, crowd


_LUT_MAX_ID = 1 << 24  # full-image relabelling uses a lookup table when all ids are below this


def _relabel(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """int64 index of every value: 0 = void (id 0), 1..K = ``ids`` in list order, K + 1 = unknown id.

    Large inputs (the per-pixel fallback of `paired_runs`) with ids in [0, 2^24) go through a
    lookup table; otherwise the ids are found with ``searchsorted``.
    """
    k = len(ids)
    values = values.astype(np.int64, copy=False)
    if values.size > 65536:
        lo, hi = int(values.min()), int(values.max())
        if lo >= 0 and hi < _LUT_MAX_ID:
            lut = np.full(hi + 1, k + 1, dtype=np.int64)
            inside = ids <= hi
            lut[ids[inside]] = np.flatnonzero(inside) + 1
            lut[0] = 0
            return lut[values]
    out = np.full(values.shape, k + 1, dtype=np.int64)
    if k:
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        pos = np.clip(np.searchsorted(sorted_ids, values), 0, k - 1)
        hit = sorted_ids[pos] == values
        out[hit] = order[pos[hit]] + 1
    out[values == 0] = 0
    return out


def _unknown_ids(segment_ids: np.ndarray, ids: np.ndarray) -> list[int]:
    known = set(ids.tolist())
    return [int(v) for v in np.unique(segment_ids) if v != 0 and int(v) not in known][:10]


def image_panoptic_stats(
    gt: Panoptic, pred: Panoptic, classes: ClassInfo, image_id: object | None = None
) -> dict:
    """PQ statistics of one image (see the module docstring for the rules).

    Returns numpy arrays over the C classes: ``tp``, ``fp``, ``fn`` (int64), ``iou_q`` and
    ``dagger_q`` (object arrays of Python ints, IoU sums in units of 2^-64), ``dagger_n``
    (int64, number of stuff pairs with IoU > 0), and ``iou`` (float64 IoU sums, for the
    per-image PQ).
    """
    check_same_size(gt.segment_ids, pred.segment_ids, image_id, "PanopticQuality")
    c = classes.num_classes
    g_ids, g_cls, g_crowd = _segment_table(gt, classes, image_id, "ground-truth")
    p_ids, p_cls, _ = _segment_table(pred, classes, image_id, "predicted")
    ng, np_ = len(g_ids), len(p_ids)

    g_run, p_run, lengths = paired_runs(gt.segment_ids, pred.segment_ids)
    code = _relabel(g_run, g_ids) * (np_ + 2) + _relabel(p_run, p_ids)
    m = np.bincount(code, weights=lengths, minlength=(ng + 2) * (np_ + 2))
    if lengths is not None:
        m = np.rint(m)
    m = m.astype(np.int64).reshape(ng + 2, np_ + 2)
    if m[ng + 1].any():
        raise ValueError(
            f"PanopticQuality: ground-truth segment ids {_unknown_ids(gt.segment_ids, g_ids)}{_image_name(image_id)} "
            "are in the id map but have no segment info"
        )
    if m[:, np_ + 1].any():
        raise ValueError(
            f"PanopticQuality: predicted segment ids {_unknown_ids(pred.segment_ids, p_ids)}{_image_name(image_id)} "
            "are in the id map but have no segment info"
        )
    inter = m[1 : ng + 1, 1 : np_ + 1]  # (G, P)
    gt_area = m[1 : ng + 1].sum(axis=1)  # (G,)
    pred_area = m[:, 1 : np_ + 1].sum(axis=0)  # (P,)
    void_p = m[0, 1 : np_ + 1]  # (P,) predicted pixels on ground-truth void
    for which, ids, area in (("ground-truth", g_ids, gt_area), ("predicted", p_ids, pred_area)):
        if (area == 0).any():
            missing = ids[area == 0][:10].tolist()
            raise ValueError(
                f"PanopticQuality: {which} segments {missing}{_image_name(image_id)} are listed but have no pixels"
            )

    union = gt_area[:, None] + pred_area[None, :] - inter - void_p[None, :]
    same = (g_cls[:, None] == p_cls[None, :]) & ~g_crowd[:, None]
    match = same & (2 * inter > union)  # IoU > 0.5, exactly, in integers
    mg, mp = np.nonzero(match)
    g_matched = np.zeros(ng, dtype=bool)
    p_matched = np.zeros(np_, dtype=bool)
    g_matched[mg] = True
    p_matched[mp] = True

    tp = np.bincount(g_cls[mg], minlength=c).astype(np.int64)
    fn = np.bincount(g_cls[~g_matched & ~g_crowd], minlength=c).astype(np.int64)

    # FP: unmatched predictions not mostly on void + crowd of their class (last crowd listed wins)
    crowd_of_class = np.full(c, -1, dtype=np.int64)
    for g in np.flatnonzero(g_crowd):
        crowd_of_class[g_cls[g]] = g
    ignored = void_p.copy()
    cg = crowd_of_class[p_cls] if np_ else np.zeros(0, dtype=np.int64)
    has_crowd = cg >= 0
    ignored[has_crowd] += inter[cg[has_crowd], np.flatnonzero(has_crowd)]
    fp_mask = ~p_matched & ~(2 * ignored > pred_area)
    fp = np.bincount(p_cls[fp_mask], minlength=c).astype(np.int64)

    iou_q = np.array([0] * c, dtype=object)
    iou_f = np.zeros(c, dtype=np.float64)
    for g, p in zip(mg.tolist(), mp.tolist(), strict=True):
        i, u = int(inter[g, p]), int(union[g, p])
        iou_q[g_cls[g]] += (i << Q_BITS) // u
        iou_f[g_cls[g]] += i / u

    # PQ† pairs: same stuff class, non-crowd ground truth, intersection > 0 (IoU > 0)
    stuff = ~classes.is_thing_array
    dagger_q = np.array([0] * c, dtype=object)
    dagger_n = np.zeros(c, dtype=np.int64)
    dg, dp = np.nonzero(same & stuff[g_cls][:, None] & (inter > 0))
    for g, p in zip(dg.tolist(), dp.tolist(), strict=True):
        dagger_q[g_cls[g]] += (int(inter[g, p]) << Q_BITS) // int(union[g, p])
        dagger_n[g_cls[g]] += 1

    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "iou_q": iou_q,
        "iou": iou_f,
        "dagger_q": dagger_q,
        "dagger_n": dagger_n,
    }


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


def _mean(values: list[float]) -> float | None:
    return _clip01(sum(values) / len(values)) if values else None


class PanopticQuality:
    """Mergeable PQ / SQ / RQ / PQ† accumulator (rules in the module docstring).

    ``update(gt, pred, image_id=None)`` takes two `Panoptic` of the same image.
    ``result()`` keys: ``pq``, ``sq``, ``rq``, ``pq_things``, ``sq_things``, ``rq_things``,
    ``pq_stuff``, ``sq_stuff``, ``rq_stuff``, ``pq_dagger`` (floats in [0, 1] or None),
    ``per_class`` {name: {pq, sq, rq, pq_dagger, tp, fp, fn, iou_sum}} (ratios None for
    excluded classes), ``n_images``. The state keeps each image's own PQ as
    ``(image_id, pq)`` (None when the image has no segment at all).
    """

    kind = "PanopticQuality"

    def __init__(self, classes: ClassInfo):
        self.classes = classes
        c = classes.num_classes
        self.tp = np.zeros(c, dtype=np.int64)
        self.fp = np.zeros(c, dtype=np.int64)
        self.fn = np.zeros(c, dtype=np.int64)
        self.iou_q: list[int] = [0] * c
        self.dagger_q: list[int] = [0] * c
        self.dagger_n = np.zeros(c, dtype=np.int64)
        self.per_image: list[tuple[str | None, float | None]] = []

    def update(self, gt: Panoptic, pred: Panoptic, image_id: object | None = None) -> None:
        """Add one image: ``gt`` and ``pred`` are `Panoptic` of the same (H, W)."""
        s = image_panoptic_stats(gt, pred, self.classes, image_id)
        self.tp += s["tp"]
        self.fp += s["fp"]
        self.fn += s["fn"]
        for k in range(self.classes.num_classes):
            self.iou_q[k] += int(s["iou_q"][k])
            self.dagger_q[k] += int(s["dagger_q"][k])
        self.dagger_n += s["dagger_n"]
        denom = s["tp"] + 0.5 * s["fp"] + 0.5 * s["fn"]
        present = denom > 0
        img_pq = _mean((s["iou"][present] / denom[present]).tolist())
        self.per_image.append((None if image_id is None else str(image_id), img_pq))

    def merge(self, other: "PanopticQuality") -> None:
        """Add ``other`` into ``self`` in place (exact: integer counts and fixed-point sums)."""
        if not isinstance(other, PanopticQuality):
            raise TypeError(f"PanopticQuality.merge: cannot merge {type(other).__name__}")
        if other.classes != self.classes:
            raise ValueError("PanopticQuality.merge: the accumulators have different class lists")
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.iou_q = [a + b for a, b in zip(self.iou_q, other.iou_q, strict=True)]
        self.dagger_q = [a + b for a, b in zip(self.dagger_q, other.dagger_q, strict=True)]
        self.dagger_n += other.dagger_n
        self.per_image.extend(other.per_image)

    def result(self) -> dict[str, Any]:
        names = self.classes.names
        thing = self.classes.is_thing_array
        per_class: dict[str, dict[str, Any]] = {}
        groups: dict[str, dict[str, list[float]]] = {
            g: {"pq": [], "sq": [], "rq": []} for g in ("", "_things", "_stuff")
        }
        dagger_values: list[float] = []
        for k, name in enumerate(names):
            tp, fp, fn = int(self.tp[k]), int(self.fp[k]), int(self.fn[k])
            iou_sum = self.iou_q[k] / _Q
            entry: dict[str, Any] = {"pq": None, "sq": None, "rq": None, "pq_dagger": None}
            if tp + fp + fn > 0:
                denom = tp + 0.5 * fp + 0.5 * fn
                entry["pq"] = _clip01(iou_sum / denom)
                entry["sq"] = _clip01(iou_sum / tp) if tp else 0.0
                entry["rq"] = _clip01(tp / denom)
                for g in ("", "_things" if thing[k] else "_stuff"):
                    for key in ("pq", "sq", "rq"):
                        groups[g][key].append(entry[key])
            if thing[k]:
                entry["pq_dagger"] = entry["pq"]
            elif self.dagger_n[k] > 0:
                entry["pq_dagger"] = _clip01(self.dagger_q[k] / _Q / int(self.dagger_n[k]))
            elif tp + fp + fn > 0:
                entry["pq_dagger"] = 0.0
            if entry["pq_dagger"] is not None:
                dagger_values.append(entry["pq_dagger"])
            entry.update(tp=tp, fp=fp, fn=fn, iou_sum=iou_sum)
            per_class[name] = entry
        out: dict[str, Any] = {}
        for g in ("", "_things", "_stuff"):
            for key in ("pq", "sq", "rq"):
                out[key + g] = _mean(groups[g][key])
        out["pq_dagger"] = _mean(dagger_values)
        out["per_class"] = per_class
        out["n_images"] = len(self.per_image)
        return out

    def state(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "version": STATE_VERSION,
            "classes": self.classes.to_dict(),
            "tp": self.tp.tolist(),
            "fp": self.fp.tolist(),
            "fn": self.fn.tolist(),
            "iou_sum_q64": [int(v) for v in self.iou_q],
            "dagger_iou_sum_q64": [int(v) for v in self.dagger_q],
            "dagger_pairs": self.dagger_n.tolist(),
            "per_image": [[i, v] for i, v in self.per_image],
        }

    @classmethod
    def from_state(cls, state: dict) -> "PanopticQuality":
        check_state(state, cls.kind)
        m = cls(ClassInfo.from_dict(state["classes"]))
        c = m.classes.num_classes
        for key in ("tp", "fp", "fn", "iou_sum_q64", "dagger_iou_sum_q64", "dagger_pairs"):
            if len(state[key]) != c:
                raise ValueError(
                    f"PanopticQuality.from_state: {key!r} has {len(state[key])} entries, expected {c}"
                )
        m.tp = np.asarray(state["tp"], dtype=np.int64)
        m.fp = np.asarray(state["fp"], dtype=np.int64)
        m.fn = np.asarray(state["fn"], dtype=np.int64)
        m.iou_q = [int(v) for v in state["iou_sum_q64"]]
        m.dagger_q = [int(v) for v in state["dagger_iou_sum_q64"]]
        m.dagger_n = np.asarray(state["dagger_pairs"], dtype=np.int64)
        m.per_image = [(i, v) for i, v in state["per_image"]]
        return m
