import json

import numpy as np
import pytest
from PIL import Image

from segfusion.datasets.canonical import CanonicalSplit, DatasetError
from segfusion.datasets.cityscapes import cityscapes_classes, find_samples
from segfusion.datasets.registry import convert
from segfusion.datasets.synthetic import (
    BICYCLE,
    BUILDING,
    BUS,
    CAR,
    PERSON,
    RIDER,
    ROAD,
    SIDEWALK,
    SKY,
    STATIC,
    TRUCK,
    VEGETATION,
    synthesize_street,
)
from segfusion.datasets.validate import validate_split


def test_synthetic_label_ids_are_real_cityscapes_ids():
    from cityscapesscripts.helpers.labels import name2label

    for name, lid in [("road", ROAD), ("sidewalk", SIDEWALK), ("building", BUILDING), ("vegetation", VEGETATION), ("sky", SKY),
                      ("person", PERSON), ("rider", RIDER), ("car", CAR), ("truck", TRUCK), ("bus", BUS), ("bicycle", BICYCLE), ("static", STATIC)]:
        assert name2label[name].id == lid


def test_synthetic_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    synthesize_street(a, "train", 2, (48, 96), seed=5)
    synthesize_street(b, "train", 2, (48, 96), seed=5)
    for fa in sorted(a.rglob("*.png")):
        fb = b / fa.relative_to(a)
        assert np.array_equal(np.array(Image.open(fa)), np.array(Image.open(fb)))
    c = tmp_path / "c"
    synthesize_street(c, "train", 1, (48, 96), seed=6)
    f0 = sorted(a.rglob("*leftImg8bit.png"))[0]
    assert not np.array_equal(np.array(Image.open(f0)), np.array(Image.open(c / f0.relative_to(a))))


def test_convert_writes_consistent_canonical_split(street_canonical):
    split = CanonicalSplit(street_canonical)
    assert len(split) == 6 and split.classes == cityscapes_classes()
    assert validate_split(street_canonical) == []
    data = json.loads((street_canonical / "panoptic.json").read_text())
    cats = {c["id"]: c for c in data["categories"]}
    assert cats[26]["name"] == "car" and cats[26]["isthing"] == 1 and cats[7]["isthing"] == 0
    inst = json.loads((street_canonical / "instances.json").read_text())
    assert inst["annotations"] and all(a["category_id"] in (24, 25, 26, 27, 28, 33) for a in inst["annotations"])
    rec = split.images[0]
    pan = split.panoptic(rec)
    assert np.array_equal(pan.semantic, split.semantic(rec))
    assert split.image(rec).shape == (64, 128, 3)


def _copy_raw(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_convert_errors_name_the_file(street_raw, tmp_path):
    raw = _copy_raw(street_raw, tmp_path / "raw")
    samples = find_samples(raw, "train")
    # corrupt image
    with open(samples[0].image_path, "wb") as fh:
        fh.write(b"not a png")
    with pytest.raises(DatasetError, match=samples[0].image_path.split("/")[-1]):
        convert("cityscapes", raw, "train", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written
    skipped = convert("cityscapes", raw, "train", tmp_path / "out", skip_bad=True)
    assert len(skipped) == 1 and (tmp_path / "out" / "skipped.csv").exists()
    assert len(CanonicalSplit(tmp_path / "out")) == 5


def test_convert_unknown_label_and_size_mismatch(street_raw, tmp_path):
    raw = _copy_raw(street_raw, tmp_path / "raw")
    samples = find_samples(raw, "train")
    label_path = samples[1].label_paths[0]
    lab = np.array(Image.open(label_path))
    lab[0, 0] = 99  # not a Cityscapes label id
    Image.fromarray(lab).save(label_path)
    with pytest.raises(DatasetError, match="unknown Cityscapes label ids \\[99\\]"):
        convert("cityscapes", raw, "train", tmp_path / "out")
    Image.fromarray(lab[:-2]).save(label_path)
    with pytest.raises(DatasetError, match="differs"):
        convert("cityscapes", raw, "train", tmp_path / "out")


def test_missing_split_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="leftImg8bit/test"):
        convert("cityscapes", tmp_path, "test", tmp_path / "out")
