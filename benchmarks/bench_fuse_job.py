"""Benchmark of the whole fuse and evaluate jobs per image (issue 13 item 5), against
today's code path in the same run.

Setting: `bench_fusion`'s street scene, 1024 × 2048, 19 classes, 100 detections with 28 × 28
box-relative masks, one CPU thread. A cache of ``--images`` copies of the scene is written,
then per method:

- **fuse job**: ``segfusion fuse`` in-process (`segfusion.cli.main`): read the cache, fuse,
  encode (PNG, JSON, instance RLEs) and write; the wall time of the command per image, and
  the job's own ``fusion_ms_per_image`` (which now times the same per-image work).
- **today**: the same command with the encoders before issue 13 (one full-frame mask and one
  pycocotools encode per segment, kept below as references only), and for Costea also
  without the isolated-segment minimum area. With the old encoder alone the output must be
  byte-identical (``same bytes``).
- **evaluate**: the per-image work of ``segfusion evaluate`` with a cache: the fused
  prediction against a ground truth (PQ, semantic, boundary, AP of the fused segments) and
  the AP of the raw detections (`segfusion.evaluation._evaluate_cache`); today's version
  pastes every detection at full resolution (`masks_to_image`). Peak memory is
  tracemalloc's peak of the Python and NumPy allocations of that work.

Targets per image: every fuse job <= 0.5 s; evaluate <= 0.5 s and <= 1 GB.

    python benchmarks/bench_fuse_job.py [--images 3] [--methods costea,kirillov]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from unittest import mock  # noqa: E402

import numpy as np  # noqa: E402

try:
    from benchmarks.bench_fusion import make_inputs  # noqa: E402
except ImportError:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.bench_fusion import make_inputs  # noqa: E402

import segfusion.evaluation as evaluation  # noqa: E402
import segfusion.fusion.costea as costea_module  # noqa: E402
import segfusion.io.fused as fused_module  # noqa: E402
import segfusion.metrics.instance as instance_module  # noqa: E402
from segfusion.cli import main as cli_main  # noqa: E402
from segfusion.evaluation import DEFAULT_BOUNDARY_BINS, add_instance_ground_truth  # noqa: E402
from segfusion.fusion import fuse  # noqa: E402
from segfusion.inference.cache import CacheWriter  # noqa: E402
from segfusion.io.atomic import read_json  # noqa: E402
from segfusion.io.coco_results import coco_result  # noqa: E402
from segfusion.metrics import PanopticQuality, SemanticConfusion, distance  # noqa: E402
from segfusion.metrics.boundary import BoundaryAccuracy  # noqa: E402
from segfusion.metrics.instance import InstanceAP, _rle_json  # noqa: E402

TARGET_S = 0.5
TARGET_GB = 1.0
METHODS = ("kirillov", "seamless", "jsis", "costea", "semantic")

# --------------------------------------------------------------------------- today's encoders (references)


def old_fused_instance_results(image_id, pan, classes):
    """io/fused.py before issue 13: one full-frame mask and one encode per segment."""
    return [
        coco_result(image_id, classes.ids[s.class_index], pan.segment_ids == s.id, s.score, s.bbox)
        for s in pan.segments
        if s.is_thing and not s.iscrowd
    ]


def old_panoptic_segment_rles(p, segment_ids):
    """metrics/instance.py before issue 13: one full-frame mask per segment (bbox crop pasted)."""
    from pycocotools import mask as mask_util

    seg = p.segment_ids
    out = []
    for sid in segment_ids:
        out.append(_rle_json(mask_util.encode(np.asfortranarray((seg == sid).astype(np.uint8)))))
    return out


def old_evaluate_cache(cache, gts, split):
    """evaluation._evaluate_cache's detection RLEs before issue 13: all masks at full resolution."""
    from pycocotools import mask as mask_utils

    from segfusion.inference.cache import CacheReader
    from segfusion.inference.paste import masks_to_image

    ap = InstanceAP(split.classes, native_ids=True)
    with CacheReader(cache) as reader:
        for cached in reader.iter_detections():
            if cached.name not in gts:
                continue
            rec, gt = gts[cached.name]
            inst = cached.instances
            masks = masks_to_image(inst, threshold=0.5) if len(inst) else np.zeros((0, *inst.image_size), bool)
            rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
            add_instance_ground_truth(ap, split, rec, gt)
            ap.add_detections(cached.name, inst.labels, inst.scores, inst.boxes, rles)
    return ap, {}


@contextlib.contextmanager
def today(encoder: bool = True, isolated_minimum: bool = True):
    """Swap in today's encoders (and, with ``isolated_minimum=False``, Costea without the
    isolated-segment minimum area)."""
    saved = (fused_module.fused_instance_results, instance_module.panoptic_segment_rles, evaluation._evaluate_cache, costea_module._unreached_segments)
    unreached = costea_module._unreached_segments
    try:
        if encoder:
            fused_module.fused_instance_results = old_fused_instance_results
            instance_module.panoptic_segment_rles = old_panoptic_segment_rles
            evaluation._evaluate_cache = old_evaluate_cache
        if not isolated_minimum:
            costea_module._unreached_segments = lambda canvas, field, group, members, min_area=0.0: unreached(canvas, field, group, members, 0.0)
        yield
    finally:
        (fused_module.fused_instance_results, instance_module.panoptic_segment_rles, evaluation._evaluate_cache, costea_module._unreached_segments) = saved


# --------------------------------------------------------------------------- jobs


def write_cache(path: Path, n_images: int):
    instances, semantic, classes = make_inputs(0)
    with CacheWriter(path, "bench", "h", classes) as w:
        for i in range(n_images):
            w.add(
                f"img{i:03d}", i, instances.image_size, instances.boxes, instances.scores, instances.labels,
                instances.mask_prob, semantic.prob,
            )
    return instances, semantic, classes


def fuse_job(cache: Path, method: str, out: Path, n_images: int) -> tuple[float, float, int]:
    """Seconds per image of the whole command, its fusion_ms_per_image, segments per image."""
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        cli_main(["fuse", "--cache", str(cache), "--method", method, "--out", str(out)])
    wall = (time.perf_counter() - t) / n_images
    data = read_json(out / "panoptic.json")
    segments = sum(len(a["segments_info"]) for a in data["annotations"]) / n_images
    return wall, data["meta"]["fusion_ms_per_image"] / 1000, int(segments)


def same_bytes(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    if files != sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()):
        return False
    for rel in files:
        x, y = (a / rel).read_bytes(), (b / rel).read_bytes()
        if rel.name == "panoptic.json":  # the meta holds the timing: compare all but it
            jx, jy = read_json(a / rel), read_json(b / rel)
            jx["meta"].pop("fusion_ms_per_image")
            jy["meta"].pop("fusion_ms_per_image")
            if jx != jy:
                return False
        elif x != y:
            return False
    return True


def evaluate_image(cache: Path, pred, gt, classes) -> tuple[float, float]:
    """Seconds and peak GB of one image's evaluate work (the loop body of `evaluate_fused`
    and `_evaluate_cache` on the cache's first image; the metric state, not COCOeval, which
    the gather job runs once)."""
    rec = SimpleNamespace(name="img000", image_id=0, height=gt.image_size[0], width=gt.image_size[1])
    split = SimpleNamespace(classes=classes, has_instances=False)
    c = classes.num_classes
    tracemalloc.start()
    t = time.perf_counter()
    pq = PanopticQuality(classes)
    pq.update(gt, pred, image_id=rec.name)
    gt_sem = gt.semantic
    SemanticConfusion(c, is_thing=classes.is_thing).update(gt_sem, pred.semantic, image_id=rec.name)
    BoundaryAccuracy(c, bins=DEFAULT_BOUNDARY_BINS).update(gt_sem, pred.semantic, image_id=rec.name)
    ap = InstanceAP(classes, native_ids=True)
    add_instance_ground_truth(ap, split, rec, gt)
    ap.add_panoptic_detections(rec.name, pred)
    evaluation._evaluate_cache(cache, {rec.name: (rec, gt)}, split)
    # AP itself (COCOeval) runs once in the gather job on all images, not per image
    seconds = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1] / 1e9
    tracemalloc.stop()
    return seconds, peak


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args([] if argv is None else argv)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cache = tmp / "cache.h5"
        instances, semantic, classes = write_cache(cache, args.images)
        print(f"{args.images} images of 1024x2048, {len(instances)} detections, one thread; seconds per image of the whole job")
        print(f"{'fuse job':<10} {'s/image':>8} {'timed':>7} {'today':>7} {'ratio':>6} {'segs':>5} {'today segs':>10} {'same bytes':>10} {'<= 0.5 s':>8}")
        for method in args.methods.split(","):
            new, timed, segs = fuse_job(cache, method, tmp / f"{method}-new", args.images)
            with today(encoder=True):
                fuse_job(cache, method, tmp / f"{method}-enc", args.images)
            with today(encoder=True, isolated_minimum=False):
                old, _, old_segs = fuse_job(cache, method, tmp / f"{method}-old", args.images)
            same = same_bytes(tmp / f"{method}-new", tmp / f"{method}-enc")
            results[f"fuse_{method}_s"] = new
            results[f"fuse_{method}_today_s"] = old
            print(
                f"{method:<10} {new:8.3f} {timed:7.3f} {old:7.3f} {old / new:5.1f}x {segs:5d} {old_segs:10d} {str(same):>10} {str(new <= TARGET_S):>8}",
                flush=True,
            )
        gt = fuse("kirillov", *make_inputs(1)[:2], classes)
        pred = fuse("costea", instances, semantic, classes)
        t = time.perf_counter()
        warm = np.zeros((1024, 2048), bool)
        warm[0, 0] = True
        distance.distance_to(warm)  # numba import + compiled kernel load: once per evaluate job
        load_s = time.perf_counter() - t

        def median_of(runs):
            times = sorted(runs)
            return times[len(times) // 2]

        new = [evaluate_image(cache, pred, gt, classes) for _ in range(3)]
        new_s, new_gb = median_of(s for s, _ in new), max(g for _, g in new)
        with mock.patch.object(distance, "COMPILED_MIN_PIXELS", np.inf):  # scipy's transform, as before
            scipy_s = median_of(evaluate_image(cache, pred, gt, classes)[0] for _ in range(3))
        with today(encoder=True), mock.patch.object(distance, "COMPILED_MIN_PIXELS", np.inf):
            old_s, old_gb = evaluate_image(cache, pred, gt, classes)
        results.update(evaluate_s=new_s, evaluate_gb=new_gb, evaluate_scipy_edt_s=scipy_s, evaluate_today_s=old_s, evaluate_today_gb=old_gb)
        print(f"{'evaluate':<10} {'s/image':>8} {'peak GB':>8} {'scipy EDT':>9} {'ratio':>6} {'issue-13 start s':>16} {'GB':>6} {'<= 0.5 s, 1 GB':>15}")
        print(
            f"{'':<10} {new_s:8.3f} {new_gb:8.3f} {scipy_s:9.3f} {scipy_s / new_s:5.2f}x {old_s:16.3f} {old_gb:6.3f} "
            f"{str(new_s <= TARGET_S and new_gb <= TARGET_GB):>15}",
            flush=True,
        )
        print(f"(medians of 3; the compiled distance transform costs {load_s:.2f} s once per evaluate job: numba's import and the cached kernel)")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
