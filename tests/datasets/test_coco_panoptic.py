import json

import numpy as np
import pytest
from PIL import Image

from segfusion.datasets.canonical import CanonicalSplit, DatasetError
from segfusion.datasets.coco_panoptic import classes_from_categories, palette
from segfusion.datasets.registry import convert, prepare
from segfusion.datasets.validate import validate_split
from segfusion.io.images import id2rgb

H, W = 24, 32
CATEGORIES = [  # deliberately not sorted by id
    {"id": 187, "name": "sky", "isthing": 0, "supercategory": "sky-other"},
    {"id": 3, "name": "car", "isthing": 1, "supercategory": "vehicle", "color": [0, 0, 142]},
    {"id": 1, "name": "person", "isthing": 1, "supercategory": "person", "color": [220, 20, 60]},
]


def _write_raw(root, split="val", n=3):
    """A COCO-panoptic raw split: n images, each with sky, two cars (one crowd) and a person."""
    (root / split).mkdir(parents=True)
    (root / f"panoptic_{split}").mkdir()
    images, annotations = [], []
    for k in range(n):
        ids = np.full((H, W), 5000 + k, np.int64)  # sky
        ids[2:10, 3:12] = 7001  # car
        ids[12:20, 3:9] = 7002  # car crowd
        ids[5:18, 20:26] = 123456  # person
        ids[0, 0] = 0  # void
        name = f"{k:012d}"
        Image.fromarray(id2rgb(ids)).save(root / f"panoptic_{split}" / f"{name}.png")
        Image.fromarray(np.full((H, W, 3), 40 * k, np.uint8)).save(root / split / f"{name}.jpg")
        images.append({"id": k + 10, "file_name": f"{name}.jpg", "height": H, "width": W})
        annotations.append(
            {
                "image_id": k + 10,
                "file_name": f"{name}.png",
                "segments_info": [
                    {"id": 5000 + k, "category_id": 187, "iscrowd": 0},
                    {"id": 7001, "category_id": 3, "iscrowd": 0},
                    {"id": 7002, "category_id": 3, "iscrowd": 1},
                    {"id": 123456, "category_id": 1, "iscrowd": 0},
                ],
            }
        )
    data = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    (root / f"panoptic_{split}.json").write_text(json.dumps(data))
    return root


def test_classes_sorted_by_id_with_supercategory_for_things():
    classes = classes_from_categories(CATEGORIES, "x.json")
    assert classes.names == ("person", "car", "sky") and classes.ids == (1, 3, 187)
    assert classes.is_thing == (True, True, False)
    assert classes.category == ("person", "vehicle", "sky")  # stuff keeps its own name
    assert classes.colors[0] == (220, 20, 60) and classes.colors[2] == palette(3)[2]
    assert len(set(palette(30))) == 30 and palette(5) == palette(5)


def test_convert_keeps_ids_crowd_and_passes_validation(tmp_path):
    raw = _write_raw(tmp_path / "raw")
    out = tmp_path / "out"
    convert("coco_panoptic", raw, "val", out)
    assert validate_split(out) == []
    split = CanonicalSplit(out)
    assert len(split) == 3 and split.classes.names == ("person", "car", "sky")
    pan = split.panoptic(split.record("000000000001"))
    segs = {s.id: s for s in pan.segments}
    assert set(segs) == {5001, 7001, 7002, 123456}
    assert segs[7002].iscrowd and not segs[7001].iscrowd and segs[7001].class_index == 1
    assert segs[7001].area == 8 * 9 and segs[7001].bbox == (3, 2, 9, 8)
    assert split.semantic(split.images[0])[0, 0] == 255
    inst = json.loads((out / "instances.json").read_text())
    assert sorted({a["category_id"] for a in inst["annotations"]}) == [1, 3]


def test_options_override_paths(tmp_path):
    raw = _write_raw(tmp_path / "raw")
    (raw / "val").rename(raw / "imgs")
    (raw / "annotations").mkdir()
    (raw / "panoptic_val.json").rename(raw / "annotations" / "pan.json")
    (raw / "panoptic_val").rename(raw / "annotations" / "pngs")
    opts = {"images_dir": "imgs", "annotation_json": "annotations/pan.json", "panoptic_dir": "annotations/pngs"}
    convert("coco_panoptic", raw, "val", tmp_path / "out", options=opts)
    assert len(CanonicalSplit(tmp_path / "out")) == 3
    with pytest.raises(ValueError, match="unknown options \\['image_dir'\\]"):
        prepare("coco_panoptic", raw, "val", {"image_dir": "imgs"})


def _edit_json(raw, fn):
    path = raw / "panoptic_val.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_unknown_category_names_json_and_image(tmp_path):
    raw = _write_raw(tmp_path / "raw")
    _edit_json(raw, lambda d: d["annotations"][1]["segments_info"][0].update(category_id=999))
    with pytest.raises(DatasetError, match="panoptic_val.json: image 000000000001.jpg: segment 5001 has unknown category id 999"):
        convert("coco_panoptic", raw, "val", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    skipped = convert("coco_panoptic", raw, "val", tmp_path / "out", skip_bad=True)
    assert [s["name"] for s in skipped] == ["000000000001"] and len(CanonicalSplit(tmp_path / "out")) == 2
    assert "999" in (tmp_path / "out" / "skipped.csv").read_text()


def test_png_id_missing_from_json_names_png(tmp_path):
    raw = _write_raw(tmp_path / "raw")
    _edit_json(raw, lambda d: d["annotations"][2]["segments_info"].pop(3))  # person 123456 unlisted
    with pytest.raises(DatasetError, match="000000000002.png: .*123456"):
        convert("coco_panoptic", raw, "val", tmp_path / "out")


def test_size_mismatch_corrupt_image_and_missing_annotation(tmp_path):
    raw = _write_raw(tmp_path / "raw")
    _edit_json(raw, lambda d: d["images"][0].update(height=H + 1))
    with pytest.raises(DatasetError, match="000000000000.png: size \\(24, 32\\) differs from .*panoptic_val.json \\(25, 32\\)"):
        convert("coco_panoptic", raw, "val", tmp_path / "out")
    raw2 = _write_raw(tmp_path / "raw2")
    (raw2 / "val" / "000000000001.jpg").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="000000000001.jpg: corrupt"):
        convert("coco_panoptic", raw2, "val", tmp_path / "out")
    raw3 = _write_raw(tmp_path / "raw3")
    _edit_json(raw3, lambda d: d["annotations"].pop(0))
    with pytest.raises(DatasetError, match="no annotation for image 000000000000.jpg"):
        convert("coco_panoptic", raw3, "val", tmp_path / "out")


def test_missing_json_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="panoptic_train.json: missing"):
        convert("coco_panoptic", tmp_path, "train", tmp_path / "out")
