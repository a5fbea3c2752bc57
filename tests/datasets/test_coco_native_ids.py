"""Native ids end to end, on a COCO layout built here from numpy arrays (issue 17, items 1 and 4).

The fixture has large, non-contiguous image ids whose order differs from the file names'
order, overlapping person instances (the panoptic PNG shows only the visible part of the
one behind, its instance annotation is amodal), a crowd region, annotation boxes that are
not the visible masks' boxes, and an image without detections. The pipeline runs through
the CLI: convert -> import-predictions (a COCO results file with the original ids) -> fuse
-> evaluate -> gather. The outputs are then checked with the reference tools' logic on the
*original* files: panopticapi's pq_compute rules (re-implemented below from its source, as
panopticapi is not on PyPI) against the original panoptic JSON and PNGs, and pycocotools'
COCOeval run directly on the original instances JSON.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segfusion.cli import main
from segfusion.datasets.canonical import CanonicalSplit
from segfusion.datasets.validate import validate_split
from segfusion.inference.cache import CacheReader
from segfusion.io.images import id2rgb, rgb2id
from segfusion.metrics import InstanceAP
from segfusion.metrics.instance import STAT_KEYS

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools, numpy 2

H, W = 72, 96
CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1, "supercategory": "person"},
    {"id": 3, "name": "car", "isthing": 1, "supercategory": "vehicle"},
    {"id": 149, "name": "road", "isthing": 0, "supercategory": "ground"},
    {"id": 184, "name": "tree", "isthing": 0, "supercategory": "plant"},
]
# (image id, file stem): ids large and non-contiguous, and not in the order of the names
IMAGES = [(397133, "a_street"), (139, "b_park"), (1000000007, "c_square"), (52, "d_empty_road")]
NO_DETECTIONS = 52


def _rect(y0, y1, x0, x1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def _rle(mask, compressed=True):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    if compressed:
        return {"size": [H, W], "counts": rle["counts"].decode("ascii")}
    flat = mask.ravel(order="F").astype(np.int8)  # uncompressed COCO RLE: runs down the columns
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [2]])) != 0)
    return {"size": [H, W], "counts": np.diff(np.concatenate([[0], change])).tolist()}


def _scene(k):
    """Masks of image k: front person A, person B behind it (amodal), a car, a crowd of cars."""
    s = 3 * k
    return {
        "A": _rect(6 + s % 5, 26 + s % 5, 10 + s, 20 + s),
        "B": _rect(4, 44, 16 + s, 46 + s),  # overlaps A; visible part is B minus A; medium (> 32²)
        "car": _rect(50, 60, 50, 70 - k),
        "crowd": _rect(52, 66, 2, 14),
    }


def _write_raw(root):
    """Raw COCO layout: panoptic JSON + PNGs, images, and an instances JSON with overlaps and crowd."""
    for d in ("val", "annotations/panoptic_val"):
        (root / d).mkdir(parents=True)
    images, pan_anns, inst_anns = [], [], []
    ann_id = 900001
    for k, (image_id, stem) in enumerate(IMAGES):
        m = _scene(k)
        ids = np.full((H, W), 10, np.int64)  # tree
        ids[36:] = 11  # road
        ids[m["crowd"]] = 40
        ids[m["car"]] = 31
        ids[m["B"]] = 22
        ids[m["A"]] = 21  # A in front: B's visible part is B minus A
        ids[0, :3] = 0  # a little void
        Image.fromarray(id2rgb(ids)).save(root / "annotations/panoptic_val" / f"{stem}.png")
        Image.fromarray(np.full((H, W, 3), 30 * k, np.uint8)).save(root / "val" / f"{stem}.jpg")
        images.append({"id": image_id, "file_name": f"{stem}.jpg", "height": H, "width": W})
        pan_anns.append({"image_id": image_id, "file_name": f"{stem}.png", "segments_info": [
            {"id": 10, "category_id": 184}, {"id": 11, "category_id": 149},
            {"id": 21, "category_id": 1, "iscrowd": 0}, {"id": 22, "category_id": 1, "iscrowd": 0},
            {"id": 31, "category_id": 3, "iscrowd": 0}, {"id": 40, "category_id": 3, "iscrowd": 1},
        ]})  # fmt: skip
        a_box = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(m["A"].astype(np.uint8)))).tolist()
        y0, x0 = np.argwhere(m["A"])[0]
        poly = [float(x0), float(y0), a_box[0] + a_box[2], float(y0), a_box[0] + a_box[2], a_box[1] + a_box[3], float(x0), a_box[1] + a_box[3]]
        for name, seg, crowd, bbox, area in (
            ("A", [poly], 0, [a - 0.25 for a in a_box[:2]] + [a + 0.5 for a in a_box[2:]], a_box[2] * a_box[3] - 0.5),
            ("B", _rle(m["B"]), 0, None, None),  # amodal: the annotation box and area are B's full rectangle
            ("car", _rle(m["car"]), 0, None, None),
            ("crowd", _rle(m["crowd"], compressed=False), 1, None, None),
        ):
            rle = mask_utils.encode(np.asfortranarray(m[name].astype(np.uint8)))
            inst_anns.append({
                "id": ann_id, "image_id": image_id, "category_id": 1 if name in "AB" else 3, "segmentation": seg,
                "area": float(mask_utils.area(rle)) if area is None else area,
                "bbox": mask_utils.toBbox(rle).tolist() if bbox is None else bbox, "iscrowd": crowd,
            })  # fmt: skip
            ann_id += 7
    (root / "annotations/panoptic_val.json").write_text(json.dumps({"images": images, "annotations": pan_anns, "categories": CATEGORIES}))
    things = [c for c in CATEGORIES if c["isthing"]]
    (root / "annotations/instances_val.json").write_text(json.dumps({"images": images, "annotations": inst_anns, "categories": things}))


def _results():
    """COCO results with the original image ids: near-misses, an amodal person B, a false
    positive, a detection on the crowd; none for image 52. Scores and boxes exact in float32."""
    out = []
    for k, (image_id, _) in enumerate(IMAGES):
        if image_id == NO_DETECTIONS:
            continue
        m = _scene(k)
        dets = [
            (1, np.roll(m["A"], 1, axis=1), 0.875),
            (1, m["B"], 0.75),
            (3, np.roll(m["car"], k, axis=0), 0.625),
            (3, m["crowd"] & _rect(52, 66, 2, 8), 0.6875),
            (1, _rect(0, 6, 70, 82), 0.5625),
        ]
        for cat, mask, score in dets:
            rle = _rle(mask)
            out.append({"image_id": image_id, "category_id": cat, "segmentation": rle, "score": score,
                        "bbox": mask_utils.toBbox({**rle, "counts": rle["counts"].encode()}).tolist()})  # fmt: skip
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The whole CLI pipeline on the fixture; returns its paths."""
    tmp = tmp_path_factory.mktemp("native")
    raw, data = tmp / "raw", tmp / "data" / "val"
    _write_raw(raw)
    params = json.dumps({"annotation_json": "annotations/panoptic_val.json", "instances_json": "annotations/instances_val.json"})
    assert main(["convert", "--format", "coco_panoptic", "--raw", str(raw), "--split", "val", "--out", str(data), "--params", params]) == 0
    split = CanonicalSplit(data)
    (tmp / "results.json").write_text(json.dumps(_results()))
    sem = tmp / "semantic"
    sem.mkdir()
    for rec in split.images:
        Image.fromarray(split.semantic(rec)).save(sem / f"{rec.name}.png")
    paths = {"raw": raw, "data": data, "results": tmp / "results.json", "cache": tmp / "c.h5", "fused": tmp / "fused", "state": tmp / "s.json", "metrics": tmp / "m.json"}
    assert main(["import-predictions", "--data", str(data), "--instances", str(paths["results"]), "--semantic", str(sem), "--semantic-format", "png", "--out", str(paths["cache"])]) == 0
    assert main(["fuse", "--cache", str(paths["cache"]), "--method", "kirillov", "--params", '{"stuff_area": 0}', "--out", str(paths["fused"])]) == 0
    assert main(["evaluate", "--data", str(data), "--fused", str(paths["fused"]), "--cache", str(paths["cache"]), "--out", str(paths["state"])]) == 0
    assert main(["gather", str(paths["state"]), "--out", str(paths["metrics"])]) == 0
    return paths


def test_canonical_split_keeps_ids_file_names_and_instance_annotations(run):
    original = json.loads((run["raw"] / "annotations/panoptic_val.json").read_text())
    canonical = json.loads((run["data"] / "panoptic.json").read_text())
    key = lambda im: (im["id"], im["file_name"], im["height"], im["width"])  # noqa: E731
    assert sorted(map(key, canonical["images"])) == sorted(map(key, original["images"]))
    assert {a["image_id"] for a in canonical["annotations"]} == {i for i, _ in IMAGES}
    inst = json.loads((run["data"] / "instances.json").read_text())
    given = json.loads((run["raw"] / "annotations/instances_val.json").read_text())
    by_id = lambda anns: sorted(anns, key=lambda a: a["id"])  # noqa: E731
    assert by_id(inst["annotations"]) == by_id(given["annotations"])  # overlaps, crowd, boxes as given
    assert inst["info"]["instances"] == "as-given" and validate_split(run["data"]) == []


def test_coco_results_with_original_ids_import_unchanged(run):
    results = json.loads(run["results"].read_text())
    with CacheReader(run["cache"]) as r:
        assert sorted(r.image_ids) == sorted(i for i, _ in IMAGES)
        counts = {i: len(r.read_detections(n).instances) for n, i in zip(r.names, r.image_ids)}
    assert counts == {i: sum(e["image_id"] == i for e in results) for i, _ in IMAGES}
    assert counts[NO_DETECTIONS] == 0 and sum(counts.values()) == len(results) == 15


def _pq_compute(gt_json, gt_dir, pred_json, pred_dir):
    """panopticapi's pq_compute (pq_compute_single_core + PQStat.pq_average), re-implemented
    from its source: matching by image_id, IoU > 0.5, void and crowd handling."""
    offset = 256**3
    gt, pred = json.loads(gt_json.read_text()), json.loads(pred_json.read_text())
    cats = {c["id"]: c for c in gt["categories"]}
    pred_by_image = {a["image_id"]: a for a in pred["annotations"]}
    stat = {c: [0.0, 0, 0, 0] for c in cats}  # iou, tp, fp, fn
    for gt_ann in gt["annotations"]:
        pred_ann = pred_by_image[gt_ann["image_id"]]  # KeyError = "no prediction for the image"
        pan_gt = rgb2id(np.array(Image.open(gt_dir / gt_ann["file_name"]).convert("RGB"))).astype(np.uint64)
        pan_pred = rgb2id(np.array(Image.open(pred_dir / pred_ann["file_name"]).convert("RGB"))).astype(np.uint64)
        gt_segms = {s["id"]: dict(s) for s in gt_ann["segments_info"]}
        pred_segms = {s["id"]: dict(s) for s in pred_ann["segments_info"]}
        for label, cnt in zip(*np.unique(pan_pred, return_counts=True)):
            if label != 0:
                pred_segms[int(label)]["area"] = int(cnt)
        for label, cnt in zip(*np.unique(pan_gt, return_counts=True)):
            if label != 0:
                gt_segms[int(label)]["area"] = int(cnt)
        joint = pan_gt * offset + pan_pred
        inter = {(int(v // offset), int(v % offset)): int(c) for v, c in zip(*np.unique(joint, return_counts=True))}
        gt_matched, pred_matched = set(), set()
        for (g, p), n in inter.items():
            if g not in gt_segms or p not in pred_segms or gt_segms[g].get("iscrowd", 0) == 1:
                continue
            if gt_segms[g]["category_id"] != pred_segms[p]["category_id"]:
                continue
            union = pred_segms[p]["area"] + gt_segms[g]["area"] - n - inter.get((0, p), 0)
            if n / union > 0.5:
                stat[gt_segms[g]["category_id"]][0] += n / union
                stat[gt_segms[g]["category_id"]][1] += 1
                gt_matched.add(g)
                pred_matched.add(p)
        crowd = {}
        for g, s in gt_segms.items():
            if g in gt_matched:
                continue
            if s.get("iscrowd", 0) == 1:
                crowd[s["category_id"]] = g
                continue
            stat[s["category_id"]][3] += 1
        for p, s in pred_segms.items():
            if p in pred_matched:
                continue
            n = inter.get((0, p), 0)
            if s["category_id"] in crowd:
                n += inter.get((crowd[s["category_id"]], p), 0)
            if n / s["area"] > 0.5:
                continue
            stat[s["category_id"]][2] += 1

    def average(isthing):
        pqs = []
        for c, (iou, tp, fp, fn) in stat.items():
            if isthing is not None and cats[c]["isthing"] != isthing:
                continue
            if tp + fp + fn:
                pqs.append(iou / (tp + 0.5 * fp + 0.5 * fn))
        return sum(pqs) / len(pqs)

    return average(None), average(1), average(0)


def test_fused_output_evaluates_against_the_original_ground_truth(run):
    gt_json = run["raw"] / "annotations/panoptic_val.json"
    fused = json.loads((run["fused"] / "panoptic.json").read_text())
    assert sorted(a["image_id"] for a in fused["annotations"]) == sorted(i for i, _ in IMAGES)
    pq, pq_th, pq_st = _pq_compute(gt_json, run["raw"] / "annotations/panoptic_val", run["fused"] / "panoptic.json", run["fused"] / "panoptic")
    m = json.loads(run["metrics"].read_text())["metrics"]
    assert 0.2 < pq < 0.95 and pq_th < pq_st
    assert (m["pq"], m["pq_things"], m["pq_stuff"]) == pytest.approx((pq, pq_th, pq_st), abs=1e-12)


def test_per_image_metrics_name_the_original_ids(run):
    rows = json.loads(run["metrics"].read_text())["details"]["per_image"]
    assert {r["image"]: r["image_id"] for r in rows} == {stem: i for i, stem in IMAGES}


def _pycocotools(gt_file, results):
    """The 12 COCOeval stats of bbox and segm run directly on files (segm without bbox, as detectron2)."""
    out = {}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_file))
        for iou_type, suffix, drop in (("bbox", "_box", "segmentation"), ("segm", "_mask", "bbox")):
            dts = [{k: v for k, v in d.items() if k != drop} for d in results]
            ev = COCOeval(coco_gt, coco_gt.loadRes(dts), iouType=iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            out.update({key + suffix: float(v) for key, v in zip(STAT_KEYS, ev.stats)})
    return out


def _assert_same(ours, expected):
    for key, value in expected.items():
        if value < 0:
            assert ours[key] is None, key
        else:
            assert ours[key] == pytest.approx(value, abs=1e-9), key


def test_ap_equals_pycocotools_on_the_original_instance_annotations(run):
    gt_file = run["raw"] / "annotations/instances_val.json"
    details = json.loads(run["metrics"].read_text())["details"]
    fused_results = json.loads((run["fused"] / "instances.json").read_text())
    after = _pycocotools(gt_file, fused_results)
    before = _pycocotools(gt_file, json.loads(run["results"].read_text()))
    _assert_same(details["instance"], after)
    _assert_same(details["instance_before_fusion"], before)
    assert set(STAT_KEYS) <= {k[: -len("_box")] for k in details["instance"] if k.endswith("_box")}
    assert 0.1 < before["ap_mask"] < 0.99 and before["ar100_box"] > 0 and before["apm_mask"] > 0 and before["aps_mask"] > 0
    assert before != after  # fusion cuts the amodal person B down to its free pixels


def test_ap_on_the_panoptic_map_is_not_pycocotools_on_overlapping_instances(run):
    """The old protocol (ground truth rebuilt from the non-overlapping panoptic map) differs:
    the reason AP now reads instances.json as given."""
    split = CanonicalSplit(run["data"])
    results = json.loads(run["results"].read_text())
    old = InstanceAP(split.classes, native_ids=True)
    index = split.classes.index_of_id()
    for rec in split.images:
        old.add_ground_truth(rec.name, split.panoptic(rec), coco_id=rec.image_id)
        mine = [e for e in results if e["image_id"] == rec.image_id]
        boxes = [[e["bbox"][0], e["bbox"][1], e["bbox"][0] + e["bbox"][2], e["bbox"][1] + e["bbox"][3]] for e in mine]
        old.add_detections(rec.name, [index[e["category_id"]] for e in mine], [e["score"] for e in mine], np.reshape(boxes, (-1, 4)), [e["segmentation"] for e in mine])
    expected = _pycocotools(run["raw"] / "annotations/instances_val.json", results)
    got = old.result()
    assert any(abs(got[k] - expected[k]) > 1e-3 for k in ("ap_box", "ap_mask", "ap75_box", "ap75_mask"))
