"""Cityscapes via cityscapesscripts' own panoptic export (createPanopticImgs) == via labelIds/instanceIds."""

import contextlib
import io
import json
import shutil
from collections import Counter

import numpy as np
import pytest

from segfusion.datasets.canonical import CanonicalSplit, DatasetError
from segfusion.datasets.registry import convert, prepare


@pytest.fixture(scope="module")
def exported_raw(street_raw, tmp_path_factory):
    """A copy of the street raw data plus gtFine/cityscapes_panoptic_train{,_trainId}.json and PNGs."""
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    raw = tmp_path_factory.mktemp("cs_panoptic") / "raw"
    shutil.copytree(street_raw, raw)
    with contextlib.redirect_stdout(io.StringIO()):
        convert2panoptic(str(raw / "gtFine"), str(raw / "gtFine"), useTrainId=False, setNames=["train"])
        convert2panoptic(str(raw / "gtFine"), str(raw / "gtFine"), useTrainId=True, setNames=["train"])
    return raw


def _segments(split: CanonicalSplit, rec):
    pan = split.panoptic(rec)
    return Counter((s.class_index, s.area, s.bbox, s.iscrowd) for s in pan.segments)


@pytest.mark.parametrize("train_ids", [False, True])
def test_panoptic_export_gives_the_same_canonical_split(exported_raw, street_raw, street_canonical, tmp_path, train_ids):
    assert (exported_raw / "gtFine" / "cityscapes_panoptic_train.json").exists()
    out = tmp_path / "pan"
    convert("cityscapes", exported_raw, "train", out, options={"source": "panoptic", "train_ids": train_ids})
    a, b = CanonicalSplit(street_canonical), CanonicalSplit(out)
    assert a.classes == b.classes and [r.name for r in a.images] == [r.name for r in b.images]
    n_segments = 0
    for ra, rb in zip(a.images, b.images):
        assert ra.image_path.relative_to(street_raw.resolve()) == rb.image_path.relative_to(exported_raw.resolve())
        assert np.array_equal(a.semantic(ra), b.semantic(rb))
        assert _segments(a, ra) == _segments(b, rb)
        n_segments += len(a.panoptic(ra).segments)
    assert n_segments > 6 * 4
    ia = json.loads((street_canonical / "instances.json").read_text())["annotations"]
    ib = json.loads((out / "instances.json").read_text())["annotations"]
    assert sorted((x["category_id"], x["area"]) for x in ia) == sorted((x["category_id"], x["area"]) for x in ib)


def test_panoptic_source_errors(exported_raw, tmp_path):
    with pytest.raises(DatasetError, match="cityscapes_panoptic_val.json: missing"):
        prepare("cityscapes", exported_raw, "val", {"source": "panoptic"})
    with pytest.raises(ValueError, match="source must be 'labels' or 'panoptic'"):
        prepare("cityscapes", exported_raw, "train", {"source": "json"})
    with pytest.raises(ValueError, match="unknown options \\['city'\\]"):
        prepare("cityscapes", exported_raw, "train", {"city": "x"})
    raw = tmp_path / "raw"
    shutil.copytree(exported_raw, raw)
    path = raw / "gtFine" / "cityscapes_panoptic_train.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["segments_info"][0]["category_id"] = 4  # "static": not an evaluated class
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="cityscapes_panoptic_train.json: image .*_leftImg8bit.png: segment .* unknown category id 4"):
        convert("cityscapes", raw, "train", tmp_path / "out", options={"source": "panoptic"})
