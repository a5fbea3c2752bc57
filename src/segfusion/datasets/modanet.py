"""ModaNet raw layout -> canonical dataset (IMP paper Sec. 4.2).

Raw layout (paths relative to the raw root; each overridable)::

    modanet2018_instances_{split}.json   or annotations/modanet2018_instances_{split}.json,
                                         or instances_{split}.json        (option ``annotation_json``)
    images/<file_name>                   the images                       (option ``images_dir``)

The JSON is COCO-instances style: ``images`` (id, file_name, height, width),
``annotations`` (id, image_id, category_id, ``segmentation`` as a list of polygons
[x0, y0, x1, y1, ...] or an RLE, iscrowd) and ``categories`` (13 garments, ids 1..13:
bag, belt, boots, footwear, outer, dress, sunglasses, pants, top, shorts, skirt,
headwear, scarf & tie).

Choices (the paper does not say how its semantic maps were made from the polygons):

* **Rasterisation** with pycocotools (``frPyObjects`` then ``merge`` and ``decode``): the
  union of an instance's polygons. Polygons of fewer than 3 points (ModaNet has some,
  and pycocotools would read a 4-number polygon as a box) are skipped; an odd number of
  coordinates is an error naming the JSON, the image and the annotation.
* **Overlaps**: instances are painted in decreasing area, ties in annotation order, so
  the smaller one ends on top. Small garments (belt, sunglasses, scarf, bag) lie on top
  of large ones (outer, dress, top), and their polygons are the ones drawn precisely;
  painting by area keeps them visible whatever the annotation order. An instance left
  with no visible pixel is dropped.
* **Unlabelled pixels** (ModaNet labels garments only) become a ``background`` stuff
  class with native id 0 (the value ModaNet's own semantic maps use) with
  ``unlabeled: background`` (default), or void/255 (ignored) with ``unlabeled: ignore``,
  which leaves a things-only class list.
* **Costea's category** groups garments by body region, so category-level semantic
  predictions are reliable while sub-categories are what confuses a pixel classifier
  (IMP Sec. 4.2 names dress vs skirt): ``upper-body`` ⊃ outer, dress, top (dress is
  mostly seen on the torso, where it is confused with top and outer); ``lower-body`` ⊃
  pants, shorts, skirt; ``footwear`` ⊃ boots, footwear; ``accessory`` ⊃ bag, belt,
  sunglasses, headwear, scarf & tie. An unknown category name keeps its own name.
* **Native ids and AP ground truth**: the canonical split keeps the JSON's image ids and
  file names, and its ``instances.json`` holds the annotations as given (overlapping
  garments, crowd flags, annotation boxes and areas; only polygons of fewer than 3 points
  are left out, as above), so AP is pycocotools' on ModaNet's own annotations, not on the
  non-overlapping panoptic map.
* Colours: the JSON's ``color`` if present, else the deterministic
  `segfusion.datasets.coco_panoptic.palette` (background black).

As for COCO-panoptic, each image's annotations travel inline in the `RawSample`
(``label_paths = (json, inline annotations JSON)``), so the JSON is parsed once.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from segfusion.datasets.canonical import INSTANCE_KEYS, DatasetError, RawSample, class_list
from segfusion.datasets.coco_panoptic import palette
from segfusion.io.atomic import read_json
from segfusion.types import ClassInfo, Panoptic

OPTIONS = ("images_dir", "annotation_json", "unlabeled")
UNLABELED = ("background", "ignore")
BACKGROUND_ID = 0

MODANET_CATEGORIES: tuple[tuple[int, str, str], ...] = (
    (1, "bag", "accessory"),
    (2, "belt", "accessory"),
    (3, "boots", "footwear"),
    (4, "footwear", "footwear"),
    (5, "outer", "upper-body"),
    (6, "dress", "upper-body"),
    (7, "sunglasses", "accessory"),
    (8, "pants", "lower-body"),
    (9, "top", "upper-body"),
    (10, "shorts", "lower-body"),
    (11, "skirt", "lower-body"),
    (12, "headwear", "accessory"),
    (13, "scarf & tie", "accessory"),
)


def _norm(name: str) -> str:
    """Name key tolerant to spelling variants: "Scarf & Tie", "scarf/tie", "skirts" -> "scarftie", "skirt"."""
    key = re.sub(r"[^a-z]", "", re.sub(r"\band\b", "", name.lower()))
    plural = key.endswith("s") and not key.endswith("ss") and key not in ("pants", "shorts", "boots", "sunglasses")
    return key[:-1] if plural else key


_GROUP = {_norm(name): group for _, name, group in MODANET_CATEGORIES}


def garment_group(name: str) -> str:
    """Costea category of a ModaNet garment name (the name itself when unknown)."""
    return _GROUP.get(_norm(name), name)


def _locate(raw: Path, split: str, annotation_json: str | None) -> Path:
    if annotation_json is not None:
        path = raw / annotation_json
    else:
        names = [f"modanet2018_instances_{split}.json", f"annotations/modanet2018_instances_{split}.json", f"instances_{split}.json"]
        path = next((raw / n for n in names if (raw / n).exists()), raw / names[0])
    if not path.exists():
        raise DatasetError(f"{path}: missing ModaNet annotation file (option annotation_json)")
    return path


def _read(path: Path) -> dict:
    try:
        data = read_json(path)
    except (FileNotFoundError, ValueError) as err:
        raise DatasetError(str(err)) from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{path}: missing list {key!r}")
    return data


def classes_from_categories(categories: list, path: Path, unlabeled: str = "background") -> ClassInfo:
    """Garment classes from the JSON categories (sorted by id), plus ``background`` (id 0) unless ignored."""
    if unlabeled not in UNLABELED:
        raise ValueError(f"modanet option unlabeled must be one of {UNLABELED}, got {unlabeled!r}")
    try:
        cats = sorted(categories, key=lambda c: int(c["id"]))
        entries = [(int(c["id"]), str(c["name"]), c.get("color")) for c in cats]
    except (KeyError, TypeError, ValueError) as err:
        raise DatasetError(f"{path}: malformed categories ({err!r})") from None
    if not entries:
        raise DatasetError(f"{path}: no categories")
    if any(i == BACKGROUND_ID for i, _, _ in entries) and unlabeled == "background":
        raise DatasetError(f"{path}: category id {BACKGROUND_ID} is reserved for background (use unlabeled: ignore)")
    pal = palette(len(entries))
    names = [n for _, n, _ in entries]
    ids = [i for i, _, _ in entries]
    colors = [tuple(int(v) for v in col[:3]) if isinstance(col, (list, tuple)) and len(col) >= 3 else pal[k] for k, (_, _, col) in enumerate(entries)]
    category = [garment_group(n) for n in names]
    is_thing = [True] * len(names)
    if unlabeled == "background":
        names.insert(0, "background")
        ids.insert(0, BACKGROUND_ID)
        colors.insert(0, (0, 0, 0))
        category.insert(0, "background")
        is_thing.insert(0, False)
    return class_list(path, names, is_thing, category, ids, colors)


def read_split(
    raw: str | os.PathLike,
    split: str,
    images_dir: str = "images",
    annotation_json: str | None = None,
    unlabeled: str = "background",
) -> tuple[list[RawSample], ClassInfo]:
    """Samples (annotations inline) and class list of ``split``, parsing the JSON once.

    Images without annotations are kept (all background, or all void).
    """
    raw = Path(raw)
    path = _locate(raw, split, annotation_json)
    data = _read(path)
    classes = classes_from_categories(data["categories"], path, unlabeled)
    image_root = raw / images_dir
    if not image_root.is_dir():
        raise DatasetError(f"{image_root}: missing ModaNet image folder (option images_dir)")
    by_image: dict[Any, list[dict]] = {}
    originals: dict[Any, list[dict]] = {}
    for a in data["annotations"]:
        if not isinstance(a, dict) or "image_id" not in a:
            raise DatasetError(f"{path}: annotation without image_id: {str(a)[:200]}")
        by_image.setdefault(a["image_id"], []).append({k: a.get(k) for k in ("id", "category_id", "segmentation", "iscrowd")})
        originals.setdefault(a["image_id"], []).append({k: a[k] for k in INSTANCE_KEYS if k in a and k != "image_id"})
    samples = []
    for im in data["images"]:
        try:
            file_name, image_id = str(im["file_name"]), im["id"]
            h, w = int(im["height"]), int(im["width"])
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{path}: image entry without id/file_name/height/width: {str(im)[:200]}") from None
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise DatasetError(f"{path}: image {file_name} has id {image_id!r}; COCO image ids are integers")
        inline = {"image": file_name, "height": h, "width": w, "annotations": by_image.get(image_id, [])}
        instances = json.dumps({"source": str(path), "annotations": _usable(originals.get(image_id, []))})
        samples.append(
            RawSample(
                name=Path(file_name).stem,
                image_path=str(image_root / file_name),
                label_paths=(str(path), json.dumps(inline)),
                image_id=image_id,
                file_name=file_name,
                instances=instances,
            )
        )
    return samples, classes


def _usable(annotations: list[dict]) -> list[dict]:
    """The annotations as given, minus polygons of fewer than 3 points.

    ModaNet has some; pycocotools would read a 4-number polygon as a box, and a 2-number one
    not at all. An annotation left with no polygon is dropped (it has no pixel), as in the
    panoptic map.
    """
    out = []
    for a in annotations:
        seg = a.get("segmentation")
        if isinstance(seg, list):
            polys = [p for p in seg if not (isinstance(p, list) and len(p) < 6 and len(p) % 2 == 0)]
            if not polys:
                continue
            if len(polys) != len(seg):
                a = {**a, "segmentation": polys}
        out.append(a)
    return out


def find_samples(raw: str | os.PathLike, split: str, **options: Any) -> list[RawSample]:
    """Every image of the JSON with its annotations inline (options as `read_split`)."""
    return read_split(raw, split, **options)[0]


def modanet_classes(raw: str | os.PathLike, split: str, **options: Any) -> ClassInfo:
    """The class list of ``split`` (options as `read_split`)."""
    return read_split(raw, split, **options)[1]


def _instance_rle(seg: Any, h: int, w: int, where: str):
    """One RLE (union of the instance's polygons, or its RLE), or None if every polygon is degenerate."""
    from pycocotools import mask as mask_utils

    if isinstance(seg, dict):
        if "counts" not in seg or "size" not in seg:
            raise DatasetError(f"{where}: RLE segmentation without counts/size")
        if [int(v) for v in seg["size"]] != [h, w]:
            raise DatasetError(f"{where}: RLE size {seg['size']} differs from the image ({h}, {w})")
        if isinstance(seg["counts"], list):
            return mask_utils.frPyObjects(seg, h, w)
        return {"size": [h, w], "counts": seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"]}
    if not isinstance(seg, list):
        raise DatasetError(f"{where}: segmentation must be a list of polygons or an RLE, got {type(seg).__name__}")
    polys = []
    for poly in seg:
        if not isinstance(poly, list) or not all(isinstance(v, (int, float)) for v in poly):
            raise DatasetError(f"{where}: polygon is not a list of numbers: {str(poly)[:80]}")
        if len(poly) % 2:
            raise DatasetError(f"{where}: polygon with an odd number of coordinates ({len(poly)})")
        if len(poly) >= 6:  # fewer than 3 points has no area (and 4 numbers would be read as a box)
            polys.append([float(v) for v in poly])
    if not polys:
        return None
    return mask_utils.merge(mask_utils.frPyObjects(polys, h, w))


def load_sample(sample: RawSample, classes: ClassInfo, unlabeled: str = "background") -> Panoptic:
    """Rasterise one image's instances (smaller on top) into a `Panoptic`."""
    from pycocotools import mask as mask_utils

    if unlabeled not in UNLABELED:
        raise ValueError(f"modanet option unlabeled must be one of {UNLABELED}, got {unlabeled!r}")
    json_path, inline = sample.label_paths
    ann = json.loads(inline)
    h, w = int(ann["height"]), int(ann["width"])
    index = classes.index_of_id()
    drawn = []
    for order, a in enumerate(ann["annotations"]):
        where = f"{json_path}: image {ann['image']}, annotation {a.get('id')}"
        cat = a.get("category_id")
        if cat is None or int(cat) not in index or not classes.is_thing[index[int(cat)]]:
            raise DatasetError(f"{where}: unknown garment category id {cat}")
        try:
            rle = _instance_rle(a.get("segmentation"), h, w, where)
        except DatasetError:
            raise
        except Exception as err:  # pycocotools' C code raises bare exceptions on malformed input
            raise DatasetError(f"{where}: cannot rasterise the segmentation ({err})") from None
        if rle is None:
            continue
        drawn.append((-int(mask_utils.area(rle)), order, index[int(cat)], bool(a.get("iscrowd") or 0), rle))
    drawn.sort(key=lambda d: (d[0], d[1]))  # largest first; later annotation on top among equals
    seg = np.zeros((h, w), np.int32)
    info: dict[int, tuple[int, bool, bool, float]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pycocotools' decode under numpy 2 (harmless)
        for sid, (_, _, k, crowd, rle) in enumerate(drawn, start=1):
            seg[mask_utils.decode(rle).astype(bool)] = sid
            info[sid] = (k, True, crowd, 1.0)
    if unlabeled == "background":
        names = list(classes.names)
        if "background" not in names:
            raise DatasetError(f"{json_path}: unlabeled: background needs a background class")
        bg = len(drawn) + 1
        seg[seg == 0] = bg
        info[bg] = (names.index("background"), False, False, 1.0)
    return Panoptic.from_segment_map(seg, info)
