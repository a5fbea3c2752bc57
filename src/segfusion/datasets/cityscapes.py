"""Cityscapes raw layout -> canonical dataset.

Raw layout (the official one)::

    leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_instanceIds.png

Classes are the 19 train classes of `cityscapesscripts.helpers.labels` (never retyped
here); labels with ``ignoreInEval`` become 255. In ``instanceIds`` a value >= 1000 is
``labelId * 1000 + k`` for instance k; a thing-class pixel below 1000 belongs to a group
annotation and becomes a crowd region (one crowd segment per class).
Costea's coarse category (Costea et al. Sec. 3) is the Cityscapes category for things
(human ⊃ person, rider; vehicle ⊃ car, truck, bus, train, motorcycle, bicycle) and the
class name for stuff.

Option ``source: panoptic`` reads cityscapesscripts' own COCO-panoptic export
(``createPanopticImgs``) instead of the labelIds/instanceIds PNGs::

    gtFine/cityscapes_panoptic_{split}.json     category ids = labelIds
    gtFine/cityscapes_panoptic_{split}/*.png    RGB ids (stuff: labelId; things: labelId*1000+k; groups: labelId)

With ``train_ids: true`` the ``--use-train-id`` export (``..._{split}_trainId.json``,
category ids = trainIds) is read and its ids are mapped back to labelIds. Both routes
give the same canonical split (tested): the export drops ``ignoreInEval`` labels (void,
like our 255) and marks thing groups (ids < 1000) as crowd, like `Panoptic.from_maps`.
Image ids: Cityscapes has no integer image ids (the export's are the ``<city>_<seq>_<frame>``
strings), so the canonical split numbers its images 0..N-1 in the order of their sorted
names, by either route; ``images[].name`` is that stem. Images are looked up by image id (the ``<city>_<seq>_<frame>`` stem) in
``leftImg8bit/{split}/<city>/``: the export's ``file_name`` wrongly keeps ``_gtFine``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from segfusion.datasets.canonical import DatasetError, RawSample
from segfusion.io.images import read_image
from segfusion.types import ClassInfo, Panoptic


@functools.lru_cache(maxsize=1)
def cityscapes_classes() -> ClassInfo:
    """The 19 Cityscapes train classes, index = trainId, ids = labelIds."""
    from cityscapesscripts.helpers.labels import labels

    train = sorted((lab for lab in labels if 0 <= lab.trainId < 255), key=lambda lab: lab.trainId)
    return ClassInfo(
        names=tuple(lab.name for lab in train),
        is_thing=tuple(bool(lab.hasInstances) for lab in train),
        category=tuple(lab.category if lab.hasInstances else lab.name for lab in train),
        ids=tuple(int(lab.id) for lab in train),
        colors=tuple(tuple(int(c) for c in lab.color) for lab in train),
    )


@functools.lru_cache(maxsize=1)
def label_id_to_train_index() -> np.ndarray:
    """Lookup table (256,) uint8: Cityscapes labelId -> class index, 255 for ignored ids.

    Ids absent from the label table map to 254, which the loader reports as unknown.
    """
    from cityscapesscripts.helpers.labels import labels

    lut = np.full(256, 254, np.uint8)
    for lab in labels:
        if 0 <= lab.id < 256:
            lut[lab.id] = lab.trainId if 0 <= lab.trainId < 255 else 255
    return lut


OPTIONS = ("source", "train_ids")


def find_samples(raw: str | os.PathLike, split: str, source: str = "labels", train_ids: bool = False) -> list[RawSample]:
    """Every image of ``split`` with its labelIds and instanceIds paths (``source="labels"``).

    ``source="panoptic"`` reads the cityscapesscripts panoptic export instead (see the
    module docstring); its samples load with `load_panoptic_sample`.
    """
    raw = Path(raw)
    image_root = raw / "leftImg8bit" / split
    if not image_root.is_dir():
        raise DatasetError(f"{image_root}: missing (expected the Cityscapes layout leftImg8bit/{split}/<city>/)")
    if source == "panoptic":
        return _find_panoptic_samples(raw, split, image_root, train_ids)
    if source != "labels":
        raise ValueError(f"cityscapes option source must be 'labels' or 'panoptic', got {source!r}")
    if train_ids:
        raise ValueError("cityscapes option train_ids applies only to source: panoptic")
    samples = []
    for img in sorted(image_root.glob("*/*_leftImg8bit.png")):
        stem = img.name[: -len("_leftImg8bit.png")]
        label_dir = raw / "gtFine" / split / img.parent.name
        samples.append(
            RawSample(
                name=stem,
                image_path=str(img),
                label_paths=(
                    str(label_dir / f"{stem}_gtFine_labelIds.png"),
                    str(label_dir / f"{stem}_gtFine_instanceIds.png"),
                ),
            )
        )
    return samples


def load_sample(sample: RawSample, classes: ClassInfo) -> Panoptic:
    """Read labelIds + instanceIds of one image into a `Panoptic` (class index = trainId)."""
    label_path, instance_path = sample.label_paths
    label_ids = read_image(label_path)
    instance_ids = read_image(instance_path).astype(np.int64)
    if label_ids.ndim != 2:
        raise DatasetError(f"{label_path}: expected a single-channel labelIds PNG, got shape {label_ids.shape}")
    if label_ids.shape != instance_ids.shape:
        raise DatasetError(f"{instance_path}: size {instance_ids.shape} differs from {label_path} {label_ids.shape}")
    semantic = label_id_to_train_index()[label_ids]
    unknown = np.unique(label_ids[semantic == 254])
    if len(unknown):
        raise DatasetError(f"{label_path}: unknown Cityscapes label ids {unknown.tolist()}")
    is_instance = instance_ids >= 1000
    inst_label = np.where(is_instance, instance_ids // 1000, label_ids)
    if np.any(inst_label != label_ids):
        bad = np.unique(instance_ids[inst_label != label_ids])[:5]
        raise DatasetError(f"{instance_path}: instance ids {bad.tolist()} disagree with {label_path}")
    instance = np.where(is_instance, instance_ids, 0)
    return Panoptic.from_maps(semantic, instance, classes)


@functools.lru_cache(maxsize=1)
def _train_id_to_label_id() -> dict[int, int]:
    from cityscapesscripts.helpers.labels import labels

    return {int(lab.trainId): int(lab.id) for lab in labels if 0 <= lab.trainId < 255}


def _find_panoptic_samples(raw: Path, split: str, image_root: Path, train_ids: bool) -> list[RawSample]:
    """Samples of cityscapesscripts' ``createPanopticImgs`` output (category ids -> labelIds)."""
    from segfusion.datasets import coco_panoptic

    base = f"cityscapes_panoptic_{split}{'_trainId' if train_ids else ''}"
    json_path = raw / "gtFine" / f"{base}.json"
    png_dir = raw / "gtFine" / base
    if not json_path.exists():
        raise DatasetError(f"{json_path}: missing (run cityscapesscripts' createPanopticImgs, or use source: labels)")
    if not png_dir.is_dir():
        raise DatasetError(f"{png_dir}: missing panoptic PNG folder of {json_path}")
    data = coco_panoptic.read_panoptic_json(json_path)
    if train_ids:
        to_label = _train_id_to_label_id()
        for ann in data["annotations"]:
            for s in ann.get("segments_info", []):
                # Unknown trainIds map to -1, which the loader reports as an unknown category.
                s["category_id"] = to_label.get(int(s["category_id"]), -1)
    # The export names images "<id>_gtFine_leftImg8bit.png" (sic); the image id is the
    # Cityscapes stem "<city>_<seq>_<frame>", so images are found by id.
    found = {p.name[: -len("_leftImg8bit.png")]: p for p in image_root.glob("*/*_leftImg8bit.png")}
    image_paths, names = {}, {}
    for im in data["images"]:
        stem = str(im.get("id"))
        file_name = str(im.get("file_name"))
        image_paths[file_name] = found.get(stem, image_root / stem.split("_")[0] / f"{stem}_leftImg8bit.png")
        names[file_name] = stem
    return coco_panoptic.samples_from_json(data, json_path, png_dir, image_root, image_paths, names, native=False)


def load_panoptic_sample(sample: RawSample, classes: ClassInfo) -> Panoptic:
    """Read one image of the cityscapesscripts panoptic export (category ids = labelIds)."""
    from segfusion.datasets import coco_panoptic

    return coco_panoptic.load_sample(sample, classes)
