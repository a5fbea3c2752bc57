"""Varied Clothing Parsing (VCP) raw layout -> canonical dataset (IMP paper Sec. 4.1).

The VCP dataset (25 garment classes plus skin, hair and background, pixel-accurate
semantic labels) is not distributed in a public format, so this converter defines a
simple layout (also written by the ``clothing`` synthetic flavour)::

    classes.json                   JSON list; entry k describes label value k
    images/{split}/<stem>.jpg|.jpeg|.png
    labels/{split}/<stem>.png      single-channel class index per pixel (255 = void)

(``classes_file``, ``images_dir`` and ``labels_dir`` override the three names.) An
entry of ``classes.json`` is a name (``"shirt"``) or an object ``{"name": ...,
"category": ..., "isthing": ..., "color": [r, g, b]}`` whose optional fields override the
defaults below. The native id of a class is its label value.

Choices:

* **Things and stuff**: ``skin``, ``hair`` and ``background`` (option ``stuff``, a list of
  names) are stuff; every other class is a garment, a thing.
* **Segment -> instance** (IMP Sec. 4.1): "each segment (connected component) is treated
  as an instance with corresponding bounding box", so a shirt seen at the neck and at
  both cuffs under a blazer gives three shirt instances. Components are found per
  garment class with ``scipy.ndimage.label``, 8-connected by default (option
  ``connectivity: 4|8``; 8 keeps a one-pixel-wide diagonal strap whole).
* **Tiny components** (option ``min_area``, default 1 = keep all): a garment component
  of fewer pixels becomes void (255), ignored by training and evaluation, instead of an
  instance no detector could find or being merged into a neighbour (which would invent
  a label the annotator did not draw).
* **Costea's category**: garments are grouped by body region (`GARMENT_GROUPS`:
  upper-body ⊃ shirt, blouse, sweater, coat, jacket, dress...; lower-body ⊃ pants,
  skirt, shorts...; footwear; accessory), the sub-categories a pixel classifier
  confuses (IMP Sec. 4.1: layering, similar fabrics). Unknown garments and stuff keep
  their own name.
* **Errors**: a label value that is neither a class nor 255 names the file and the
  values; an image without label (or label without image) fails that image alone.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from segfusion.datasets.canonical import DatasetError, RawSample, class_list
from segfusion.datasets.coco_panoptic import palette
from segfusion.io.images import read_image
from segfusion.types import IGNORE_INDEX, ClassInfo, Panoptic

OPTIONS = ("images_dir", "labels_dir", "classes_file", "stuff", "connectivity", "min_area")
DEFAULT_STUFF = ("background", "skin", "hair")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

GARMENT_GROUPS: dict[str, tuple[str, ...]] = {
    "upper-body": (
        "shirt", "t-shirt", "tshirt", "top", "blouse", "sweater", "sweatshirt", "hoodie", "cardigan", "vest",
        "coat", "jacket", "blazer", "outer", "dress", "jumpsuit", "romper", "suit",
    ),
    "lower-body": ("pants", "trousers", "jeans", "shorts", "skirt", "leggings", "tights", "stockings"),
    "footwear": ("shoes", "shoe", "boots", "sneakers", "sandals", "heels", "socks", "footwear"),
    "accessory": (
        "bag", "handbag", "backpack", "belt", "hat", "cap", "headwear", "scarf", "tie", "glasses",
        "sunglasses", "gloves", "watch", "jewelry", "necklace", "earrings", "bracelet",
    ),
}
_GROUP_OF = {name: group for group, names in GARMENT_GROUPS.items() for name in names}


def garment_group(name: str) -> str:
    """Costea category of a garment name (``GARMENT_GROUPS``), or the name itself."""
    key = re.sub(r"[\s_]+", "-", name.strip().lower())
    return _GROUP_OF.get(key, _GROUP_OF.get(key.rstrip("s"), name))


def _read_class_file(path: Path) -> list[Any]:
    if not path.exists():
        raise DatasetError(f"{path}: missing VCP class list (option classes_file)")
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(entries, list) or not entries:
        raise DatasetError(f"{path}: expected a non-empty JSON list of class names")
    return entries


def vcp_classes(raw: str | os.PathLike, classes_file: str = "classes.json", stuff: Sequence[str] = DEFAULT_STUFF, **_: Any) -> ClassInfo:
    """The class list of ``classes.json``: index = label value = native id."""
    path = Path(raw) / classes_file
    entries = _read_class_file(path)
    stuff_set = {s.lower() for s in stuff}
    pal = palette(len(entries))
    names, is_thing, category, colors = [], [], [], []
    for k, e in enumerate(entries):
        if isinstance(e, str):
            e = {"name": e}
        if not isinstance(e, dict) or not isinstance(e.get("name"), str):
            raise DatasetError(f"{path}: entry {k} must be a name or an object with a name, got {str(e)[:80]}")
        unknown = set(e) - {"name", "category", "isthing", "color"}
        if unknown:
            raise DatasetError(f"{path}: entry {k} has unknown keys {sorted(unknown)}")
        name = e["name"]
        thing = bool(e.get("isthing", name.lower() not in stuff_set))
        names.append(name)
        is_thing.append(thing)
        category.append(str(e.get("category", garment_group(name) if thing else name)))
        col = e.get("color")
        if isinstance(col, (list, tuple)) and len(col) >= 3:
            colors.append(tuple(int(v) for v in col[:3]))
        else:  # background black, as in ModaNet's and most parsing datasets' label maps
            colors.append((0, 0, 0) if name.lower() == "background" else pal[k])
    return class_list(path, names, is_thing, category, range(len(names)), colors)


def find_samples(
    raw: str | os.PathLike,
    split: str,
    images_dir: str = "images",
    labels_dir: str = "labels",
) -> list[RawSample]:
    """Pairs (image, label) by stem; an unpaired file still yields a sample that fails on load."""
    raw = Path(raw)
    image_root, label_root = raw / images_dir / split, raw / labels_dir / split
    for d in (image_root, label_root):
        if not d.is_dir():
            raise DatasetError(f"{d}: missing (expected the VCP layout {images_dir}/{split}/ and {labels_dir}/{split}/)")
    images = {p.stem: p for p in sorted(image_root.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    labels = {p.stem: p for p in sorted(label_root.glob("*.png"))}
    samples = []
    for stem in sorted(set(images) | set(labels)):
        image = images.get(stem, image_root / f"{stem}.jpg")  # a missing file: read_image reports it
        label = labels.get(stem, label_root / f"{stem}.png")
        samples.append(RawSample(name=stem, image_path=str(image), label_paths=(str(label),)))
    return samples


@functools.lru_cache(maxsize=4)
def _structure(connectivity: int) -> np.ndarray:
    if connectivity not in (4, 8):
        raise ValueError(f"vcp option connectivity must be 4 or 8, got {connectivity!r}")
    return np.ones((3, 3), bool) if connectivity == 8 else np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)


def segments_to_instances(semantic: np.ndarray, classes: ClassInfo, connectivity: int = 8, min_area: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of every thing class as instances (IMP Sec. 4.1).

    Returns ``(semantic, instance)``: the class map with components under ``min_area``
    set to 255, and an instance-id map (unique ids over the image, 0 on stuff and void).
    Each class is labelled only inside its bounding box (``ndimage.find_objects``).
    """
    from scipy import ndimage

    structure = _structure(int(connectivity))
    semantic = semantic.copy()
    instance = np.zeros(semantic.shape, np.int32)
    next_id = 1
    boxes = ndimage.find_objects(semantic.astype(np.int32) + 1)  # boxes[c]: bounding slices of value c
    for c in classes.thing_indices.tolist():
        sl = boxes[c] if c < len(boxes) else None
        if sl is None:
            continue
        comp, n = ndimage.label(semantic[sl] == c, structure=structure)
        if n == 0:
            continue
        ids = np.zeros(n + 1, np.int32)
        if min_area > 1:
            areas = np.bincount(comp.ravel(), minlength=n + 1)
            keep = areas[1:] >= min_area
            small = np.concatenate([[False], ~keep])
            if small.any():
                semantic[sl][small[comp]] = IGNORE_INDEX
            ids[1:][keep] = np.arange(next_id, next_id + int(keep.sum()), dtype=np.int32)
        else:
            ids[1:] = np.arange(next_id, next_id + n, dtype=np.int32)
        sub = instance[sl]
        sub[comp > 0] = ids[comp[comp > 0]]
        next_id = int(ids.max()) + 1 if ids.max() > 0 else next_id
    return semantic, instance


def load_sample(sample: RawSample, classes: ClassInfo, connectivity: int = 8, min_area: int = 1) -> Panoptic:
    """Read one VCP label PNG; garment components become instances."""
    (label_path,) = sample.label_paths
    label = read_image(label_path)
    if label.ndim != 2:
        raise DatasetError(f"{label_path}: expected a single-channel class-index PNG, got shape {label.shape}")
    bad = np.unique(label[(label != IGNORE_INDEX) & (label >= classes.num_classes)])
    if len(bad):
        raise DatasetError(f"{label_path}: unknown label values {bad.tolist()} (classes are 0..{classes.num_classes - 1}, 255 = void)")
    if int(min_area) < 1:
        raise ValueError(f"vcp option min_area must be >= 1, got {min_area!r}")
    semantic, instance = segments_to_instances(label.astype(np.uint8), classes, connectivity, int(min_area))
    return _panoptic(semantic, instance, classes)


def _panoptic(semantic: np.ndarray, instance: np.ndarray, classes: ClassInfo) -> Panoptic:
    """Segment map with thing ids 1..K (the components) and one id K+1+c per stuff class c.

    Same segments as ``Panoptic.from_maps`` (every thing pixel has a component id), built
    in linear time from a lookup table instead of a sort of the whole image.
    """
    k = int(instance.max(initial=0))
    is_thing = np.zeros(256, bool)
    is_thing[: classes.num_classes] = classes.is_thing_array
    lut = np.zeros(256, np.int32)  # class -> stuff segment id (0 for things and void)
    stuff = classes.stuff_indices
    lut[stuff] = k + 1 + stuff
    seg = np.where(is_thing[semantic], instance, lut[semantic])
    info: dict[int, tuple[int, bool, bool, float]] = {int(k + 1 + c): (int(c), False, False, 1.0) for c in stuff.tolist()}
    if k:
        cls_of = np.zeros(k + 1, np.int64)
        cls_of[instance.ravel()] = semantic.ravel()
        for i in range(1, k + 1):
            info[i] = (int(cls_of[i]), True, False, 1.0)
    return Panoptic.from_segment_map(seg, info)
