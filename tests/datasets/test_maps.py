"""The ``maps`` format: your own data as class-index and instance-id PNGs (issue 17, item 5).

The fixture is an indoor scene with custom classes (none of Cityscapes' or COCO's), a
native id on one class, 16-bit instance ids that are large and non-contiguous, thing
pixels without an instance (crowd, or void by option) and void pixels.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from segfusion.cli import main
from segfusion.datasets.canonical import CanonicalSplit, DatasetError
from segfusion.datasets.registry import FORMATS, convert
from segfusion.datasets.validate import validate_split
from segfusion.io.images import write_png

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H, W = 32, 48
CLASSES_YAML = """\
- {name: floor, is_thing: false, color: [120, 80, 40]}
- {name: wall, is_thing: false}
- {name: chair, is_thing: true, category: furniture}
- {name: lamp, is_thing: true, category: light, id: 42}
"""
FLOOR, WALL, CHAIR, LAMP = range(4)


def _maps(k):
    sem = np.full((H, W), WALL, np.uint8)
    sem[16:] = FLOOR
    inst = np.zeros((H, W), np.uint16)
    sem[18:30, 4:14] = CHAIR
    inst[18:30, 4:14] = 65535
    sem[18:30, 20:28 + k] = CHAIR
    inst[18:30, 20:28 + k] = 1000 + k
    sem[2:10, 30:36] = LAMP
    inst[2:10, 30:36] = 7
    sem[20:26, 36:44] = CHAIR  # chairs stacked in a corner: no instance ids (a crowd)
    sem[0, 0:4] = 255  # unlabelled
    return sem, inst


def _write_raw(root, split="train", n=3):
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.yaml").write_text(CLASSES_YAML)
    for k in range(n):
        sem, inst = _maps(k)
        stem = f"room_{k:02d}"
        write_png(root / "semantic" / split / f"{stem}.png", sem)
        write_png(root / "instance" / split / f"{stem}.png", inst)
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((H, W, 3), 50 + k, np.uint8)).save(root / "images" / split / f"{stem}.jpg")
    return root


def test_maps_is_a_registered_format():
    assert "maps" in FORMATS


def test_convert_keeps_classes_instances_crowd_and_void(tmp_path):
    raw = _write_raw(tmp_path / "raw")
    out = tmp_path / "data"
    assert main(["convert", "--format", "maps", "--raw", str(raw), "--split", "train", "--out", str(out)]) == 0
    assert validate_split(out) == []
    split = CanonicalSplit(out)
    c = split.classes
    assert c.names == ("floor", "wall", "chair", "lamp") and c.is_thing == (False, False, True, True)
    assert c.ids == (0, 1, 2, 42) and c.category == ("floor", "wall", "furniture", "light") and c.colors[0] == (120, 80, 40)
    assert [r.image_id for r in split.images] == [0, 1, 2] and [r.name for r in split.images] == ["room_00", "room_01", "room_02"]
    for k, rec in enumerate(split.images):
        sem, inst = _maps(k)
        np.testing.assert_array_equal(split.semantic(rec), sem)
        pan = split.panoptic(rec)
        things = [s for s in pan.segments if s.is_thing and not s.iscrowd]
        # one segment per instance id, with its class and exactly its pixels
        assert len(things) == 3
        for iid in (65535, 1000 + k, 7):
            pixels = inst == iid
            seg = next(s for s in things if np.array_equal(pan.segment_ids == s.id, pixels))
            assert seg.class_index == sem[pixels][0]
        crowd = [s for s in pan.segments if s.iscrowd]
        assert len(crowd) == 1 and crowd[0].class_index == CHAIR and crowd[0].area == 6 * 8
        assert np.all(pan.segment_ids[0, :4] == 0)
    inst_json = json.loads((out / "instances.json").read_text())
    assert sum(a["iscrowd"] for a in inst_json["annotations"]) == 3 and len(inst_json["annotations"]) == 12
    assert {a["category_id"] for a in inst_json["annotations"]} == {2, 42}


def test_thing_without_instance_void(tmp_path):
    raw = _write_raw(tmp_path / "raw", n=1)
    convert("maps", raw, "train", tmp_path / "d", options={"thing_without_instance": "void"})
    split = CanonicalSplit(tmp_path / "d")
    rec = split.images[0]
    assert np.all(split.semantic(rec)[20:26, 36:44] == 255)
    assert not any(s.iscrowd for s in split.panoptic(rec).segments)


@pytest.mark.parametrize(
    "defect, pattern",
    [
        ("instance_on_stuff", r"instance/train/room_01\.png: instance ids \[5\] on stuff or void pixels"),
        ("two_classes", r"instance/train/room_01\.png: instance 7 spans classes \['chair', 'lamp'\]"),
        ("class_index", r"semantic/train/room_01\.png: class indices \[9\] outside 0\.\.3"),
        ("size", r"instance/train/room_01\.png: size \(32, 40\) differs from .*semantic/train/room_01\.png"),
        ("missing_instance", r"instance/train/room_01\.png: file not found"),
    ],
)
def test_bad_images_name_the_file_and_values(tmp_path, defect, pattern):
    raw = _write_raw(tmp_path / "raw")
    sem, inst = _maps(1)
    sem_path, inst_path = raw / "semantic/train/room_01.png", raw / "instance/train/room_01.png"
    if defect == "instance_on_stuff":
        inst[0, 20] = 5
    elif defect == "two_classes":
        inst[18, 20] = 7
    elif defect == "class_index":
        sem[5, 5] = 9
    elif defect == "size":
        inst = inst[:, :40]
    if defect == "missing_instance":
        inst_path.unlink()
    else:
        write_png(sem_path, sem)
        write_png(inst_path, np.ascontiguousarray(inst))
    with pytest.raises(DatasetError, match=pattern):
        convert("maps", raw, "train", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    skipped = convert("maps", raw, "train", tmp_path / "out", skip_bad=True)
    assert [s["name"] for s in skipped] == ["room_01"] and len(CanonicalSplit(tmp_path / "out")) == 2


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("- {name: floor, is_thing: false, colour_: [1, 2, 3]}\n", r"classes\.yaml: class 0: unknown keys \['colour_'\]"),
        ("- {name: floor}\n", r"classes\.yaml: class 0 \(floor\): 'is_thing' must be true or false"),
        ("- {name: a, is_thing: false, id: 3}\n- {name: b, is_thing: true, id: 3}\n", r"classes\.yaml: ClassInfo\.ids has duplicates"),
        ("- {name: a, is_thing: false, color: [300, 0, 0]}\n", r"classes\.yaml: class 0 \(a\): color must be \[r, g, b\]"),
        ("{name: a}\n", r"classes\.yaml: expected a non-empty list"),
    ],
)
def test_bad_class_list_names_the_file_and_entry(tmp_path, text, pattern):
    raw = _write_raw(tmp_path / "raw", n=1)
    (raw / "classes.yaml").write_text(text)
    with pytest.raises(DatasetError, match=pattern):
        convert("maps", raw, "train", tmp_path / "out")


def test_cli_errors_are_one_line(tmp_path, capsys):
    raw = _write_raw(tmp_path / "raw", n=1)
    args = ["convert", "--format", "maps", "--raw", str(raw), "--split", "train", "--out", str(tmp_path / "o")]
    assert main(args + ["--params", '{"thing_without_instance": "drop"}']) == 1
    assert main(args + ["--params", '{"instances_dir": "x"}']) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "thing_without_instance must be one of" in err[0] and "unknown options ['instances_dir']" in err[1]


def test_own_model_predictions_import_fuse_and_evaluate(tmp_path):
    """The README's "Your own data" route: a perfect model's outputs give PQ = AP = 1."""
    raw = _write_raw(tmp_path / "raw")
    data = tmp_path / "data"
    convert("maps", raw, "train", data)
    split = CanonicalSplit(data)
    results, sem_dir = [], tmp_path / "semantic"
    for rec in split.images:
        pan = split.panoptic(rec)
        write_png(sem_dir / f"{rec.name}.png", split.semantic(rec))
        for s in pan.segments:
            if s.is_thing and not s.iscrowd:
                rle = mask_utils.encode(np.asfortranarray((pan.segment_ids == s.id).astype(np.uint8)))
                results.append({"image_id": rec.image_id, "category_id": split.classes.ids[s.class_index], "score": 1.0,
                                "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode()}})  # fmt: skip
    (tmp_path / "r.json").write_text(json.dumps(results))
    steps = [
        ["import-predictions", "--data", str(data), "--instances", str(tmp_path / "r.json"), "--semantic", str(sem_dir), "--semantic-format", "png", "--out", str(tmp_path / "c.h5")],
        ["fuse", "--cache", str(tmp_path / "c.h5"), "--method", "kirillov", "--params", '{"stuff_area": 0}', "--out", str(tmp_path / "f")],
        ["evaluate", "--data", str(data), "--fused", str(tmp_path / "f"), "--out", str(tmp_path / "s.json")],
        ["gather", str(tmp_path / "s.json"), "--out", str(tmp_path / "m.json")],
    ]
    for args in steps:
        assert main(args) == 0, args
    m = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert m["pq"] == pytest.approx(1.0) and m["ap_mask"] == pytest.approx(1.0) and m["ap_box"] == pytest.approx(1.0)
