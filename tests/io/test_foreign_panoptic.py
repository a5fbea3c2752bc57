"""``segfusion evaluate`` on other tools' COCO-panoptic predictions (issue 17, item 2).

panopticapi's ``combine_semantic_and_instance_predictions`` writes a JSON (annotations with
``segments_info`` holding only ``id`` and ``category_id``) and a PNG folder named after
it; detectron2 puts the PNGs beside the JSON. Neither writes ``classes.json``, ``area``,
``bbox``, ``iscrowd`` or scores, and their PNG names need not be ours: images are matched
by image id. Evaluating such a folder must give exactly the state of the same panoptic
output written by segfusion itself.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segfusion.cli import main
from segfusion.datasets.canonical import CanonicalSplit
from segfusion.evaluation import evaluate_fused
from segfusion.io.fused import read_fused, write_fused
from segfusion.io.images import id2rgb
from segfusion.types import Panoptic

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _predictions(split):
    """Ground truth with a few segments changed, so that PQ and AP are neither 0 nor 1."""
    out = []
    for k, rec in enumerate(sorted(split.images, key=lambda r: r.image_id)):
        pan = split.panoptic(rec)
        ids = pan.segment_ids.copy()
        things = [s for s in pan.segments if s.is_thing]
        if things and k % 2:
            ids[ids == things[0].id] = 0  # a missed instance
        out.append((rec, ids, {s.id: s for s in pan.segments}))
    return out


def _write_foreign(split, root, layout):
    """The predictions as another tool writes them; returns the JSON path."""
    stem = "panoptic_val_pred"
    png_dir = root / stem if layout == "panopticapi" else root
    png_dir.mkdir(parents=True, exist_ok=True)
    annotations = []
    for rec, ids, segs in _predictions(split):
        new = np.where(ids > 0, ids * 7 + 1000, 0)  # other segment ids than ours
        file_name = f"frame_{rec.image_id:06d}.png"  # other file names than ours
        Image.fromarray(id2rgb(new)).save(png_dir / file_name)
        present = set(np.unique(ids).tolist()) - {0}
        infos = [{"id": int(i) * 7 + 1000, "category_id": split.classes.ids[segs[i].class_index]} for i in sorted(present)]
        annotations.append({"image_id": rec.image_id, "file_name": file_name, "segments_info": infos})
    path = root / (f"{stem}.json" if layout == "panopticapi" else "predictions.json")
    path.write_text(json.dumps({"annotations": annotations, "categories": split.classes.coco_categories()}))
    return path


def _write_ours(split, out):
    items = []
    for rec, ids, segs in _predictions(split):
        info = {i: (segs[i].class_index, segs[i].is_thing, False, 1.0) for i in set(np.unique(ids).tolist()) - {0}}  # predictions: no crowd
        items.append((rec.name, rec.image_id, Panoptic.from_segment_map(ids, info)))
    write_fused(out, split.classes, items, meta={})


@pytest.mark.parametrize("layout", ["panopticapi", "detectron2"])
def test_foreign_folder_evaluates_like_our_own_output(street_canonical, tmp_path, layout):
    split = CanonicalSplit(street_canonical)
    foreign = _write_foreign(split, tmp_path / "foreign", layout)
    _write_ours(split, tmp_path / "ours")
    theirs = evaluate_fused(street_canonical, tmp_path / "foreign", None, {})
    ours = evaluate_fused(street_canonical, tmp_path / "ours", None, {})
    assert theirs == ours
    assert theirs["n_images"] == len(split.images)
    # area and bbox measured on the PNG, iscrowd and score defaulted
    for (_, i, p), (_, j, q) in zip(read_fused(foreign, classes=split.classes), read_fused(tmp_path / "ours"), strict=True):
        assert i == j and [(s.area, s.bbox, s.class_index, s.iscrowd, s.score) for s in p.segments] == [(s.area, s.bbox, s.class_index, s.iscrowd, s.score) for s in q.segments]
    out = tmp_path / "state.json"
    assert main(["evaluate", "--data", str(street_canonical), "--fused", str(foreign.parent if layout == "panopticapi" else foreign), "--out", str(out)]) == 0
    assert main(["gather", str(out), "--out", str(tmp_path / "m.json")]) == 0
    m = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert 0.3 < m["pq"] < 1.0 and 0 < m["ap_mask"] < 1.0


def _edit(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "defect, pattern",
    [
        ("category", r"panoptic_val_pred\.json: image \d+ \(frame_\d+\.png\): segment \d+ has category 4242 outside the class list"),
        ("no_pixel", r"frame_\d+\.png: segment 99999 of panoptic_val_pred\.json \(image \d+\) has no pixel in the PNG"),
        ("unlisted", r"frame_\d+\.png: segment ids \[\d+\] in image 'frame_\d+' have no segment info"),
        ("no_id", r"panoptic_val_pred\.json: image \d+ \(frame_\d+\.png\): segment 0 of segments_info lacks id or category_id"),
        ("image", r"prediction for image id 777777 \(frame_\d+\), which is not an image of .*panoptic\.json"),
        ("duplicate", r"panoptic_val_pred\.json: image \d+ \(frame_\d+\.png\): segment ids \[\d+\] are listed twice"),
    ],
)
def test_bad_foreign_predictions_name_the_file_and_segment(street_canonical, tmp_path, defect, pattern, capsys):
    split = CanonicalSplit(street_canonical)
    path = _write_foreign(split, tmp_path / "f", "panopticapi")
    first = lambda d: d["annotations"][0]  # noqa: E731
    edits = {
        "category": lambda d: first(d)["segments_info"][0].update(category_id=4242),
        "no_pixel": lambda d: first(d)["segments_info"].append({"id": 99999, "category_id": split.classes.ids[0]}),
        "unlisted": lambda d: first(d)["segments_info"].pop(0),
        "no_id": lambda d: first(d)["segments_info"][0].pop("id"),
        "image": lambda d: first(d).update(image_id=777777),
        "duplicate": lambda d: first(d)["segments_info"].append(dict(first(d)["segments_info"][0])),
    }
    _edit(path, edits[defect])
    with pytest.raises(ValueError, match=pattern):
        evaluate_fused(street_canonical, tmp_path / "f", None, {})
    assert main(["evaluate", "--data", str(street_canonical), "--fused", str(tmp_path / "f"), "--out", str(tmp_path / "s.json")]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line or "Traceback" in line]
    assert len(err) == 1 and err[0].startswith("segfusion evaluate: error:") and not (tmp_path / "s.json").exists()


def test_classes_json_that_disagrees_with_the_data_is_refused(street_canonical, tmp_path):
    split = CanonicalSplit(street_canonical)
    _write_ours(split, tmp_path / "ours")
    _edit(tmp_path / "ours" / "classes.json", lambda d: d.update(ids=[i + 1 for i in d["ids"]]))
    with pytest.raises(ValueError, match=r"classes\.json: classes .* differ from the ground truth's"):
        evaluate_fused(street_canonical, tmp_path / "ours", None, {})
