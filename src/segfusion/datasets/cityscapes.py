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


def find_samples(raw: str | os.PathLike, split: str) -> list[RawSample]:
    """Every image of ``split`` with its labelIds and instanceIds paths."""
    raw = Path(raw)
    image_root = raw / "leftImg8bit" / split
    if not image_root.is_dir():
        raise DatasetError(f"{image_root}: missing (expected the Cityscapes layout leftImg8bit/{split}/<city>/)")
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
