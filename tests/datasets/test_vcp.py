import json

import numpy as np
import pytest
from PIL import Image

from segfusion.datasets.canonical import CanonicalSplit, DatasetError
from segfusion.datasets.registry import convert, prepare
from segfusion.datasets.validate import validate_split
from segfusion.datasets.vcp import garment_group, segments_to_instances, vcp_classes
from segfusion.types import ClassInfo

NAMES = ["background", "skin", "hair", "shirt", "blazer", "pants"]
BG, SKIN, HAIR, SHIRT, BLAZER, PANTS = range(6)


def _label():
    """A shirt under an open blazer: neck strip + two cuffs (3 components), a diagonal 2-pixel shirt bit."""
    lab = np.zeros((30, 40), np.uint8)
    lab[2:6, 15:25] = SKIN
    lab[0:2, 16:24] = HAIR
    lab[6:22, 8:32] = BLAZER
    lab[8:22, 18:22] = SHIRT  # visible through the opening (the collar, rows 6-7, joins the blazer)
    lab[18:20, 4:8] = SHIRT  # left cuff
    lab[18:20, 32:36] = SHIRT  # right cuff
    lab[22:30, 10:30] = PANTS
    lab[24, 2] = SHIRT  # two diagonal pixels: one component with 8-connectivity, two with 4
    lab[25, 3] = SHIRT
    lab[29, 39] = 255  # void
    return lab


def _write_raw(root, n=2, names=NAMES):
    for sub in ("images/train", "labels/train"):
        (root / sub).mkdir(parents=True)
    (root / "classes.json").write_text(json.dumps(names))
    for k in range(n):
        Image.fromarray(np.full((30, 40, 3), 50 + k, np.uint8)).save(root / "images" / "train" / f"img{k}.jpg")
        Image.fromarray(_label()).save(root / "labels" / "train" / f"img{k}.png")
    return root


def test_classes_from_plain_names_and_objects(tmp_path):
    raw = _write_raw(tmp_path / "raw")
    classes = vcp_classes(raw)
    assert classes.names == tuple(NAMES) and classes.ids == tuple(range(6))
    assert classes.is_thing == (False, False, False, True, True, True)
    assert classes.category == ("background", "skin", "hair", "upper-body", "upper-body", "lower-body")
    (raw / "classes.json").write_text(json.dumps(["background", {"name": "cape", "category": "upper-body", "color": [1, 2, 3]}]))
    c2 = vcp_classes(raw)
    assert c2.category == ("background", "upper-body") and c2.colors[1] == (1, 2, 3) and c2.is_thing == (False, True)
    assert garment_group("T shirt") == "upper-body" and garment_group("Skirts") == "lower-body" and garment_group("kilt") == "kilt"


def test_connected_components_become_instances():
    ci = ClassInfo(names=tuple(NAMES), is_thing=(False,) * 3 + (True,) * 3, category=tuple(NAMES), ids=tuple(range(6)), colors=((0, 0, 0),) * 6)
    lab = _label()
    sem8, inst8 = segments_to_instances(lab, ci, connectivity=8)
    sem4, inst4 = segments_to_instances(lab, ci, connectivity=4)
    assert np.array_equal(sem8, lab) and np.array_equal(sem4, lab)
    assert len(np.unique(inst8[lab == SHIRT])) == 4  # neck strip, two cuffs, diagonal pair
    assert len(np.unique(inst4[lab == SHIRT])) == 5  # the diagonal pair splits
    assert len(np.unique(inst8[lab == BLAZER])) == 1 and (inst8[lab <= HAIR] == 0).all()
    assert len(np.unique(inst8[inst8 > 0])) == 6  # ids unique across classes
    sem, inst = segments_to_instances(lab, ci, connectivity=8, min_area=3)
    assert sem[24, 2] == 255 and sem[25, 3] == 255 and inst[24, 2] == 0  # the 2-pixel component became void
    assert (sem[18:20, 4:8] == SHIRT).all()


def test_convert_vcp_layout(tmp_path):
    raw = _write_raw(tmp_path / "raw")
    out = tmp_path / "out"
    convert("vcp", raw, "train", out, options={"connectivity": 4, "min_area": 2})
    assert validate_split(out) == []
    split = CanonicalSplit(out)
    pan = split.panoptic(split.record("img0"))
    by_class = {}
    for s in pan.segments:
        by_class.setdefault(split.classes.names[s.class_index], []).append(s)
    assert len(by_class["shirt"]) == 3 and len(by_class["blazer"]) == 1 and len(by_class["skin"]) == 1
    assert sorted(s.bbox for s in by_class["shirt"]) == [(4, 18, 4, 2), (18, 8, 4, 14), (32, 18, 4, 2)]
    assert not any(s.iscrowd for s in pan.segments)
    with pytest.raises(ValueError, match="connectivity must be 4 or 8"):
        prepare("vcp", raw, "train", {"connectivity": 6})
    with pytest.raises(ValueError, match="min_area must be an integer >= 1"):
        prepare("vcp", raw, "train", {"min_area": 0})


def test_unknown_label_value_names_file_and_value(tmp_path):
    raw = _write_raw(tmp_path / "raw")
    lab = _label()
    lab[3, 3] = 17
    Image.fromarray(lab).save(raw / "labels" / "train" / "img1.png")
    with pytest.raises(DatasetError, match="img1.png: unknown label values \\[17\\]"):
        convert("vcp", raw, "train", tmp_path / "out")
    skipped = convert("vcp", raw, "train", tmp_path / "out", skip_bad=True)
    assert [s["name"] for s in skipped] == ["img1"] and (tmp_path / "out" / "skipped.csv").exists()


def test_missing_pair_size_mismatch_corrupt(tmp_path):
    raw = _write_raw(tmp_path / "raw", n=3)
    (raw / "labels" / "train" / "img2.png").unlink()
    with pytest.raises(DatasetError, match="labels/train/img2.png: file not found"):
        convert("vcp", raw, "train", tmp_path / "out")
    Image.fromarray(_label()).save(raw / "labels" / "train" / "extra.png")  # label without image
    skipped = convert("vcp", raw, "train", tmp_path / "out", skip_bad=True)
    assert sorted(s["name"] for s in skipped) == ["extra", "img2"]
    Image.fromarray(_label()[:-1]).save(raw / "labels" / "train" / "img2.png")
    (raw / "labels" / "train" / "extra.png").unlink()
    with pytest.raises(DatasetError, match="img2.png: label size \\(29, 40\\) differs from image"):
        convert("vcp", raw, "train", tmp_path / "out")
    Image.fromarray(_label()).save(raw / "labels" / "train" / "img2.png")
    (raw / "images" / "train" / "img0.jpg").write_bytes(b"nope")
    with pytest.raises(DatasetError, match="img0.jpg: corrupt"):
        convert("vcp", raw, "train", tmp_path / "out")


def test_missing_layout_is_a_clear_error(tmp_path):
    (tmp_path / "classes.json").write_text(json.dumps(NAMES))
    with pytest.raises(DatasetError, match="images/val: missing"):
        convert("vcp", tmp_path, "val", tmp_path / "out")


def test_two_workers_give_the_same_split(tmp_path):
    raw = _write_raw(tmp_path / "raw", n=5)
    convert("vcp", raw, "train", tmp_path / "one", options={"min_area": 2})
    convert("vcp", raw, "train", tmp_path / "two", workers=2, options={"min_area": 2})  # the bound loader pickles
    assert (tmp_path / "one" / "panoptic.json").read_text() == (tmp_path / "two" / "panoptic.json").read_text()
    names = sorted(p.name for p in (tmp_path / "one" / "panoptic").iterdir())
    assert len(names) == 5 and names == sorted(p.name for p in (tmp_path / "two" / "panoptic").iterdir())
