"""COCO-panoptic raw layout -> canonical dataset (also the reader behind Cityscapes' panoptic export).

Raw layout (the official COCO one; paths relative to the raw root, each overridable)::

    panoptic_{split}.json       or annotations/panoptic_{split}.json   (option ``annotation_json``)
    panoptic_{split}/*.png      next to the JSON                       (option ``panoptic_dir``)
    {split}/*.jpg               the images                             (option ``images_dir``)

The JSON holds ``images`` (id, file_name, height, width), ``annotations`` (image_id,
file_name of the PNG, ``segments_info``: id, category_id, iscrowd, ...) and
``categories`` (id, name, isthing, optional supercategory and color). A PNG encodes the
segment id of every pixel as id = R + 256 G + 256² B, 0 = void.

Choices:

* **Classes** are the JSON categories sorted by id (class index = rank); the native ids
  are kept (written back into the canonical panoptic.json, so panopticapi reads it).
* **Costea's category** (category ⊃ sub-category, Costea et al. Sec. 3) is the COCO
  ``supercategory`` for things (vehicle ⊃ car, bus, truck...) and the class name for
  stuff: stuff classes are never region-grown across, so each stays its own category.
* **Colours** come from the JSON ``color`` field when present, else from `palette`
  (deterministic, so two conversions of the same data plot alike).
* ``isthing`` is kept as given, ``iscrowd`` too for things (a stuff segment is never a
  crowd); segments listed in the JSON but absent from the PNG are dropped (no pixel).
* **Native ids**: the canonical split keeps the JSON's (integer) image ids and image file
  names, so COCO results files and panopticapi's ``pq_compute`` against the original JSON
  work on our outputs unchanged.
* **AP ground truth**: with option ``instances_json`` (COCO's ``instances_{split}.json``)
  the canonical ``instances.json`` holds those annotations as given (overlapping masks,
  crowd regions, annotation boxes), else the thing segments of the panoptic PNGs.
* **Errors** name the file: an unknown category id in ``segments_info`` names the JSON
  and the image; an id drawn in the PNG but absent from ``segments_info`` names the PNG;
  a PNG whose size differs from the JSON names both; a missing annotation, PNG or image
  is reported per image, so ``--skip-bad`` skips only that image.

Per-image annotations travel inside the `RawSample` (``label_paths = (png, json,
inline segments JSON)``) because the sample is what reaches the worker processes; the
(possibly huge) annotation JSON is parsed once, in the parent.
"""

from __future__ import annotations

import colorsys
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from segfusion.datasets.canonical import DatasetError, RawSample
from segfusion.io.atomic import read_json
from segfusion.io.images import read_image, rgb2id
from segfusion.types import ClassInfo, Panoptic

OPTIONS = ("images_dir", "annotation_json", "panoptic_dir", "instances_json")


def palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """``n`` distinct, deterministic RGB colours: hues stepped by the golden ratio.

    Saturation and value alternate over three levels so neighbouring indices differ in
    more than hue.
    """
    colors = []
    for k in range(n):
        hue = (k * 0.618033988749895) % 1.0
        sat = (0.85, 0.6, 0.95)[k % 3]
        val = (0.95, 0.75, 0.55)[(k // 3) % 3]
        r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
        colors.append((int(round(255 * r)), int(round(255 * g)), int(round(255 * b))))
    return tuple(colors)


def classes_from_categories(categories: list[dict[str, Any]], source: str | os.PathLike) -> ClassInfo:
    """A `ClassInfo` from COCO-panoptic ``categories`` (sorted by id); ``source`` names the file in errors."""
    if not categories:
        raise DatasetError(f"{source}: no categories")
    try:
        cats = sorted(categories, key=lambda c: int(c["id"]))
        ids = [int(c["id"]) for c in cats]
        names = [str(c["name"]) for c in cats]
        is_thing = [bool(c.get("isthing", 0)) for c in cats]
    except (KeyError, TypeError, ValueError) as err:
        raise DatasetError(f"{source}: malformed categories ({err!r})") from None
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise DatasetError(f"{source}: duplicate category ids {dup}")
    fallback = palette(len(cats))
    colors = []
    for k, c in enumerate(cats):
        col = c.get("color")
        colors.append(tuple(int(v) for v in col[:3]) if isinstance(col, (list, tuple)) and len(col) >= 3 else fallback[k])
    category = [str(c.get("supercategory") or c["name"]) if t else str(c["name"]) for c, t in zip(cats, is_thing)]
    try:
        return ClassInfo(names=tuple(names), is_thing=tuple(is_thing), category=tuple(category), ids=tuple(ids), colors=tuple(colors))
    except ValueError as err:
        raise DatasetError(f"{source}: {err}") from None


def _locate(raw: Path, split: str, annotation_json: str | None, panoptic_dir: str | None) -> tuple[Path, Path]:
    if annotation_json is not None:
        json_path = raw / annotation_json
    else:
        candidates = [raw / f"panoptic_{split}.json", raw / "annotations" / f"panoptic_{split}.json"]
        json_path = next((p for p in candidates if p.exists()), candidates[0])
    if not json_path.exists():
        raise DatasetError(f"{json_path}: missing COCO-panoptic annotation file (option annotation_json)")
    png_dir = raw / panoptic_dir if panoptic_dir is not None else json_path.parent / json_path.stem
    if not png_dir.is_dir():
        raise DatasetError(f"{png_dir}: missing COCO-panoptic PNG folder (option panoptic_dir)")
    return json_path, png_dir


def read_panoptic_json(json_path: str | os.PathLike) -> dict:
    """The parsed annotation JSON, with its three top-level lists checked."""
    try:
        data = read_json(json_path)
    except (FileNotFoundError, ValueError) as err:
        raise DatasetError(str(err)) from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{json_path}: missing list {key!r}")
    return data


def samples_from_json(
    data: dict,
    json_path: Path,
    png_dir: Path,
    image_root: Path,
    image_paths: dict[str, Path] | None = None,
    names: dict[str, str] | None = None,
    native: bool = True,
    instances: dict[int, list[dict]] | None = None,
    instances_path: Path | None = None,
) -> list[RawSample]:
    """One `RawSample` per JSON image: (image, PNG, JSON, inline annotation).

    ``image_paths`` maps an image ``file_name`` to its path when images are not all in
    ``image_root`` (Cityscapes' city folders), ``names`` to the sample name (default: the
    file name's stem). An image without annotation still yields a sample, whose loading
    fails with that reason (so ``--skip-bad`` can skip it). ``native``: the samples keep the
    JSON's image ids and file names (COCO; Cityscapes' export has string ids, so it does
    not). ``instances``: COCO instance annotations by image id (from ``instances_path``),
    carried as given into the canonical ``instances.json``.
    """
    anns: dict[Any, dict] = {}
    for a in data["annotations"]:
        try:
            anns[a["image_id"]] = a
        except (KeyError, TypeError):
            raise DatasetError(f"{json_path}: annotation without image_id: {str(a)[:200]}") from None
    samples = []
    for im in data["images"]:
        try:
            file_name, image_id = str(im["file_name"]), im["id"]
        except (KeyError, TypeError):
            raise DatasetError(f"{json_path}: image entry without id/file_name: {str(im)[:200]}") from None
        ann = anns.get(image_id)
        image_path = (image_paths or {}).get(file_name, image_root / file_name)
        if ann is None:
            inline: dict[str, Any] = {"error": f"{json_path}: no annotation for image {file_name} (id {image_id})"}
            png = png_dir / (Path(file_name).stem + ".png")
        else:
            png = png_dir / str(ann.get("file_name", Path(file_name).stem + ".png"))
            inline = {
                "image": file_name,
                "height": im.get("height"),
                "width": im.get("width"),
                "segments_info": ann.get("segments_info", []),
            }
        name = (names or {}).get(file_name, Path(file_name).stem)
        keep_id = native and isinstance(image_id, int) and not isinstance(image_id, bool)
        inst = None
        if instances is not None:
            inst = json.dumps({"source": str(instances_path), "annotations": instances.get(image_id, [])})
        samples.append(
            RawSample(
                name=name,
                image_path=str(image_path),
                label_paths=(str(png), str(json_path), json.dumps(inline)),
                image_id=int(image_id) if keep_id else None,
                file_name=file_name if native else None,
                instances=inst,
            )
        )
    if native and any(s.image_id is None for s in samples):
        bad = next(im for im in data["images"] if not isinstance(im["id"], int) or isinstance(im["id"], bool))
        raise DatasetError(f"{json_path}: image {bad['file_name']} has id {bad['id']!r}; COCO image ids are integers")
    # A label file whose annotation names no image entry: an error naming it (--skip-bad lists it
    # in skipped.csv), never silently left out. Its "image" is the label PNG, so loading reaches
    # the error (the real image is unknown).
    image_ids = {im.get("id") for im in data["images"] if isinstance(im, dict)}
    for image_id, ann in anns.items():
        if image_id not in image_ids:
            png = png_dir / str(ann.get("file_name", f"{image_id}.png"))
            error = {"error": f"{png}: label file of image id {image_id!r} in {json_path}, which lists no image with that id"}
            keep = native and isinstance(image_id, int) and not isinstance(image_id, bool)
            samples.append(
                RawSample(name=Path(png).stem, image_path=str(png), label_paths=(str(png), str(json_path), json.dumps(error)), image_id=image_id if keep else None)
            )
    return samples


def read_instances_json(path: Path, data: dict) -> dict[int, list[dict]]:
    """COCO instance annotations of ``path`` grouped by image id (only the images of ``data``)."""
    try:
        inst = read_json(path)
    except (FileNotFoundError, ValueError) as err:
        raise DatasetError(f"{err} (option instances_json)") from None
    if not isinstance(inst, dict) or not isinstance(inst.get("annotations"), list):
        raise DatasetError(f"{path}: missing list 'annotations' (a COCO instances file, option instances_json)")
    wanted = {im.get("id") for im in data["images"]}
    grouped: dict[int, list[dict]] = {}
    for a in inst["annotations"]:
        if not isinstance(a, dict) or "image_id" not in a:
            raise DatasetError(f"{path}: annotation without image_id: {str(a)[:200]}")
        if a["image_id"] in wanted:
            grouped.setdefault(a["image_id"], []).append(a)
    return grouped


def read_split(
    raw: str | os.PathLike,
    split: str,
    images_dir: str | None = None,
    annotation_json: str | None = None,
    panoptic_dir: str | None = None,
    instances_json: str | None = None,
) -> tuple[list[RawSample], ClassInfo]:
    """Samples and class list of ``split``, parsing the (possibly large) JSON once.

    ``instances_json``: a COCO instances file (``annotations/instances_{split}.json``) whose
    annotations of the split's images become the canonical ``instances.json`` as given
    (overlaps, crowd, boxes), the ground truth of AP; without it, the thing segments of the
    panoptic PNGs are.
    """
    raw = Path(raw)
    json_path, png_dir = _locate(raw, split, annotation_json, panoptic_dir)
    data = read_panoptic_json(json_path)
    classes = classes_from_categories(data["categories"], json_path)
    image_root = raw / (images_dir if images_dir is not None else split)
    if not image_root.is_dir():
        raise DatasetError(f"{image_root}: missing image folder (option images_dir)")
    instances = inst_path = None
    if instances_json is not None:
        inst_path = raw / instances_json
        instances = read_instances_json(inst_path, data)
    return samples_from_json(data, json_path, png_dir, image_root, instances=instances, instances_path=inst_path), classes


def find_samples(raw: str | os.PathLike, split: str, **options: Any) -> list[RawSample]:
    """Every image of ``split`` with its PNG and inline ``segments_info`` (options as `read_split`)."""
    return read_split(raw, split, **options)[0]


def coco_panoptic_classes(raw: str | os.PathLike, split: str, **options: Any) -> ClassInfo:
    """The class list of ``split``: its JSON categories sorted by id (options as `read_split`)."""
    return read_split(raw, split, **options)[1]


def load_sample(sample: RawSample, classes: ClassInfo) -> Panoptic:
    """Read one COCO-panoptic PNG + its inline ``segments_info`` into a `Panoptic` (ids kept)."""
    png_path, json_path, inline = sample.label_paths
    ann = json.loads(inline)
    if "error" in ann:
        raise DatasetError(ann["error"])
    rgb = read_image(png_path)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DatasetError(f"{png_path}: expected an RGB id PNG (id = R + 256 G + 256² B), got shape {rgb.shape}")
    ids = rgb2id(rgb)
    h, w = ann.get("height"), ann.get("width")
    if h is not None and w is not None and ids.shape != (int(h), int(w)):
        raise DatasetError(f"{png_path}: size {ids.shape} differs from {json_path} ({int(h)}, {int(w)}) for image {ann['image']}")
    index = classes.index_of_id()
    info: dict[int, tuple[int, bool, bool, float]] = {}
    for s in ann["segments_info"]:
        try:
            sid, cat = int(s["id"]), int(s["category_id"])
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{json_path}: image {ann['image']}: malformed segments_info entry {s}") from None
        if cat not in index:
            raise DatasetError(f"{json_path}: image {ann['image']}: segment {sid} has unknown category id {cat}")
        if sid in info:
            raise DatasetError(f"{json_path}: image {ann['image']}: duplicate segment id {sid}")
        if sid == 0:
            raise DatasetError(f"{json_path}: image {ann['image']}: segment id 0 is reserved for void")
        k = index[cat]
        thing = bool(classes.is_thing[k])
        info[sid] = (k, thing, thing and bool(s.get("iscrowd", 0)), 1.0)
    # panopticapi: "segment ... is not presented in PNG" is an error; never drop the segment silently.
    absent = sorted(set(info) - set(np.unique(ids).tolist()))
    if absent:
        raise DatasetError(f"{png_path}: segments {absent[:10]} of {json_path} segments_info (image {ann['image']}) have no pixel of their colour in the PNG")
    try:
        return Panoptic.from_segment_map(ids, info)
    except ValueError as err:
        raise DatasetError(f"{png_path}: {err} (not in {json_path} segments_info)") from None
