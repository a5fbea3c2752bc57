"""Benchmark of the fusion methods (`segfusion.fusion.fuse`) against straightforward references.

Setting (Cityscapes-like): one 1024 × 2048 image, 19 classes (11 stuff, 8 things, the
Cityscapes train classes and categories), semantic probabilities at stride 4 (a softmax
of noisy, smoothed logits over a street layout), 100 detections with 28 × 28 box-relative
masks: one per object of ~60 objects plus duplicates (overlapping boxes of the same
object, lower scores) and some false positives; scores spread over [0.05, 1]. One CPU
thread. Timed: from the typed inputs (`Instances`, `SemanticPrediction`, `ClassInfo`) to
the `Panoptic`, upsampling and mask pasting included.

The references implement the same rules the plain way: the full (C, H, W) upsampling with
`resize_bilinear`, one full-image mask per instance, per-class boolean masks, a per-pixel
Python BFS for Costea's region growing. They run once; their outputs are compared with the
fast ones (differing pixels and segments are printed; both should be 0). Wall-clock minimum and
median, and the minimum CPU time (``time.process_time``, robust on a shared machine) are
printed; the speed-up is reference wall time over the fast method's minimum wall time.

    python benchmarks/bench_fusion.py [--repeats 5] [--seed 0] [--no-reference]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import deque  # noqa: E402

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from segfusion.datasets.cityscapes import cityscapes_classes  # noqa: E402  (the one class table)
from segfusion.fusion import FUSION_METHODS, fuse  # noqa: E402
from segfusion.fusion.common import stuff_area_threshold  # noqa: E402
from segfusion.inference.paste import instance_crop  # noqa: E402
from segfusion.resize import resize_bilinear  # noqa: E402
from segfusion.types import ClassInfo, Instances, Panoptic, SemanticPrediction  # noqa: E402

IMAGE_HW = (1024, 2048)
STRIDE = 4
NUM_INSTANCES = 100
MASK_SIZE = 28
TARGET_MS = {"kirillov": 150.0, "seamless": 150.0, "jsis": 150.0, "costea": 300.0}

CITYSCAPES = [
    # name, is_thing, category, labelId
    ("road", False, "flat", 7),
    ("sidewalk", False, "flat", 8),
    ("building", False, "construction", 11),
    ("wall", False, "construction", 12),
    ("fence", False, "construction", 13),
    ("pole", False, "object", 17),
    ("traffic light", False, "object", 19),
    ("traffic sign", False, "object", 20),
    ("vegetation", False, "nature", 21),
    ("terrain", False, "nature", 22),
    ("sky", False, "sky", 23),
    ("person", True, "human", 24),
    ("rider", True, "human", 25),
    ("car", True, "vehicle", 26),
    ("truck", True, "vehicle", 27),
    ("bus", True, "vehicle", 28),
    ("train", True, "vehicle", 31),
    ("motorcycle", True, "vehicle", 32),
    ("bicycle", True, "vehicle", 33),
]



# --------------------------------------------------------------------------- inputs


def make_inputs(seed: int = 0) -> tuple[Instances, SemanticPrediction, ClassInfo]:
    """A synthetic street scene (module docstring)."""
    rng = np.random.default_rng(seed)
    classes = cityscapes_classes()
    name = {n: i for i, n in enumerate(classes.names)}
    height, width = IMAGE_HW
    h, w = height // STRIDE, width // STRIDE
    yy, xx = np.mgrid[0:h, 0:w]
    lab = np.full((h, w), name["building"], np.int64)
    horizon = (0.32 * h + 0.06 * h * np.sin(xx / 37.0) + rng.normal(0, 1.0, (1, w)).cumsum(1) * 0.3).astype(
        int
    )
    lab[yy < horizon] = name["sky"]
    for _ in range(12):  # trees, walls, fences
        cy, cx = rng.uniform(0.25 * h, 0.55 * h), rng.uniform(0, w)
        ry, rx = rng.uniform(5, 30), rng.uniform(10, 60)
        cls = rng.choice([name["vegetation"]] * 3 + [name["wall"], name["fence"]])
        lab[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = cls
    ground = yy > 0.55 * h
    lab[ground] = name["road"]
    side = ground & (np.abs(xx - w / 2) > (0.15 * w + (yy - 0.55 * h) * 1.2))
    lab[side] = name["sidewalk"]
    lab[side & (np.abs(xx - w / 2) > 0.45 * w)] = name["terrain"]
    for _ in range(14):  # poles with signs or lights
        x = int(rng.uniform(0, w - 3))
        top, bottom = int(rng.uniform(0.1, 0.35) * h), int(rng.uniform(0.55, 0.75) * h)
        lab[top:bottom, x : x + 2] = name["pole"]
        sign = name["traffic sign"] if rng.random() < 0.6 else name["traffic light"]
        lab[top : top + 6, max(x - 3, 0) : x + 5] = sign
    # objects
    thing_pool = ["car"] * 10 + ["person"] * 5 + ["bicycle", "rider", "truck", "bus", "motorcycle", "train"]
    objects = []
    for _ in range(60):
        cls = name[thing_pool[rng.integers(len(thing_pool))]]
        if classes.category[cls] == "human":
            bh = np.exp(rng.uniform(np.log(30), np.log(350)))
            bw = bh * rng.uniform(0.3, 0.5)
        else:
            bw = np.exp(rng.uniform(np.log(24), np.log(450)))
            bh = bw * rng.uniform(0.5, 0.8)
        cy = rng.uniform(0.45, 0.95) * height
        cx = rng.uniform(0.0, 1.0) * width
        box = np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
        objects.append((cls, box))
        ey, ex = (yy + 0.5) * STRIDE, (xx + 0.5) * STRIDE
        lab[((ey - cy) / (0.45 * bh)) ** 2 + ((ex - cx) / (0.45 * bw)) ** 2 < 1] = cls
    c = classes.num_classes
    logits = 5.0 * np.eye(c, dtype=np.float32)[lab].transpose(2, 0, 1)
    logits += rng.normal(0, 1.0, logits.shape).astype(np.float32)
    logits = ndimage.gaussian_filter(logits, (0, 1.5, 1.5))
    prob = np.exp(logits - logits.max(0))
    prob /= prob.sum(0)
    semantic = SemanticPrediction(prob.astype(np.float32), IMAGE_HW)

    # detections: one per object, then duplicates and false positives
    boxes, labels, scores = [], [], []
    for k in range(NUM_INSTANCES):
        if k < len(objects):
            cls, box = objects[k]
            jitter, score = 0.05, rng.uniform(0.3, 1.0)
        elif rng.random() < 0.75:
            cls, box = objects[rng.integers(len(objects))]
            jitter, score = 0.2, rng.uniform(0.05, 0.7)
        else:
            cls = name[thing_pool[rng.integers(len(thing_pool))]]
            s = np.exp(rng.uniform(np.log(20), np.log(200)))
            cx, cy = rng.uniform(0, width), rng.uniform(0.3, 1.0) * height
            box = np.array([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2])
            jitter, score = 0.0, rng.uniform(0.05, 0.6)
        size = np.array([box[2] - box[0], box[3] - box[1]] * 2)
        boxes.append(box + rng.normal(0, jitter, 4) * size)
        if rng.random() < 0.1:  # a sibling sub-category (car <-> truck ...)
            siblings = [i for i in classes.thing_indices if classes.category[i] == classes.category[cls]]
            cls = int(rng.choice(siblings))
        labels.append(cls)
        scores.append(score)
    boxes = np.array(boxes, np.float32)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    v = (np.arange(MASK_SIZE) + 0.5) / MASK_SIZE - 0.5
    ellipse = (v[:, None] / 0.42) ** 2 + (v[None, :] / 0.42) ** 2
    masks = 1.0 / (
        1.0 + np.exp(-8.0 * (1.0 - ellipse[None]) + rng.normal(0, 1.0, (NUM_INSTANCES, MASK_SIZE, MASK_SIZE)))
    )
    instances = Instances(
        boxes=boxes,
        scores=np.array(scores),
        labels=np.array(labels),
        image_size=IMAGE_HW,
        mask_prob=masks.astype(np.float32),
    )
    return instances, semantic, classes


# --------------------------------------------------------------------------- references


def _full_mask(instances: Instances, i: int) -> np.ndarray:
    full = np.zeros(instances.image_size, np.float32)
    crop, (y0, x0) = instance_crop(instances, i)
    full[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
    return full


def _order(instances: Instances, threshold: float, inclusive: bool) -> list[int]:
    keep = [
        i
        for i in range(len(instances))
        if (instances.scores[i] >= threshold if inclusive else instances.scores[i] > threshold)
    ]
    return sorted(keep, key=lambda i: -float(instances.scores[i]))  # sorted() is stable


def _panoptic(ids: np.ndarray, info: dict) -> Panoptic:
    """Renumber the ids present to 1..K in creation order."""
    present = [k for k in sorted(info) if (ids == k).any()]
    out = np.zeros_like(ids)
    new_info = {}
    for n, k in enumerate(present, start=1):
        out[ids == k] = n
        new_info[n] = info[k]
    return Panoptic.from_segment_map(out, new_info)


def _stuff_segments(
    ids: np.ndarray, info: dict, label: np.ndarray, classes: ClassInfo, min_area: float
) -> None:
    for c in classes.stuff_indices.tolist():
        pixels = (ids == 0) & (label == c)
        if pixels.sum() > 0 and pixels.sum() >= min_area:
            info[len(info) + 1] = (c, False, False, 1.0)
            ids[pixels] = len(info)


def reference_greedy(instances, semantic, classes, inclusive: bool) -> Panoptic:
    prob = resize_bilinear(semantic.prob, semantic.image_size)
    ids = np.zeros(semantic.image_size, np.int32)
    info: dict = {}
    for i in _order(instances, 0.5, inclusive):
        mask = _full_mask(instances, i) >= 0.5
        area = mask.sum()
        if area == 0 or (mask & (ids > 0)).sum() / area > 0.5:
            continue
        info[len(info) + 1] = (int(instances.labels[i]), True, False, float(instances.scores[i]))
        ids[mask & (ids == 0)] = len(info)
    min_area = stuff_area_threshold("reference", semantic.image_size, None, None)
    _stuff_segments(ids, info, prob.argmax(0), classes, min_area)
    return _panoptic(ids, info)


def reference_jsis(instances, semantic, classes) -> Panoptic:
    prob = resize_bilinear(semantic.prob, semantic.image_size)
    ids = np.zeros(semantic.image_size, np.int32)
    best = np.zeros(semantic.image_size, np.float32)
    info: dict = {}
    for i in _order(instances, 0.5, True):
        full = _full_mask(instances, i)
        wins = (full >= 0.5) & (full > best)
        info[len(info) + 1] = (int(instances.labels[i]), True, False, float(instances.scores[i]))
        best[wins] = full[wins]
        ids[wins] = len(info)
    stuff = classes.stuff_indices
    stuff_prob = prob[stuff]
    label = stuff[stuff_prob.argmax(0)]
    min_area = stuff_area_threshold("reference", semantic.image_size, None, None)
    small = [c for c in stuff if ((ids == 0) & (label == c)).sum() < min_area]
    survivors = [c for c in stuff if c not in small]
    replace = (ids == 0) & np.isin(label, small)
    if survivors:
        label[replace] = np.array(survivors)[prob[survivors].argmax(0)][replace]
    else:
        label[replace] = 255
    _stuff_segments(ids, info, label, classes, 0)
    return _panoptic(ids, info)


def reference_costea(instances, semantic, classes) -> Panoptic:
    stuff = classes.stuff_indices.tolist()
    things = classes.thing_indices.tolist()
    categories = list(dict.fromkeys(classes.category[c] for c in things))
    members = [[c for c in things if classes.category[c] == g] for g in categories]
    # category probabilities are sums of class probabilities, taken before upsampling
    low = np.concatenate([semantic.prob[stuff], np.stack([semantic.prob[m].sum(0) for m in members])])
    winner = resize_bilinear(low, semantic.image_size).argmax(0)
    group = winner - len(stuff)
    ids = np.zeros(semantic.image_size, np.int32)
    info: dict = {}
    for i in _order(instances, 0.5, True):
        label = int(instances.labels[i])
        take = (
            (_full_mask(instances, i) >= 0.5)
            & (group == categories.index(classes.category[label]))
            & (ids == 0)
        )
        info[len(info) + 1] = (label, True, False, float(instances.scores[i]))
        ids[take] = len(info)
    # BFS by path length; a pixel takes the smallest id among its neighbours one step closer
    height, width = ids.shape
    dist = np.where(ids > 0, 0, -1)
    queue = deque(zip(*np.nonzero(ids > 0), strict=True))
    while queue:
        y, x = queue.popleft()
        for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if (
                0 <= ny < height
                and 0 <= nx < width
                and dist[ny, nx] < 0
                and group[ny, nx] == group[y, x] >= 0
            ):
                dist[ny, nx] = dist[y, x] + 1
                queue.append((ny, nx))
            if (
                0 <= ny < height
                and 0 <= nx < width
                and dist[ny, nx] == dist[y, x] + 1
                and group[ny, nx] == group[y, x]
            ):
                ids[ny, nx] = ids[y, x] if ids[ny, nx] == 0 else min(ids[ny, nx], ids[y, x])
    prob = resize_bilinear(semantic.prob, semantic.image_size)
    min_area = stuff_area_threshold("reference", semantic.image_size, None, None)
    for g, m in enumerate(members):
        comp, n = ndimage.label((group == g) & (ids == 0))
        for k in range(1, n + 1):
            pixels = comp == k
            if pixels.sum() < min_area:  # isolated segments have the stuff-area minimum; they stay void
                continue
            sums = [prob[c][pixels].astype(np.float64).sum() for c in m]
            best = int(np.argmax(sums))
            info[len(info) + 1] = (m[best], True, False, sums[best] / pixels.sum())
            ids[pixels] = len(info)
    _stuff_segments(
        ids,
        info,
        np.where(group < 0, np.array(stuff + [255])[np.minimum(winner, len(stuff))], 255),
        classes,
        min_area,
    )
    return _panoptic(ids, info)


def reference_semantic(instances, semantic, classes) -> Panoptic:
    label = resize_bilinear(semantic.prob, semantic.image_size).argmax(0)
    ids = np.zeros(semantic.image_size, np.int32)
    info: dict = {}
    for c in range(classes.num_classes):
        if (label == c).any():
            info[len(info) + 1] = (c, bool(classes.is_thing[c]), False, 1.0)
            ids[label == c] = len(info)
    return Panoptic.from_segment_map(ids, info)


REFERENCES = {
    "kirillov": lambda i, s, c: reference_greedy(i, s, c, inclusive=True),
    "seamless": lambda i, s, c: reference_greedy(i, s, c, inclusive=False),
    "jsis": reference_jsis,
    "costea": reference_costea,
    "semantic": reference_semantic,
}


def compare(a: Panoptic, b: Panoptic) -> tuple[int, int]:
    """(pixels whose segment id differs, segments whose info differs)."""
    pixels = int((a.segment_ids != b.segment_ids).sum())
    sa = {s.id: (s.class_index, s.is_thing, s.iscrowd, round(s.score, 5), s.area, s.bbox) for s in a.segments}
    sb = {s.id: (s.class_index, s.is_thing, s.iscrowd, round(s.score, 5), s.area, s.bbox) for s in b.segments}
    segments = len(set(sa.items()) ^ set(sb.items()))
    return pixels, segments


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-reference", action="store_true")
    args = parser.parse_args([] if argv is None else argv)

    instances, semantic, classes = make_inputs(args.seed)
    print(
        f"image {IMAGE_HW[0]}x{IMAGE_HW[1]}, {classes.num_classes} classes, semantic at stride {STRIDE} "
        f"{semantic.prob.shape}, {len(instances)} instances ({int((instances.scores >= 0.5).sum())} with score >= 0.5)"
    )
    results: dict[str, float] = {}
    header = (
        f"{'method':<10} {'ms (min)':>9} {'ms (median)':>12} {'cpu ms':>7} {'target':>7} {'ref ms':>9} "
        f"{'speed-up':>9} {'diff px':>8} {'diff seg':>9}"
    )
    print(header)
    for method in FUSION_METHODS:
        times, cpu = [], []
        for _ in range(args.repeats):
            t, c = time.perf_counter(), time.process_time()
            out = fuse(method, instances, semantic, classes)
            times.append((time.perf_counter() - t) * 1e3)
            cpu.append((time.process_time() - c) * 1e3)
        best, median = min(times), statistics.median(times)
        results[method] = best
        results[f"{method}_cpu"] = min(cpu)
        ref_ms, speedup, diff = float("nan"), float("nan"), ("-", "-")
        if not args.no_reference:
            t = time.perf_counter()
            ref = REFERENCES[method](instances, semantic, classes)
            ref_ms = (time.perf_counter() - t) * 1e3
            speedup = ref_ms / best
            diff = compare(out, ref)
            results[f"{method}_reference"] = ref_ms
        target = TARGET_MS.get(method)
        print(
            f"{method:<10} {best:9.1f} {median:12.1f} {min(cpu):7.1f} {'' if target is None else f'{target:.0f}':>7} "
            f"{ref_ms:9.0f} {speedup:8.1f}x {diff[0]:>8} {diff[1]:>9}",
            flush=True,
        )
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
