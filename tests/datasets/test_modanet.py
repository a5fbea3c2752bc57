import json

import numpy as np
import pytest
from PIL import Image

from segfusion.datasets.canonical import CanonicalSplit, DatasetError
from segfusion.datasets.modanet import MODANET_CATEGORIES, garment_group
from segfusion.datasets.registry import convert, prepare
from segfusion.datasets.validate import validate_split

H, W = 40, 30
CATS = [{"id": i, "name": n, "supercategory": "fashion"} for i, n, _ in MODANET_CATEGORIES]


def _rect(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _write_raw(root, n=3):
    """ModaNet-style raw data: a large top (annotated last), a belt over it, two-part pants."""
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for k in range(n):
        Image.fromarray(np.full((H, W, 3), 30 * k, np.uint8)).save(root / "images" / f"{k:07d}.jpg")
        images.append({"id": k, "file_name": f"{k:07d}.jpg", "height": H, "width": W})
        base = 100 * k
        anns += [
            {"id": base + 1, "image_id": k, "category_id": 2, "segmentation": [_rect(5, 15, 25, 18)], "iscrowd": 0},  # belt
            {"id": base + 2, "image_id": k, "category_id": 9, "segmentation": [_rect(4, 5, 26, 20)], "iscrowd": 0},  # top
            # pants: two polygons (legs) plus a degenerate 2-point polygon, which is skipped
            {"id": base + 3, "image_id": k, "category_id": 8,
             "segmentation": [_rect(6, 22, 13, 38), _rect(17, 22, 24, 38), [1, 1, 2, 2]], "iscrowd": 0},
        ]
    data = {"images": images, "annotations": anns, "categories": CATS}
    (root / "modanet2018_instances_train.json").write_text(json.dumps(data))
    return root


def test_categories_and_groups():
    assert [n for _, n, _ in MODANET_CATEGORIES][:4] == ["bag", "belt", "boots", "footwear"] and len(MODANET_CATEGORIES) == 13
    assert garment_group("dress") == "upper-body" and garment_group("Skirts") == "lower-body"
    assert garment_group("scarf/tie") == garment_group("Scarf & Tie") == "accessory"
    assert garment_group("boots") == "footwear" and garment_group("cape") == "cape"


def test_smaller_instance_on_top_and_background(tmp_path):
    raw = _write_raw(tmp_path / "raw")
    out = tmp_path / "out"
    convert("modanet", raw, "train", out)
    assert validate_split(out) == []
    split = CanonicalSplit(out)
    classes = split.classes
    assert classes.names[0] == "background" and classes.ids[0] == 0 and not classes.is_thing[0]
    assert classes.names[1:] == tuple(n for _, n, _ in MODANET_CATEGORIES) and all(classes.is_thing[1:])
    assert classes.category[classes.names.index("top")] == "upper-body"
    sem = split.semantic(split.images[0])
    belt, top, pants = (classes.names.index(n) for n in ("belt", "top", "pants"))
    # the belt (annotated first, smaller) stays on top of the top (annotated later, larger)
    assert (sem[16, 10], sem[10, 10], sem[30, 8], sem[30, 20]) == (belt, top, pants, pants)
    assert sem[0, 0] == 0 and (sem != 255).all()
    pan = split.panoptic(split.images[0])
    names = sorted(classes.names[s.class_index] for s in pan.segments)
    assert names == ["background", "belt", "pants", "top"]  # one pants instance from two polygons
    top_seg = next(s for s in pan.segments if s.class_index == top)
    assert top_seg.area == 22 * 15 - 20 * 3 and top_seg.bbox == (4, 5, 22, 15)  # polygons fill [x0, x1) x [y0, y1); the belt covers 20 x 3


def test_unlabeled_ignore(tmp_path):
    raw = _write_raw(tmp_path / "raw")
    convert("modanet", raw, "train", tmp_path / "out", options={"unlabeled": "ignore"})
    split = CanonicalSplit(tmp_path / "out")
    assert "background" not in split.classes.names and all(split.classes.is_thing)
    assert split.semantic(split.images[0])[0, 0] == 255
    with pytest.raises(ValueError, match="unlabeled must be one of"):
        prepare("modanet", raw, "train", {"unlabeled": "void"})


def _edit(raw, fn):
    path = raw / "modanet2018_instances_train.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_errors_name_json_image_and_annotation(tmp_path):
    raw = _write_raw(tmp_path / "raw")
    _edit(raw, lambda d: d["annotations"][4].update(category_id=14))
    with pytest.raises(DatasetError, match="modanet2018_instances_train.json: image 0000001.jpg, annotation 102: unknown garment category id 14"):
        convert("modanet", raw, "train", tmp_path / "out")
    skipped = convert("modanet", raw, "train", tmp_path / "out", skip_bad=True)
    assert [s["name"] for s in skipped] == ["0000001"] and len(CanonicalSplit(tmp_path / "out")) == 2

    raw2 = _write_raw(tmp_path / "raw2")
    _edit(raw2, lambda d: d["annotations"][0]["segmentation"][0].append(3))
    with pytest.raises(DatasetError, match="annotation 1: polygon with an odd number of coordinates"):
        convert("modanet", raw2, "train", tmp_path / "out2")


def test_size_mismatch_and_corrupt_image(tmp_path):
    raw = _write_raw(tmp_path / "raw")
    _edit(raw, lambda d: d["images"][2].update(width=W + 3))
    with pytest.raises(DatasetError, match="label size \\(40, 33\\) differs from image .*0000002.jpg size \\(40, 30\\)"):
        convert("modanet", raw, "train", tmp_path / "out")
    raw2 = _write_raw(tmp_path / "raw2")
    (raw2 / "images" / "0000000.jpg").write_bytes(b"\x89PNG broken")
    with pytest.raises(DatasetError, match="0000000.jpg: corrupt"):
        convert("modanet", raw2, "train", tmp_path / "out")
    (raw2 / "images" / "0000000.jpg").unlink()
    with pytest.raises(DatasetError, match="0000000.jpg: file not found"):
        convert("modanet", raw2, "train", tmp_path / "out")
