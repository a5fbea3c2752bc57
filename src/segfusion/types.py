"""Typed records passed between the pipeline's stages (DESIGN.md, "Types and contracts").

Arrays are numpy; shapes are stated on every field. Construction validates shapes and
ranges, so a malformed record fails where it is made, with the field named, rather
than three stages later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from segfusion.resize import resize_bilinear

IGNORE_INDEX = 255
VOID_ID = 0


@dataclass(frozen=True)
class ClassInfo:
    """The class list of a dataset. A class *index* is the position in these tuples.

    names:    class names, e.g. Cityscapes' 19 train classes.
    is_thing: True for countable objects (instances), False for stuff.
    category: Costea's coarse category per class (category ⊃ sub-category), e.g. all
              vehicles share "vehicle"; stuff classes usually carry their own name.
    ids:      the dataset's native category ids (Cityscapes labelIds, COCO category ids),
              written in panoptic.json so official tools read our outputs.
    colors:   RGB palette used by plots and overlays.
    """

    names: tuple[str, ...]
    is_thing: tuple[bool, ...]
    category: tuple[str, ...]
    ids: tuple[int, ...]
    colors: tuple[tuple[int, int, int], ...]
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        n = len(self.names)
        for name in ("is_thing", "category", "ids", "colors"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"ClassInfo.{name} has {len(getattr(self, name))} entries, names has {n}")
        if n == 0:
            raise ValueError("ClassInfo needs at least one class")
        if n >= self.ignore_index:
            raise ValueError(f"ClassInfo has {n} classes; class indices must stay below ignore_index={self.ignore_index}")
        if len(set(self.ids)) != n:
            raise ValueError(f"ClassInfo.ids has duplicates: {self.ids}")
        if len(set(self.names)) != n:
            raise ValueError(f"ClassInfo.names has duplicates: {self.names}")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def thing_indices(self) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.is_thing, dtype=bool))

    @property
    def stuff_indices(self) -> np.ndarray:
        return np.flatnonzero(~np.asarray(self.is_thing, dtype=bool))

    @property
    def is_thing_array(self) -> np.ndarray:
        return np.asarray(self.is_thing, dtype=bool)

    def index_of_id(self) -> dict[int, int]:
        """Native category id -> class index."""
        return {int(i): k for k, i in enumerate(self.ids)}

    def coco_categories(self) -> list[dict]:
        """COCO-panoptic ``categories`` (native ids, isthing, color; Costea category as supercategory)."""
        return [
            {
                "id": int(self.ids[k]),
                "name": self.names[k],
                "isthing": int(self.is_thing[k]),
                "color": list(self.colors[k]),
                "supercategory": self.category[k],
            }
            for k in range(self.num_classes)
        ]

    def to_dict(self) -> dict:
        return {
            "names": list(self.names),
            "is_thing": [bool(t) for t in self.is_thing],
            "category": list(self.category),
            "ids": [int(i) for i in self.ids],
            "colors": [list(map(int, c)) for c in self.colors],
            "ignore_index": int(self.ignore_index),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> "ClassInfo":
        expected = {"names", "is_thing", "category", "ids", "colors", "ignore_index"}
        unknown = set(d) - expected
        if unknown:
            raise ValueError(f"ClassInfo: unknown keys {sorted(unknown)}")
        missing = expected - {"ignore_index"} - set(d)
        if missing:
            raise ValueError(f"ClassInfo: missing keys {sorted(missing)}")
        return cls(
            names=tuple(d["names"]),
            is_thing=tuple(bool(t) for t in d["is_thing"]),
            category=tuple(d["category"]),
            ids=tuple(int(i) for i in d["ids"]),
            colors=tuple(tuple(int(v) for v in c) for c in d["colors"]),
            ignore_index=int(d.get("ignore_index", IGNORE_INDEX)),
        )

    @classmethod
    def from_json(cls, text: str) -> "ClassInfo":
        return cls.from_dict(json.loads(text))


@dataclass
class Instances:
    """Detections of one image.

    boxes:      (N, 4) float32, x0, y0, x1, y1 in original-image pixels.
    scores:     (N,) float32 in [0, 1].
    labels:     (N,) int64 class index (must be a thing class for fusion).
    mask_prob:  (N, M, M) float32 box-relative mask probabilities (M = 28 for Mask R-CNN), or
    mask_image: (N, H, W) float32 image-relative mask probabilities (e.g. decoded RLE).
    Exactly one mask form is set. image_size is (H, W).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    image_size: tuple[int, int]
    mask_prob: np.ndarray | None = None
    mask_image: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        n = len(self.boxes)
        if len(self.scores) != n or len(self.labels) != n:
            raise ValueError(f"Instances: boxes {n}, scores {len(self.scores)}, labels {len(self.labels)} disagree")
        if (self.mask_prob is None) == (self.mask_image is None):
            raise ValueError("Instances: set exactly one of mask_prob (box-relative) or mask_image (image-relative)")
        if self.mask_prob is not None:
            self.mask_prob = np.asarray(self.mask_prob, dtype=np.float32)
            if self.mask_prob.ndim != 3 or len(self.mask_prob) != n:
                raise ValueError(f"Instances.mask_prob must be (N={n}, M, M), got {self.mask_prob.shape}")
        else:
            self.mask_image = np.asarray(self.mask_image)
            if self.mask_image.shape != (n, *self.image_size):
                raise ValueError(f"Instances.mask_image must be (N={n}, H, W)={(n, *self.image_size)}, got {self.mask_image.shape}")

    def __len__(self) -> int:
        return len(self.boxes)

    def select(self, index: np.ndarray | Sequence[int]) -> "Instances":
        """A subset (or reordering) of the detections."""
        index = np.asarray(index)
        if index.dtype != bool:
            index = index.astype(np.int64)
        return Instances(
            boxes=self.boxes[index],
            scores=self.scores[index],
            labels=self.labels[index],
            image_size=self.image_size,
            mask_prob=None if self.mask_prob is None else self.mask_prob[index],
            mask_image=None if self.mask_image is None else self.mask_image[index],
        )

    @classmethod
    def empty(cls, image_size: tuple[int, int], mask_size: int = 28) -> "Instances":
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros(0, np.float32),
            labels=np.zeros(0, np.int64),
            image_size=image_size,
            mask_prob=np.zeros((0, mask_size, mask_size), np.float32),
        )


@dataclass
class SemanticPrediction:
    """Class probabilities of one image.

    prob:       (C, h, w) float, at any stride (4 from our heads, 1 for full-resolution inputs).
    image_size: (H, W) of the evaluated image.
    """

    prob: np.ndarray
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        self.prob = np.asarray(self.prob)
        if self.prob.ndim != 3:
            raise ValueError(f"SemanticPrediction.prob must be (C, h, w), got {self.prob.shape}")
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    @property
    def num_classes(self) -> int:
        return self.prob.shape[0]

    def upsampled(self) -> np.ndarray:
        """(C, H, W) float32 probabilities at image resolution (`resize_bilinear`)."""
        return resize_bilinear(self.prob, self.image_size)

    def argmax(self) -> np.ndarray:
        """(H, W) uint8 class index at image resolution."""
        return self.upsampled().argmax(axis=0).astype(np.uint8)


@dataclass(frozen=True)
class Segment:
    """One segment of a panoptic output (COCO-panoptic `segments_info` entry).

    bbox is (x, y, w, h) in pixels, COCO style. score is the instance score (1 for ground
    truth and for stuff). is_thing mirrors the class's flag so that `Panoptic` can derive
    its instance map without the class list.
    """

    id: int
    class_index: int
    is_thing: bool
    area: int
    bbox: tuple[int, int, int, int]
    iscrowd: bool = False
    score: float = 1.0

    def coco_info(self, classes: ClassInfo, with_score: bool = True) -> dict:
        """The COCO-panoptic ``segments_info`` entry (native category id); ``score`` is our addition."""
        info = {
            "id": int(self.id),
            "category_id": int(classes.ids[self.class_index]),
            "iscrowd": int(self.iscrowd),
            "area": int(self.area),
            "bbox": [int(v) for v in self.bbox],
        }
        if with_score:
            info["score"] = float(self.score)
        return info


def segment_stats(segment_ids: np.ndarray) -> dict[int, tuple[int, tuple[int, int, int, int]]]:
    """Area and COCO bbox (x, y, w, h) of every non-void id in an (H, W) id map.

    Linear time: ids are counted with `np.bincount` on the map (or on its `np.unique`
    inverse when the ids are sparse or negative), and bboxes come from per-row and
    per-column presence tables of shape (H, K) and (W, K).
    """
    seg = np.asarray(segment_ids)
    h, w = seg.shape
    if seg.size == 0:
        return {}
    flat = seg.ravel()
    lo, hi = int(flat.min()), int(flat.max())
    if lo >= 0 and (hi + 1) * (h + w) <= 4 * flat.size + 65536:
        keys = flat.astype(np.intp, copy=False)
        ids = np.arange(hi + 1)
    else:
        ids, keys = np.unique(flat, return_inverse=True)
        keys = keys.reshape(-1).astype(np.intp, copy=False)
    k = len(ids)
    keys2d = keys.reshape(h, w)
    row_count = np.bincount((keys2d + (np.arange(h, dtype=np.intp) * k)[:, None]).ravel(), minlength=h * k)
    col_hit = np.bincount((keys2d + (np.arange(w, dtype=np.intp) * k)[None, :]).ravel(), minlength=w * k)
    row_count = row_count.reshape(h, k)
    counts = row_count.sum(axis=0)
    row_hit = row_count > 0
    col_hit = col_hit.reshape(w, k) > 0
    ymin = row_hit.argmax(axis=0)
    ymax = h - 1 - row_hit[::-1].argmax(axis=0)
    xmin = col_hit.argmax(axis=0)
    xmax = w - 1 - col_hit[::-1].argmax(axis=0)
    out = {}
    for j in np.flatnonzero(counts).tolist():
        sid = int(ids[j])
        if sid == 0:
            continue
        out[sid] = (
            int(counts[j]),
            (int(xmin[j]), int(ymin[j]), int(xmax[j] - xmin[j] + 1), int(ymax[j] - ymin[j] + 1)),
        )
    return out


@dataclass
class Panoptic:
    """A panoptic segmentation of one image (COCO-panoptic representation).

    segment_ids: (H, W) int32, 0 = void.
    segments:    one `Segment` per non-zero id present in the map.
    """

    segment_ids: np.ndarray
    segments: tuple[Segment, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        self.segment_ids = np.asarray(self.segment_ids, dtype=np.int32)
        if self.segment_ids.ndim != 2:
            raise ValueError(f"Panoptic.segment_ids must be (H, W), got {self.segment_ids.shape}")
        self.segments = tuple(self.segments)
        seen = [s.id for s in self.segments]
        if len(set(seen)) != len(seen):
            raise ValueError(f"Panoptic: duplicate segment ids {sorted(seen)}")
        if VOID_ID in seen:
            raise ValueError("Panoptic: segment id 0 is reserved for void")

    @property
    def image_size(self) -> tuple[int, int]:
        return self.segment_ids.shape  # type: ignore[return-value]

    def _lookup(self, values: dict[int, int], default: int, dtype) -> np.ndarray:
        """Map every pixel's segment id through ``values`` (ids absent map to ``default``)."""
        ids = np.fromiter(values.keys(), dtype=np.int64, count=len(values))
        vals = np.fromiter(values.values(), dtype=np.int64, count=len(values))
        top = int(self.segment_ids.max(initial=0))
        if top < (1 << 20):  # small ids (the usual case): one table lookup per pixel
            lut = np.full(top + 1, default, dtype=dtype)
            keep = ids <= top
            lut[ids[keep]] = vals[keep]
            return lut[np.maximum(self.segment_ids, 0)]
        flat = self.segment_ids.ravel().astype(np.int64)
        out = np.full(flat.shape, default, dtype=dtype)
        if len(ids):
            order = np.argsort(ids)
            ids, vals = ids[order], vals[order]
            pos = np.clip(np.searchsorted(ids, flat), 0, len(ids) - 1)
            hit = ids[pos] == flat
            out[hit] = vals[pos[hit]]
        return out.reshape(self.segment_ids.shape)

    @property
    def semantic(self) -> np.ndarray:
        """(H, W) uint8 class index, 255 on void."""
        return self._lookup({s.id: s.class_index for s in self.segments}, IGNORE_INDEX, np.uint8)

    @property
    def instance(self) -> np.ndarray:
        """(H, W) int32 instance id (the segment id) on non-crowd thing pixels, 0 elsewhere."""
        ids = {s.id: s.id for s in self.segments if s.is_thing and not s.iscrowd}
        return self._lookup(ids, 0, np.int32)

    def segment(self, segment_id: int) -> Segment:
        for s in self.segments:
            if s.id == segment_id:
                return s
        raise KeyError(f"no segment with id {segment_id}")

    @classmethod
    def from_segment_map(
        cls,
        segment_ids: np.ndarray,
        info: dict[int, tuple[int, bool, bool, float]],
    ) -> "Panoptic":
        """Build from an id map and ``{id: (class_index, is_thing, iscrowd, score)}``.

        Areas and bboxes are measured on the map; ids in ``info`` absent from the map are
        dropped (an instance that lost all its pixels), and ids in the map absent from
        ``info`` are an error.
        """
        stats = segment_stats(segment_ids)
        missing = sorted(set(stats) - set(info))
        if missing:
            raise ValueError(f"Panoptic: ids {missing[:10]} in the map have no segment info")
        segments = tuple(
            Segment(
                id=sid,
                class_index=int(info[sid][0]),
                is_thing=bool(info[sid][1]),
                iscrowd=bool(info[sid][2]),
                score=float(info[sid][3]),
                area=stats[sid][0],
                bbox=stats[sid][1],
            )
            for sid in sorted(stats)
        )
        return cls(segment_ids=segment_ids, segments=segments)

    @classmethod
    def from_maps(cls, semantic: np.ndarray, instance: np.ndarray, classes: ClassInfo) -> "Panoptic":
        """Build from a class map (255 = void) and an instance-id map (0 = none).

        Stuff: one segment per class present. Things: one segment per (class, instance id);
        thing pixels with instance id 0 become one crowd segment per class (the Cityscapes
        convention). Segment ids are 1..K in (class, instance) order.
        """
        semantic = np.asarray(semantic)
        instance = np.asarray(instance)
        if semantic.shape != instance.shape:
            raise ValueError(f"Panoptic.from_maps: semantic {semantic.shape} and instance {instance.shape} differ in size")
        sem = semantic.astype(np.int64)
        valid = sem != classes.ignore_index
        bad = np.unique(sem[valid & (sem >= classes.num_classes)])
        if len(bad):
            raise ValueError(f"Panoptic.from_maps: class indices {bad.tolist()} outside 0..{classes.num_classes - 1}")
        is_thing = classes.is_thing_array
        inst = np.where(valid & is_thing[np.where(valid, sem, 0)], instance.astype(np.int64), 0)
        stride = int(inst.max(initial=0)) + 1
        key = np.where(valid, sem * stride + inst, -1)
        uniq, inverse = np.unique(key.ravel(), return_inverse=True)
        new_ids = np.zeros(len(uniq), np.int32)  # segment id per unique key, 0 for void
        info: dict[int, tuple[int, bool, bool, float]] = {}
        for j, k in enumerate(uniq.tolist()):
            if k < 0:
                continue
            c, i = divmod(k, stride)
            thing = bool(is_thing[c])
            new_ids[j] = len(info) + 1
            info[len(info) + 1] = (c, thing, thing and i == 0, 1.0)
        seg_map = new_ids[inverse]
        return cls.from_segment_map(seg_map.reshape(semantic.shape), info)
