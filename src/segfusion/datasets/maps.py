"""Your own dataset as label maps (format ``maps``) -> canonical dataset.

The shape in which most people hold their own annotations: one class-index PNG and one
instance-id PNG per image, and a class list. Raw layout (each name overridable)::

    classes.yaml                      the class list (option ``classes_file``)
    images/{split}/<stem>.jpg|.jpeg|.png                        (option ``images_dir``)
    semantic/{split}/<stem>.png       uint8 class index per pixel, 255 = ignore (``semantic_dir``)
    instance/{split}/<stem>.png       instance id per thing pixel, 8- or 16-bit (``instance_dir``)

``classes.yaml`` is a list (or ``{classes: [...]}``); entry k describes class index k, the
value k of the semantic PNGs::

    - {name: road, is_thing: false}
    - {name: car, is_thing: true, category: vehicle, color: [0, 0, 142], id: 26}

``name`` and ``is_thing`` are required; ``category`` (Costea's coarse category; default:
the name), ``color`` (RGB; default a deterministic palette) and ``id`` (the native category
id written to panoptic.json; default the class index) are optional. Unknown keys,
duplicate names or ids, and more than 254 classes are errors naming the file and entry.

Instances: on a thing pixel, the instance PNG holds the instance id (any positive value,
unique within the image; ids need not be contiguous). A thing pixel with id 0 belongs to no
single instance: with ``thing_without_instance: crowd`` (default, the Cityscapes and COCO
convention) those pixels form one crowd segment per class (ignored by PQ and AP, like
crowd regions), with ``void`` they become void (255). The instance PNG must be 0 on stuff
and void pixels, and an instance id must not span two classes. Without thing classes the
instance folder is optional.

Image ids: the format has none, so the canonical split numbers its images 0..N-1 in the
order of their sorted stems (listed in its ``panoptic.json``); COCO results files for
``import-predictions`` use those ids.

Every error names the file and the values at fault: an image without labels (or labels
without an image), sizes that disagree, class indices outside the list, instance ids on
stuff or void pixels, an instance spanning two classes. Each is per image, so
``--skip-bad`` converts the rest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from segfusion.datasets.canonical import DatasetError, RawSample, class_list
from segfusion.datasets.coco_panoptic import palette
from segfusion.io.images import read_image
from segfusion.types import IGNORE_INDEX, ClassInfo, Panoptic

OPTIONS = ("images_dir", "semantic_dir", "instance_dir", "classes_file", "thing_without_instance")
THING_WITHOUT_INSTANCE = ("crowd", "void")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CLASS_KEYS = ("name", "is_thing", "category", "color", "colour", "id")


def maps_classes(raw: str | os.PathLike, classes_file: str = "classes.yaml") -> ClassInfo:
    """The class list of ``classes.yaml``: index = semantic PNG value."""
    import yaml

    path = Path(raw) / classes_file
    if not path.exists():
        raise DatasetError(f"{path}: missing class list (option classes_file)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise DatasetError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if isinstance(data, dict) and set(data) == {"classes"}:
        data = data["classes"]
    if not isinstance(data, list) or not data:
        raise DatasetError(f"{path}: expected a non-empty list of classes (or {{classes: [...]}})")
    pal = palette(len(data))
    names, is_thing, category, colors, ids = [], [], [], [], []
    for k, e in enumerate(data):
        where = f"{path}: class {k}"
        if not isinstance(e, dict):
            raise DatasetError(f"{where}: expected a mapping {{name, is_thing, ...}}, got {str(e)[:80]}")
        unknown = sorted(set(e) - set(CLASS_KEYS))
        if unknown:
            raise DatasetError(f"{where}: unknown keys {unknown}; allowed: {list(CLASS_KEYS)}")
        if not isinstance(e.get("name"), str) or not e["name"]:
            raise DatasetError(f"{where}: 'name' must be a non-empty string")
        where = f"{path}: class {k} ({e['name']})"
        if not isinstance(e.get("is_thing"), bool):
            raise DatasetError(f"{where}: 'is_thing' must be true or false, got {e.get('is_thing')!r}")
        col = e.get("color", e.get("colour"))
        if col is not None and not (isinstance(col, list) and len(col) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in col)):
            raise DatasetError(f"{where}: color must be [r, g, b] with integers 0..255, got {col!r}")
        native = e.get("id", k)
        if not isinstance(native, int) or isinstance(native, bool) or native < 0:
            raise DatasetError(f"{where}: id must be an integer >= 0, got {native!r}")
        names.append(e["name"])
        is_thing.append(e["is_thing"])
        category.append(str(e.get("category", e["name"])))
        colors.append(tuple(col) if col is not None else pal[k])
        ids.append(native)
    return class_list(path, names, is_thing, category, ids, colors)


def find_samples(
    raw: str | os.PathLike,
    split: str,
    images_dir: str = "images",
    semantic_dir: str = "semantic",
    instance_dir: str = "instance",
    with_instances: bool = True,
) -> list[RawSample]:
    """Samples paired by stem; an unpaired file still yields a sample that fails on load."""
    raw = Path(raw)
    image_root, sem_root, inst_root = raw / images_dir / split, raw / semantic_dir / split, raw / instance_dir / split
    needed = [image_root, sem_root] + ([inst_root] if with_instances else [])
    for d in needed:
        if not d.is_dir():
            raise DatasetError(f"{d}: missing (expected the maps layout {images_dir}/{split}/, {semantic_dir}/{split}/, {instance_dir}/{split}/)")
    images = {p.stem: p for p in sorted(image_root.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    sems = {p.stem: p for p in sorted(sem_root.glob("*.png"))}
    stems = sorted(set(images) | set(sems))
    samples = []
    for stem in stems:
        image = images.get(stem, image_root / f"{stem}.png")  # a missing file: read_image reports it
        paths = [str(sems.get(stem, sem_root / f"{stem}.png"))]
        if inst_root.is_dir():
            paths.append(str(inst_root / f"{stem}.png"))
        samples.append(RawSample(name=stem, image_path=str(image), label_paths=tuple(paths)))
    return samples


def load_sample(sample: RawSample, classes: ClassInfo, thing_without_instance: str = "crowd") -> Panoptic:
    """Read one image's semantic and instance PNGs into a `Panoptic` (module docstring rules)."""
    if thing_without_instance not in THING_WITHOUT_INSTANCE:
        raise ValueError(f"maps option thing_without_instance must be one of {THING_WITHOUT_INSTANCE}, got {thing_without_instance!r}")
    sem_path = sample.label_paths[0]
    semantic = read_image(sem_path)
    if semantic.ndim != 2 or semantic.dtype.kind not in "ui":
        raise DatasetError(f"{sem_path}: expected a single-channel class-index PNG (8-bit or palette), got shape {semantic.shape} {semantic.dtype}")
    n = classes.num_classes
    bad = np.unique(semantic[(semantic != IGNORE_INDEX) & ((semantic >= n) | (semantic < 0))])
    if len(bad):
        raise DatasetError(f"{sem_path}: class indices {bad.tolist()[:10]} outside 0..{n - 1} (255 = ignore)")
    semantic = semantic.astype(np.uint8)
    is_thing = np.zeros(256, bool)
    is_thing[:n] = classes.is_thing_array
    thing = is_thing[semantic]
    if len(sample.label_paths) > 1:
        inst_path = sample.label_paths[1]
        instance = read_image(inst_path)
        if instance.ndim != 2 or instance.dtype.kind not in "ui":
            raise DatasetError(f"{inst_path}: expected a single-channel 8- or 16-bit instance-id PNG, got shape {instance.shape} {instance.dtype}")
        if instance.shape != semantic.shape:
            raise DatasetError(f"{inst_path}: size {instance.shape} differs from {sem_path} {semantic.shape}")
        instance = instance.astype(np.int64)
        off = (instance != 0) & ~thing
        if off.any():
            raise DatasetError(f"{inst_path}: instance ids {np.unique(instance[off]).tolist()[:10]} on stuff or void pixels of {sem_path} (must be 0 there)")
        _check_one_class(instance, semantic, inst_path, classes)
    elif thing.any():
        raise DatasetError(f"{sem_path}: thing classes present but no instance PNG (expected it in the instance folder)")
    else:
        instance = np.zeros(semantic.shape, np.int64)
    if thing_without_instance == "void":
        semantic = np.where(thing & (instance == 0), np.uint8(IGNORE_INDEX), semantic)
    return Panoptic.from_maps(semantic, instance, classes)


def _check_one_class(instance: np.ndarray, semantic: np.ndarray, path: str, classes: ClassInfo) -> None:
    """Every instance id covers pixels of one class only."""
    ids = instance[instance > 0]
    if ids.size == 0:
        return
    pairs = np.unique(np.stack([ids, semantic[instance > 0].astype(np.int64)]), axis=1)
    uniq, counts = np.unique(pairs[0], return_counts=True)
    if (counts > 1).any():
        i = int(uniq[counts > 1][0])
        names = [classes.names[int(c)] for c in pairs[1][pairs[0] == i]]
        raise DatasetError(f"{path}: instance {i} spans classes {names}; an instance has one class")


def read_split(raw: str | os.PathLike, split: str, **options: Any) -> tuple[list[RawSample], ClassInfo]:
    """Samples and class list of ``split`` (options: `OPTIONS`)."""
    classes = maps_classes(raw, options.get("classes_file", "classes.yaml"))
    dirs = {k: options[k] for k in ("images_dir", "semantic_dir", "instance_dir") if k in options}
    samples = find_samples(raw, split, with_instances=bool(classes.thing_indices.size), **dirs)
    return samples, classes
