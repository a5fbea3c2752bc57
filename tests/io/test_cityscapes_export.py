"""Cityscapes result export, scored by cityscapesscripts' own evaluators.

Ground truth fed as the prediction must score perfectly (mIoU, nIoU, PQ and AP all 1) and
a degraded export must score lower. The ground truth is the ``street_raw`` fixture's
``gtFine`` (train split, 6 images of 64x128) in the real Cityscapes layout; the panoptic
ground truth is made with cityscapesscripts' ``convert2panoptic``.

Two NumPy 2 incompatibilities of cityscapesscripts 2.3 are shimmed here, neither touching
the scoring: NumPy >= 2.4 removed ``np.in1d``, which the instance-level evaluator (void
mask) and the pixel-level evaluator's nIoU still call, so it is aliased to ``np.isin``
(same values; the callers reshape); and ``np.count_nonzero`` now returns NumPy integers,
which the instance-level evaluator's ``writeDict2JSON`` (its matches.json dump) cannot
serialise, so that writer gets a JSON default for NumPy scalars.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from segfusion.datasets.canonical import CanonicalSplit
from segfusion.io.cityscapes_export import (
    cityscapes_stem,
    export_cityscapes,
    label_id_map,
    parse_formats,
)
from segfusion.io.fused import read_fused, write_fused
from segfusion.io.images import read_image
from segfusion.types import Panoptic

SPLIT = "train"  # the split street_canonical is made from


@pytest.fixture(autouse=True)
def _numpy_in1d(monkeypatch):
    if not hasattr(np, "in1d"):
        monkeypatch.setattr(np, "in1d", np.isin, raising=False)


def _degrade(pan: Panoptic, classes) -> Panoptic:
    """Relabel the largest non-crowd thing of the image as another thing class (score 0.5)."""
    things = [s for s in pan.segments if s.is_thing and not s.iscrowd]
    if not things:
        return pan
    victim = max(things, key=lambda s: s.area)
    thing_idx = classes.thing_indices.tolist()
    new = thing_idx[(thing_idx.index(victim.class_index) + 1) % len(thing_idx)]
    segs = tuple(replace(s, class_index=new, score=0.5) if s.id == victim.id else s for s in pan.segments)
    return Panoptic(pan.segment_ids, segs)


@pytest.fixture(scope="module")
def exports(street_canonical, tmp_path_factory):
    """Fused folders from the canonical ground truth (exact and degraded) and their exports."""
    split = CanonicalSplit(street_canonical)
    root = tmp_path_factory.mktemp("cs_export")
    gt_items = [(rec.name, rec.image_id, split.panoptic(rec)) for rec in split.images]
    write_fused(root / "fused_gt", split.classes, gt_items, meta={})
    write_fused(root / "fused_bad", split.classes, [(n, i, _degrade(p, split.classes)) for n, i, p in gt_items], meta={})
    export_cityscapes(root / "fused_gt", root / "gt", split=SPLIT)
    export_cityscapes(root / "fused_bad", root / "bad", split=SPLIT)
    return {"root": root, "gt": root / "gt", "bad": root / "bad", "split": split, "items": gt_items}


def _gt_files(street_raw: Path, kind: str) -> list[str]:
    return sorted(str(p) for p in (street_raw / "gtFine" / SPLIT).glob(f"*/*_gtFine_{kind}.png"))


def _pixel_level(street_raw: Path, results: Path) -> dict:
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev

    args = copy.copy(ev.args)
    args.predictionPath, args.predictionWalk = str(results), None
    args.quiet, args.JSONOutput, args.evalPixelAccuracy, args.colorized = True, False, False, False
    args.evalInstLevelScore = True
    gts = _gt_files(street_raw, "labelIds")
    preds = [ev.getPrediction(args, gt) for gt in gts]
    assert len(set(preds)) == len(gts) == 6
    return ev.evaluateImgLists(preds, gts, args)


def _write_json_numpy(data, path: str) -> None:
    """cityscapesscripts' writeDict2JSON, also serialising NumPy scalars."""
    with open(path, "w") as fh:
        json.dump(data, fh, default=lambda o: o.item() if isinstance(o, np.generic) else o.__dict__, sort_keys=True)


def _instance_level(street_raw: Path, results: Path, work: Path, monkeypatch) -> dict:
    from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as ev

    monkeypatch.setattr(ev, "writeDict2JSON", _write_json_numpy)
    work.mkdir()
    monkeypatch.chdir(work)  # the evaluator writes matches.json into the working directory
    monkeypatch.setenv("CITYSCAPES_RESULTS", str(results))
    args = copy.copy(ev.args)
    args.predictionPath, args.predictionWalk = None, None
    args.gtInstancesFile = str(work / "gtInstances.json")  # default: inside site-packages
    args.quiet, args.JSONOutput, args.csv, args.colorized = True, False, False, False
    gts = _gt_files(street_raw, "instanceIds")
    preds = [ev.getPrediction(gt, args) for gt in gts]
    assert [Path(p).name for p in preds] == [Path(g).name.replace("_gtFine_instanceIds.png", ".txt") for g in gts]
    return ev.evaluateImgLists(preds, gts, args)


@pytest.fixture(scope="module")
def panoptic_gt(street_raw, tmp_path_factory) -> tuple[Path, Path]:
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    out = tmp_path_factory.mktemp("cs_panoptic_gt")
    convert2panoptic(cityscapesPath=str(street_raw / "gtFine"), outputFolder=str(out), setNames=[SPLIT])
    return out / f"cityscapes_panoptic_{SPLIT}.json", out / f"cityscapes_panoptic_{SPLIT}"


def _panoptic(panoptic_gt, results: Path, result_file: Path) -> dict:
    from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic

    gt_json, gt_folder = panoptic_gt
    pred_json = results / f"cityscapes_panoptic_{SPLIT}.json"
    return evaluatePanoptic(str(gt_json), str(gt_folder), str(pred_json), str(pred_json.with_suffix("")), str(result_file))


# ------------------------------------------------------------------------------ official evaluators
def test_pixel_level_evaluator_scores_ground_truth_perfect(exports, street_raw, capsys):
    gt = _pixel_level(street_raw, exports["gt"] / "semantic")
    bad = _pixel_level(street_raw, exports["bad"] / "semantic")
    capsys.readouterr()
    assert gt["averageScoreClasses"] == 1.0
    assert gt["averageScoreInstClasses"] == 1.0  # nIoU
    assert gt["averageScoreCategories"] == 1.0
    scored = [k for k, v in gt["classScores"].items() if not np.isnan(v)]
    assert {"road", "car", "person"} <= set(scored) and len(scored) >= 6
    assert 0.3 < bad["averageScoreClasses"] < 0.99
    assert bad["averageScoreInstClasses"] < 0.99


def test_panoptic_evaluator_scores_ground_truth_perfect(exports, panoptic_gt, tmp_path, capsys):
    gt = _panoptic(panoptic_gt, exports["gt"] / "panoptic", tmp_path / "gt.json")
    bad = _panoptic(panoptic_gt, exports["bad"] / "panoptic", tmp_path / "bad.json")
    capsys.readouterr()
    for group in ("All", "Things", "Stuff"):
        assert gt[group]["pq"] == 1.0 and gt[group]["sq"] == 1.0 and gt[group]["rq"] == 1.0, group
    assert gt["Things"]["n"] >= 3 and gt["Stuff"]["n"] >= 3
    assert bad["Stuff"]["pq"] == 1.0  # only things were degraded
    assert 0.3 < bad["Things"]["pq"] < 0.99 and bad["All"]["pq"] < 0.99


def test_instance_evaluator_scores_ground_truth_perfect(exports, street_raw, tmp_path, monkeypatch, capsys):
    gt = _instance_level(street_raw, exports["gt"] / "instance", tmp_path / "gt", monkeypatch)
    bad = _instance_level(street_raw, exports["bad"] / "instance", tmp_path / "bad", monkeypatch)
    capsys.readouterr()
    # Instances under the evaluator's minimum region size (100 px) are left out of the
    # ground truth and predictions on them are not false positives, so the score is exact.
    assert gt["averages"]["allAp"] == 1.0 and gt["averages"]["allAp50%"] == 1.0
    evaluated = [c for c, v in gt["averages"]["classes"].items() if not np.isnan(v["ap"])]
    assert len(evaluated) >= 2
    assert bad["averages"]["allAp"] < 0.99


# ------------------------------------------------------------------------------ file contents
def test_export_contents_match_the_fused_folder(exports, street_raw):
    gt, classes = exports["gt"], exports["split"].classes
    items = exports["items"]
    assert json.loads((gt / "export.json").read_text())["n_images"] == len(items) == 6
    data = json.loads((gt / "panoptic" / f"cityscapes_panoptic_{SPLIT}.json").read_text())
    assert [a["image_id"] for a in data["annotations"]] == [n for n, _, _ in items]
    assert {c["id"] for c in data["categories"]} == set(classes.ids)
    n_lines = 0
    for name, _, pan in items:
        city = name.split("_")[0]
        # labelIds agree with gtFine wherever the ground truth is evaluated; void -> 0
        sem = read_image(gt / "semantic" / f"{name}_labelIds.png")
        raw = read_image(street_raw / "gtFine" / SPLIT / city / f"{name}_gtFine_labelIds.png")
        evaluated = np.isin(raw, classes.ids)
        assert np.array_equal(sem[evaluated], raw[evaluated]) and (sem[~evaluated] == 0).all()
        assert np.array_equal(sem, label_id_map(pan, classes))
        # one instance line per non-crowd thing segment; crowd segments are not exported
        lines = (gt / "instance" / f"{name}.txt").read_text().splitlines()
        things = [s for s in pan.segments if s.is_thing and not s.iscrowd]
        assert len(lines) == len(things)
        for line, s in zip(lines, things, strict=True):
            rel, label_id, score = line.split(" ")
            assert int(label_id) == classes.ids[s.class_index] and float(score) == 1.0
            mask = read_image(gt / "instance" / rel)
            assert np.array_equal(mask > 0, pan.segment_ids == s.id)
        n_lines += len(lines)
    assert any(s.iscrowd for _, _, p in items for s in p.segments)  # crowd is exercised
    assert n_lines > 6


def test_exported_instance_scores_are_the_segment_scores(exports, tmp_path):
    """Distinct scores (not the ground truth's 1.0) reach the instance lines, line by line."""
    classes = exports["split"].classes
    n = sum(s.is_thing for _, _, pan in exports["items"] for s in pan.segments)
    pool = [round(float(v), 4) for v in np.linspace(0.95, 0.05, n)]
    scored = []
    for name, image_id, pan in exports["items"]:
        segs = tuple(replace(s, score=pool.pop()) if s.is_thing else s for s in pan.segments)
        scored.append((name, image_id, Panoptic(pan.segment_ids, segs)))
    write_fused(tmp_path / "fused", classes, scored, meta={})
    export_cityscapes(tmp_path / "fused", tmp_path / "out", formats=("instance",), split=SPLIT)
    scores = []
    for name, _, pan in scored:
        things = [s for s in pan.segments if s.is_thing and not s.iscrowd]
        lines = (tmp_path / "out" / "instance" / f"{name}.txt").read_text().splitlines()
        assert len(lines) == len(things)
        for line, s in zip(lines, things, strict=True):
            rel, label_id, score = line.split(" ")
            assert int(label_id) == classes.ids[s.class_index]
            assert float(score) == s.score and score == f"{s.score:.6f}"
            assert np.array_equal(read_image(tmp_path / "out" / "instance" / rel) > 0, pan.segment_ids == s.id)
            scores.append(float(score))
    assert len(scores) > 6 and len(set(scores)) == len(scores) and max(scores) < 1.0


def test_cli_formats_subset_and_errors(exports, tmp_path, capsys):
    from segfusion.cli import main

    out = tmp_path / "only_semantic"
    main(["export-cityscapes", "--fused", str(exports["root"] / "fused_gt"), "--out", str(out), "--formats", "semantic"])
    assert "exported 6 images" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "semantic"]
    assert len(list((out / "semantic").glob("*_labelIds.png"))) == 6

    with pytest.raises(ValueError, match="unknown Cityscapes export format"):
        parse_formats("semantic,depth")
    assert parse_formats("instance, semantic") == ("semantic", "instance")
    assert cityscapes_stem("synthtown_000001_000019_leftImg8bit") == "synthtown_000001_000019"
    with pytest.raises(ValueError, match="Cityscapes stem"):
        cityscapes_stem("image_12")

    # a fused folder with non-Cityscapes names is refused, and nothing is written
    name, image_id, pan = next(iter(read_fused(exports["root"] / "fused_gt")))
    write_fused(tmp_path / "renamed", exports["split"].classes, [("frame1", image_id, pan)], meta={})
    with pytest.raises(ValueError, match="frame1"):
        export_cityscapes(tmp_path / "renamed", tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_class_check_and_panoptic_consistency():
    from segfusion.datasets.cityscapes import cityscapes_classes
    from segfusion.io.cityscapes_export import check_cityscapes_classes, consistent_panoptic
    from segfusion.types import ClassInfo, Segment

    cs = cityscapes_classes()
    check_cityscapes_classes(cs)
    coco_like = ClassInfo.from_dict({**cs.to_dict(), "ids": [i + 100 for i in cs.ids]})
    with pytest.raises(ValueError, match="not Cityscapes classes"):
        check_cityscapes_classes(coco_like)
    flipped = ClassInfo.from_dict({**cs.to_dict(), "is_thing": [not t for t in cs.is_thing]})
    with pytest.raises(ValueError, match="hasInstances"):
        check_cityscapes_classes(flipped)

    # id 3 in the map has no segment (-> void); segment 9 is listed but absent (-> dropped)
    seg = np.array([[1, 1, 3], [2, 2, 0]], np.int32)
    car = cs.names.index("car")
    segs = (
        Segment(1, 0, False, 2, (0, 0, 2, 1)),
        Segment(2, car, True, 2, (0, 1, 2, 1), score=0.7),
        Segment(9, car, True, 1, (0, 0, 1, 1)),
    )
    fixed = consistent_panoptic(Panoptic(seg, segs))
    assert fixed.segment_ids.tolist() == [[1, 1, 0], [2, 2, 0]]
    assert [s.id for s in fixed.segments] == [1, 2]
    assert label_id_map(fixed, cs).tolist() == [[7, 7, 0], [26, 26, 0]]  # road, car, void -> 0
