"""Instance-segmentation AP (box and mask) through pycocotools' COCOeval, as an accumulator.

The accumulator only collects COCO records (JSON-able): ground-truth annotations and
detections (COCO results: image, category, score, box, RLE). ``merge`` concatenates them;
``result()`` runs COCOeval once on everything, for ``iouType="bbox"`` and ``"segm"``
(standard COCO parameters: IoU 0.50:0.95, maxDets 1 / 10 / 100, area ranges small / medium
/ large) and reports all 12 COCO statistics of each.

Ground truth comes in two forms:

* **as given** (`add_coco_ground_truth`): a dataset's COCO instance annotations, e.g. the
  canonical ``instances.json`` of COCO or ModaNet, verbatim: overlapping masks, polygons or
  RLE, crowd regions, the annotations' own ``bbox`` and ``area``. This is what
  ``segfusion evaluate`` uses, so its AP is pycocotools' on that file (tested to 1e-9).
* **from a panoptic map** (`add_ground_truth`, `update`): non-crowd thing segments →
  ``iscrowd=0``, crowd thing segments → ``iscrowd=1``, masks as RLE, box and area from the
  mask. Overlaps cannot be represented; for datasets without instance annotations
  (Cityscapes, VCP, maps) both forms are the same.

The protocol, chosen to equal pycocotools run directly on the files:

* image ids: an image's native id (``coco_id``) when every image has one, else 1..N in
  insertion order; annotation ids: the given ones when unique and > 0, else 1..N;
* categories are the thing classes only, with id = class index + 1 (default) or the
  dataset's native ids (``native_ids=True``; the ground truth's ``category_id`` is always
  native and translated);
* for box AP the detections' ``segmentation`` is dropped and for mask AP their ``bbox`` is
  dropped before ``COCO.loadRes`` (as detectron2 does), so that each evaluation computes the
  detection area from the right geometry (with a ``bbox``, loadRes would take the box area
  as a mask's area for the small / medium / large ranges);
* no detection at all is a normal case: COCOeval runs on an empty result set (AP = 0 where
  there is ground truth); no non-crowd ground truth gives None for every key; a COCOeval
  statistic of -1 (no ground truth in that area range) is reported as None.

pycocotools is imported lazily, so that ``import segfusion.metrics`` stays fast.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Sequence

import numpy as np

from segfusion.metrics.semantic import STATE_VERSION, check_state
from segfusion.types import ClassInfo, Panoptic

AP_KEYS = ("ap", "ap50", "ap75", "aps", "apm", "apl")
AR_KEYS = ("ar1", "ar10", "ar100", "ars", "arm", "arl")
STAT_KEYS = AP_KEYS + AR_KEYS
"""The 12 COCOeval ``stats`` in their order: AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl."""


def _rle_json(rle: dict) -> dict:
    """A COCO RLE with ``counts`` as str (JSON-able) and ``size`` as [h, w] ints."""
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    elif not isinstance(counts, str):
        raise ValueError("InstanceAP: only compressed RLE (counts as bytes or str) is accepted")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def panoptic_segment_rles(p: Panoptic, segment_ids: Sequence[int]) -> list[dict]:
    """COCO RLE (JSON-able) of the given segments of ``p``.

    One pass over the segment map for all segments (`segfusion.io.rle.segment_rles`), with
    no full-frame mask per segment; the bytes are pycocotools' ``mask.encode``'s.
    """
    from segfusion.io.rle import segment_rles

    wanted = [int(i) for i in segment_ids]
    if not wanted:
        return []
    rles = segment_rles(p.segment_ids, wanted)
    return [_rle_json(rles[i]) for i in wanted]


class InstanceAP:
    """COCO box / mask AP accumulator (see the module docstring).

    ``update(gt, pred=None, image_id=...)``: adds the ground truth of one image (a `Panoptic`)
    and, when ``pred`` (a fused `Panoptic`) is given, its non-crowd thing segments as
    detections scored by ``Segment.score``. ``add_detections`` adds raw detections.
    ``add_coco_ground_truth`` adds one image's ground truth as given (COCO annotations).
    ``result()`` keys: ``ap_box, ap50_box, ap75_box, aps_box, apm_box, apl_box, ar1_box,
    ar10_box, ar100_box, ars_box, arm_box, arl_box`` and the same with ``_mask`` (floats in
    [0, 1] or None), ``n_images``, ``n_gt``, ``n_detections``.
    """

    kind = "InstanceAP"

    def __init__(self, classes: ClassInfo, native_ids: bool = False):
        self.classes = classes
        self.native_ids = bool(native_ids)
        self.images: list[tuple[str, int, int]] = []
        self.coco_ids: dict[str, int] = {}  # native image id of an image, when known
        self.annotations: list[dict] = []
        self.detections: list[dict] = []
        self._image_set: set[str] = set()

    # ---------------------------------------------------------------- categories
    def category_id(self, class_index: int) -> int:
        return int(self.classes.ids[class_index]) if self.native_ids else int(class_index) + 1

    def _check_range(self, class_index: int, image_id: str, what: str) -> None:
        if not 0 <= class_index < self.classes.num_classes:
            raise ValueError(
                f"InstanceAP: {what} in image {image_id!r} has class index {class_index} outside "
                f"0..{self.classes.num_classes - 1}"
            )

    def _check_thing(self, class_index: int, image_id: str, what: str) -> None:
        self._check_range(class_index, image_id, what)
        if not self.classes.is_thing[class_index]:
            raise ValueError(
                f"InstanceAP: {what} in image {image_id!r} has stuff class "
                f"{self.classes.names[class_index]!r} (index {class_index}); only thing classes are evaluated"
            )

    # ---------------------------------------------------------------- accumulation
    def _add_image(self, image_id: str, h: int, w: int, coco_id: int | None) -> None:
        if image_id in self._image_set:
            raise ValueError(f"InstanceAP: ground truth of image {image_id!r} added twice")
        self.images.append((image_id, int(h), int(w)))
        self._image_set.add(image_id)
        if coco_id is not None:
            self.coco_ids[image_id] = int(coco_id)

    def add_ground_truth(self, image_id: object, gt: Panoptic, coco_id: int | None = None) -> None:
        """Register an image and its thing segments as COCO ground-truth annotations."""
        image_id = str(image_id)
        h, w = gt.image_size
        self._add_image(image_id, h, w, coco_id)
        for s in gt.segments:
            self._check_range(s.class_index, image_id, f"ground-truth segment {s.id}")
        things = [s for s in gt.segments if self.classes.is_thing[s.class_index]]
        rles = panoptic_segment_rles(gt, [s.id for s in things])
        self._add_gt_records(image_id, things, rles)

    def add_coco_ground_truth(
        self, image_id: object, height: int, width: int, annotations: Sequence[dict], coco_id: int | None = None, source: object = "instances.json"
    ) -> None:
        """Register an image and its COCO instance annotations, kept as given.

        ``annotations``: COCO ground-truth records (``category_id`` a native thing id,
        ``segmentation`` polygons or RLE, ``area``, ``bbox``, ``iscrowd``, optional ``id``),
        in the file's order (pycocotools breaks matching ties by it). ``source`` names the
        file in errors.
        """
        image_id = str(image_id)
        index = self.classes.index_of_id()
        records = []
        for k, a in enumerate(annotations):
            where = f"{source}: image {image_id!r}, annotation {a.get('id', f'#{k}')}"
            missing = [key for key in ("category_id", "segmentation", "area", "bbox", "iscrowd") if key not in a]
            if missing:
                raise ValueError(f"{where}: missing keys {missing}")
            cat = a["category_id"]
            if cat not in index or not self.classes.is_thing[index[cat]]:
                raise ValueError(f"{where}: category_id {cat!r} is not a thing class of the class list")
            rec = {key: v for key, v in a.items() if key != "image_id"}
            rec["image_id"] = image_id
            rec["category_id"] = self.category_id(index[cat])
            records.append(rec)
        self._add_image(image_id, height, width, coco_id)
        self.annotations.extend(records)

    def _add_gt_records(self, image_id: str, things: list, rles: list[dict]) -> None:
        from pycocotools import mask as mask_util

        for s, rle in zip(things, rles, strict=True):
            area = float(mask_util.area(rle))
            if area == 0:
                continue
            self.annotations.append(
                {
                    "image_id": image_id,
                    "category_id": self.category_id(s.class_index),
                    "segmentation": rle,
                    "area": area,
                    "bbox": [float(v) for v in mask_util.toBbox(rle)],
                    "iscrowd": int(bool(s.iscrowd)),
                }
            )

    def add_detections(
        self,
        image_id: object,
        labels: Sequence[int] | np.ndarray,
        scores: Sequence[float] | np.ndarray,
        boxes: np.ndarray,
        rle_masks: Sequence[dict],
    ) -> None:
        """Add detections of one image.

        labels (N,) class index (thing classes), scores (N,), boxes (N, 4) as x0, y0, x1, y1
        (the `Instances` convention; converted to COCO x, y, w, h), rle_masks: N COCO RLE
        dicts (``{"size": [H, W], "counts": bytes | str}``, e.g. from pycocotools.mask.encode).
        """
        image_id = str(image_id)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        n = len(labels)
        if len(scores) != n or len(boxes) != n or len(rle_masks) != n:
            raise ValueError(
                f"InstanceAP.add_detections: image {image_id!r}: labels {n}, scores {len(scores)}, "
                f"boxes {len(boxes)}, rle_masks {len(rle_masks)} disagree"
            )
        for k in range(n):
            self._check_thing(int(labels[k]), image_id, f"detection {k}")
            x0, y0, x1, y1 = (float(v) for v in boxes[k])
            self.detections.append(
                {
                    "image_id": image_id,
                    "category_id": self.category_id(int(labels[k])),
                    "score": float(scores[k]),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "segmentation": _rle_json(rle_masks[k]),
                }
            )

    def add_panoptic_detections(self, image_id: object, pred: Panoptic) -> None:
        """Add the non-crowd thing segments of a fused `Panoptic` as detections (box = mask box)."""
        from pycocotools import mask as mask_util

        image_id = str(image_id)
        for s in pred.segments:
            self._check_range(s.class_index, image_id, f"predicted segment {s.id}")
        things = [s for s in pred.segments if self.classes.is_thing[s.class_index] and not s.iscrowd]
        rles = panoptic_segment_rles(pred, [s.id for s in things])
        for s, rle in zip(things, rles, strict=True):
            if mask_util.area(rle) == 0:
                continue
            self.detections.append(
                {
                    "image_id": image_id,
                    "category_id": self.category_id(s.class_index),
                    "score": float(s.score),
                    "bbox": [float(v) for v in mask_util.toBbox(rle)],
                    "segmentation": rle,
                }
            )

    def update(self, gt: Panoptic, pred: Panoptic | None = None, image_id: object | None = None) -> None:
        """Add one image's ground truth and, optionally, a fused prediction's thing segments."""
        if image_id is None:
            image_id = f"image{len(self.images)}"
        self.add_ground_truth(image_id, gt)
        if pred is not None:
            if pred.image_size != gt.image_size:
                raise ValueError(
                    f"InstanceAP: size mismatch in image {image_id!r}: ground truth {gt.image_size} "
                    f"vs prediction {pred.image_size}"
                )
            self.add_panoptic_detections(image_id, pred)

    def merge(self, other: "InstanceAP") -> None:
        """Concatenate ``other``'s images, annotations and detections (in place)."""
        if not isinstance(other, InstanceAP):
            raise TypeError(f"InstanceAP.merge: cannot merge {type(other).__name__}")
        if other.classes != self.classes or other.native_ids != self.native_ids:
            raise ValueError("InstanceAP.merge: the accumulators have different class lists or category ids")
        dup = self._image_set & other._image_set
        if dup:
            raise ValueError(f"InstanceAP.merge: images {sorted(dup)[:5]} are in both accumulators")
        self.images.extend(other.images)
        self._image_set |= other._image_set
        self.coco_ids.update(other.coco_ids)
        self.annotations.extend(other.annotations)
        self.detections.extend(other.detections)

    # ---------------------------------------------------------------- evaluation
    def _image_index(self) -> dict[str, int]:
        """COCOeval image id of every image: the native ids when all are known and unique, else 1..N."""
        ids = [self.coco_ids.get(name) for name, _, _ in self.images]
        if ids and all(i is not None for i in ids) and len(set(ids)) == len(ids):
            return {name: int(i) for (name, _, _), i in zip(self.images, ids)}
        return {name: k + 1 for k, (name, _, _) in enumerate(self.images)}

    def coco_ground_truth(self) -> dict:
        """The COCO ground-truth dataset dict (integer image and annotation ids)."""
        index = self._image_index()
        cats = [
            {
                "id": self.category_id(k),
                "name": self.classes.names[k],
                "supercategory": self.classes.category[k],
            }
            for k in range(self.classes.num_classes)
            if self.classes.is_thing[k]
        ]
        given = [a.get("id") for a in self.annotations]
        keep = all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in given) and len(set(given)) == len(given)
        anns = []
        for j, a in enumerate(self.annotations):
            a = dict(a)
            a["image_id"] = index[a["image_id"]]
            a["id"] = a["id"] if keep else j + 1
            anns.append(a)
        images = [
            {"id": index[name], "file_name": name, "height": h, "width": w} for name, h, w in self.images
        ]
        return {"images": images, "categories": cats, "annotations": anns}

    def coco_results(self) -> list[dict]:
        """The detections as a COCO results list (integer image ids)."""
        index = self._image_index()
        out = []
        for d in self.detections:
            if d["image_id"] not in index:
                raise ValueError(
                    f"InstanceAP: detections for image {d['image_id']!r}, which has no ground truth"
                )
            d = dict(d)
            d["image_id"] = index[d["image_id"]]
            out.append(d)
        return out

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n_images": len(self.images), "n_gt": 0, "n_detections": len(self.detections)}
        n_gt = sum(1 for a in self.annotations if not a["iscrowd"])
        out["n_gt"] = n_gt
        if n_gt == 0:
            self.coco_results()  # still validate image ids
            for suffix in ("_box", "_mask"):
                for key in STAT_KEYS:
                    out[key + suffix] = None
            return out
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        gt_dict = self.coco_ground_truth()
        results = self.coco_results()
        sink = io.StringIO()
        for iou_type, suffix in (("bbox", "_box"), ("segm", "_mask")):
            drop = "segmentation" if iou_type == "bbox" else "bbox"
            dts = [{k: v for k, v in d.items() if k != drop} for d in results]
            with contextlib.redirect_stdout(sink):
                coco_gt = COCO()
                coco_gt.dataset = {k: list(v) for k, v in gt_dict.items()}
                coco_gt.createIndex()
                if dts:
                    coco_dt = coco_gt.loadRes(dts)
                else:
                    coco_dt = COCO()
                    coco_dt.dataset = {
                        "images": list(gt_dict["images"]),
                        "categories": list(gt_dict["categories"]),
                        "annotations": [],
                    }
                    coco_dt.createIndex()
                ev = COCOeval(coco_gt, coco_dt, iouType=iou_type)
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            for j, key in enumerate(STAT_KEYS):
                v = float(ev.stats[j])
                out[key + suffix] = None if v < 0 else v
        return out

    # ---------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "version": STATE_VERSION,
            "classes": self.classes.to_dict(),
            "native_ids": self.native_ids,
            "images": [list(i) for i in self.images],
            "coco_ids": dict(self.coco_ids),
            "annotations": list(self.annotations),
            "detections": list(self.detections),
        }

    @classmethod
    def from_state(cls, state: dict) -> "InstanceAP":
        check_state(state, cls.kind)
        m = cls(ClassInfo.from_dict(state["classes"]), native_ids=state["native_ids"])
        m.images = [(str(i), int(h), int(w)) for i, h, w in state["images"]]
        m._image_set = {i for i, _, _ in m.images}
        m.coco_ids = {str(k): int(v) for k, v in (state.get("coco_ids") or {}).items()}
        if len(m._image_set) != len(m.images):
            raise ValueError("InstanceAP.from_state: duplicate image ids")
        m.annotations = list(state["annotations"])
        m.detections = list(state["detections"])
        return m
