"""Shared fixtures for the metric tests: Cityscapes classes, random scenes, official file writers.

Helpers are exposed through the ``mx`` fixture (a namespace), so no test module imports
another test module.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segfusion.datasets.cityscapes import cityscapes_classes  # the one class table
from segfusion.types import ClassInfo, Panoptic

IGNORED_LABEL_IDS = (0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30)


def _blob(rng: np.random.Generator, h: int, w: int, small: bool = False) -> np.ndarray:
    """A random rectangle or ellipse mask (H, W) bool."""
    scale = 0.25 if small else 0.6
    bh = int(rng.integers(2, max(3, int(h * scale))))
    bw = int(rng.integers(2, max(3, int(w * scale))))
    y0 = int(rng.integers(0, h - 1))
    x0 = int(rng.integers(0, w - 1))
    m = np.zeros((h, w), bool)
    if rng.random() < 0.5:
        m[y0 : y0 + bh, x0 : x0 + bw] = True
    else:
        yy, xx = np.ogrid[:h, :w]
        cy, cx = y0 + bh / 2, x0 + bw / 2
        m = ((yy - cy) / (bh / 2)) ** 2 + ((xx - cx) / (bw / 2)) ** 2 <= 1
    return m


def _finish(seg: np.ndarray, info: dict, rng: np.random.Generator, id_high: int) -> Panoptic:
    """Renumber the ids present to random distinct ids in 1..id_high, drop absent ones."""
    present = [int(i) for i in np.unique(seg) if i != 0]
    new_ids = rng.choice(np.arange(1, id_high), size=len(present), replace=False)
    out = np.zeros(seg.shape, np.int64)
    new_info = {}
    for old, new in zip(present, new_ids.tolist(), strict=True):
        out[seg == old] = new
        new_info[int(new)] = info[old]
    return Panoptic.from_segment_map(out.astype(np.int32), new_info)


def random_scene(
    rng: np.random.Generator,
    classes: ClassInfo,
    h: int = 48,
    w: int = 80,
    empty_gt: bool = False,
    empty_pred: bool = False,
    id_high: int = 1 << 20,
) -> tuple[Panoptic, Panoptic]:
    """A ground truth with stuff, things, void and crowd, and a perturbed prediction of it."""
    stuff = classes.stuff_indices
    things = classes.thing_indices
    seg = np.zeros((h, w), np.int64)
    info: dict[int, tuple[int, bool, bool, float]] = {}
    nid = 1
    if not empty_gt:
        bg = int(rng.choice(stuff))
        seg[:] = nid
        info[nid] = (bg, False, False, 1.0)
        nid += 1
        for c in rng.choice(stuff, size=int(rng.integers(1, 5)), replace=False):
            sid = nid
            info[sid] = (int(c), False, False, 1.0)
            nid += 1
            for _ in range(int(rng.integers(1, 3))):
                seg[_blob(rng, h, w)] = sid
        for _ in range(int(rng.integers(0, 3))):
            seg[_blob(rng, h, w, small=True)] = 0  # void
        for _ in range(int(rng.integers(0, 9))):
            seg[_blob(rng, h, w, small=True)] = nid
            info[nid] = (int(rng.choice(things)), True, False, 1.0)
            nid += 1
        for c in rng.choice(things, size=int(rng.integers(0, 4)), replace=False):
            seg[_blob(rng, h, w, small=rng.random() < 0.5)] = nid
            info[nid] = (int(c), True, True, 1.0)  # crowd
            nid += 1
    gt = _finish(seg, info, rng, id_high)

    pseg = np.zeros((h, w), np.int64)
    pinfo: dict[int, tuple[int, bool, bool, float]] = {}
    if not empty_pred:
        pid = 1
        old_to_new = {}
        for s in gt.segments:
            if s.is_thing:
                continue
            old_to_new[s.id] = pid
            c = s.class_index if rng.random() < 0.85 else int(rng.choice(stuff))
            pinfo[pid] = (c, False, False, 1.0)
            pid += 1
        gsem = gt.segment_ids
        for old, new in old_to_new.items():
            pseg[gsem == old] = new
        for _ in range(int(rng.integers(0, 4))):  # stuff noise (may create duplicate-class segments)
            pseg[_blob(rng, h, w, small=True)] = pid
            pinfo[pid] = (int(rng.choice(stuff)), False, False, 1.0)
            pid += 1
        for s in gt.segments:
            if not s.is_thing or rng.random() < 0.15:
                continue
            m = gsem == s.id
            dy, dx = (int(v) for v in rng.integers(-4, 5, size=2))
            m = np.roll(np.roll(m, dy, axis=0), dx, axis=1)
            if rng.random() < 0.3:  # grow or shrink
                m = m | np.roll(m, 2, axis=1) if rng.random() < 0.5 else m & np.roll(m, 2, axis=1)
            c = s.class_index if rng.random() < 0.85 else int(rng.choice(things))
            pseg[m] = pid
            pinfo[pid] = (c, True, bool(rng.random() < 0.05), float(rng.random()))
            pid += 1
        for _ in range(int(rng.integers(0, 3))):  # false positives
            pseg[_blob(rng, h, w, small=True)] = pid
            pinfo[pid] = (int(rng.choice(things)), True, False, float(rng.random()))
            pid += 1
        for _ in range(int(rng.integers(0, 3))):
            pseg[_blob(rng, h, w, small=True)] = 0
    pred = _finish(pseg, pinfo, rng, id_high)
    return gt, pred


def scene_set(
    seed: int, classes: ClassInfo, n: int = 12, h: int = 48, w: int = 80
) -> list[tuple[Panoptic, Panoptic]]:
    """n random scenes with the edge cases: empty GT, empty prediction, both empty."""
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng, classes, h, w) for _ in range(n)]
    scenes[1] = random_scene(rng, classes, h, w, empty_gt=True)
    scenes[2] = random_scene(rng, classes, h, w, empty_pred=True)
    scenes[3] = random_scene(rng, classes, h, w, empty_gt=True, empty_pred=True)
    return scenes


# ----------------------------------------------------------------------- official formats
def id_to_rgb(seg: np.ndarray) -> np.ndarray:
    seg = seg.astype(np.uint32)
    return np.stack([seg % 256, (seg // 256) % 256, seg // 65536], axis=-1).astype(np.uint8)


def write_coco_panoptic(
    folder: Path, json_path: Path, items: list[tuple[str, Panoptic]], classes: ClassInfo
) -> None:
    """COCO-panoptic JSON + RGB-id PNGs with Cityscapes labelIds as category ids."""
    folder.mkdir(parents=True, exist_ok=True)
    anns, images = [], []
    for name, p in items:
        Image.fromarray(id_to_rgb(p.segment_ids)).save(folder / f"{name}.png")
        images.append(
            {"id": name, "file_name": f"{name}.png", "height": p.image_size[0], "width": p.image_size[1]}
        )
        anns.append(
            {
                "image_id": name,
                "file_name": f"{name}.png",
                "segments_info": [
                    {
                        "id": int(s.id),
                        "category_id": int(classes.ids[s.class_index]),
                        "iscrowd": int(s.iscrowd),
                        "area": int(s.area),
                        "bbox": [int(v) for v in s.bbox],
                    }
                    for s in p.segments
                ],
            }
        )
    cats = [
        {
            "id": int(classes.ids[k]),
            "name": classes.names[k],
            "isthing": int(classes.is_thing[k]),
            "supercategory": classes.category[k],
        }
        for k in range(classes.num_classes)
    ]
    json_path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))


def trainid_to_labelid_png(
    sem: np.ndarray, classes: ClassInfo, path: Path, rng: np.random.Generator | None
) -> None:
    """Write a trainId map as a Cityscapes labelId PNG; 255 -> random ignored labelIds (or 0)."""
    out = np.zeros(sem.shape, np.uint8)
    valid = sem != 255
    out[valid] = np.asarray(classes.ids, np.uint8)[sem[valid]]
    if rng is not None:
        out[~valid] = rng.choice(IGNORED_LABEL_IDS, size=int((~valid).sum()))
    Image.fromarray(out).save(path)


@pytest.fixture(scope="session")
def cs_classes() -> ClassInfo:
    return cityscapes_classes()


@pytest.fixture(scope="session")
def mx() -> types.SimpleNamespace:
    return types.SimpleNamespace(
        cityscapes_classes=cityscapes_classes,
        random_scene=random_scene,
        scene_set=scene_set,
        write_coco_panoptic=write_coco_panoptic,
        trainid_to_labelid_png=trainid_to_labelid_png,
        id_to_rgb=id_to_rgb,
    )
