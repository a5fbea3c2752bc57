import json
import shutil

import numpy as np
from PIL import Image

from segfusion.datasets.validate import validate_split
from segfusion.io.images import id2rgb, rgb2id


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst, json.loads((dst / "panoptic.json").read_text())


def _save(split, data):
    (split / "panoptic.json").write_text(json.dumps(data))


def _one(problems, *needles):
    hits = [p for p in problems if all(n in p for n in needles)]
    assert hits, f"no problem mentions {needles}: {problems}"


def test_clean_split_has_no_problem(street_canonical):
    assert validate_split(street_canonical) == []


def test_every_per_image_problem_is_detected(street_canonical, tmp_path):
    split, data = _copy(street_canonical, tmp_path / "s")
    names = [im["name"] for im in data["images"]]
    segs = [a["segments_info"] for a in data["annotations"]]

    # 0: image missing (pairing)
    img0 = (split / data["images"][0]["image_path"]).resolve()
    data["images"][0]["image_path"] = "nowhere/missing.png"
    # 1: wrong area and bbox in the JSON
    segs[1][0]["area"] += 5
    segs[1][1]["bbox"] = [0, 0, 1, 1]
    # 2: duplicate segment id and a segment with no pixel
    segs[2].append(dict(segs[2][0]))
    segs[2].append({"id": 424242, "category_id": 7, "iscrowd": 0, "area": 1, "bbox": [0, 0, 1, 1]})
    # 3: an id drawn in the PNG but not listed; unknown category
    pan3 = split / "panoptic" / f"{names[3]}.png"
    ids = rgb2id(np.array(Image.open(pan3)))
    ids[0, 0] = 31337
    Image.fromarray(id2rgb(ids)).save(pan3)
    segs[3][-1]["category_id"] = 99
    # 4: semantic out of range and disagreeing with the panoptic map
    sem4 = split / "semantic" / f"{names[4]}.png"
    sem = np.array(Image.open(sem4))
    sem[1, 1] = 77
    sem[2, 2] = (sem[2, 2] + 1) % 19
    Image.fromarray(sem).save(sem4)
    # 5: panoptic PNG of the wrong size; a crowd stuff segment
    pan5 = split / "panoptic" / f"{names[5]}.png"
    Image.fromarray(np.array(Image.open(pan5))[:-1]).save(pan5)
    stuff = next(s for s in segs[0] if s["category_id"] == 7)
    stuff["iscrowd"] = 1
    _save(split, data)

    problems = validate_split(split)
    _one(problems, "nowhere/missing.png", "file not found")
    _one(problems, f"{names[1]}.png", f"segment {segs[1][0]['id']} area")
    _one(problems, f"{names[1]}.png", f"segment {segs[1][1]['id']} bbox")
    _one(problems, f"image {names[2]}", "duplicate segment ids", str(segs[2][0]["id"]))
    _one(problems, f"{names[2]}.png", "segment 424242", "no pixel")
    _one(problems, f"{names[3]}.png", "31337", "missing from segments_info")
    _one(problems, f"image {names[3]}", "category 99 outside classes.json")
    _one(problems, f"semantic/{names[4]}.png", "class indices [77]")
    _one(problems, f"semantic/{names[4]}.png", "disagree with the panoptic map")
    _one(problems, f"{names[5]}.png", "sizes differ")
    _one(problems, f"image {names[0]}", "crowd of stuff class 'road'")
    assert len(problems) >= 11
    assert img0.exists()


def test_split_level_problems(street_canonical, tmp_path):
    split, data = _copy(street_canonical, tmp_path / "s")
    data["categories"][0]["isthing"] = 1  # road as a thing: disagrees with classes.json
    data["categories"].append({"id": 500, "name": "extra", "isthing": 0})
    data["images"].append(dict(data["images"][0], id=999))  # duplicate name, no annotation
    data["annotations"].append({"image_id": 12345, "file_name": "x.png", "segments_info": []})
    _save(split, data)
    shutil.copy(split / "semantic" / f"{data['images'][1]['name']}.png", split / "semantic" / "stray.png")
    inst = json.loads((split / "instances.json").read_text())
    inst["annotations"].pop()
    (split / "instances.json").write_text(json.dumps(inst))

    problems = validate_split(split)
    _one(problems, "category 7", "classes.json says ('road', isthing=0)")
    _one(problems, "categories [500] are not in classes.json")
    _one(problems, "image name", "used by 2 images")
    _one(problems, "has no annotation")
    _one(problems, "unknown image id 12345")
    _one(problems, "semantic: PNGs without an image entry", "stray")
    _one(problems, "instances.json", "1 missing")


def test_not_a_split(tmp_path):
    assert validate_split(tmp_path) == [f"{tmp_path}: not a canonical dataset split (missing panoptic.json)"]
