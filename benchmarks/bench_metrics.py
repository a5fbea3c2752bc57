"""Benchmark of segfusion.metrics against the official Cityscapes evaluators (single process).

    python benchmarks/bench_metrics.py [--images 50] [--stream-images 500] [--boundary-images 20]

1. Panoptic: ``PanopticQuality.update`` per image (arrays in memory) vs cityscapesscripts'
   ``pq_compute_single_core`` (the per-image loop of ``evaluatePanoptic``, run in this
   process instead of a multiprocessing pool), on the same synthetic 1024x2048 scenes
   written as COCO-panoptic JSON + RGB-id PNGs. Target: >= 5x.
2. Semantic: ``SemanticConfusion.update`` vs ``evalPixelLevelSemanticLabeling.evaluateImgLists``
   on labelId PNGs. Target: >= 10x.
   The official timings include decoding the PNGs (that is how the official tools work); the
   PNG decode time alone is printed too, so the ratio against "our update + PNG decode" is
   reported as well.
3. Streaming memory, in a fresh process: peak RSS (VmHWM, reset before streaming) while Semantic + Panoptic accumulate
   ``--stream-images`` images of 1024x2048 (scenes drawn cyclically from a small pool, so the
   generator does not dominate), plus ``BoundaryAccuracy`` on ``--boundary-images`` of them
   (its Euclidean distance transform is the slow part). Target: < 2 GB.

Single-threaded: BLAS/OpenMP thread counts are set to 1 before numpy is imported. Timings
are the minimum over ``--repeats`` runs of the whole 50-image loop, for both sides.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from segfusion.datasets.cityscapes import cityscapes_classes  # noqa: E402  (the one class table)
from segfusion.metrics import BoundaryAccuracy, PanopticQuality, SemanticConfusion  # noqa: E402
from segfusion.types import ClassInfo, Panoptic, Segment  # noqa: E402

H, W = 1024, 2048



# --------------------------------------------------------------------------- synthetic scenes
def _rect(rng: np.random.Generator, hmin: int, hmax: int) -> tuple[int, int, int, int]:
    h = int(rng.integers(hmin, hmax))
    w = int(rng.integers(hmin, hmax * 2))
    y = int(rng.integers(0, H - h))
    x = int(rng.integers(0, W - w))
    return y, x, h, w


def _panoptic(seg: np.ndarray, info: dict[int, tuple[int, bool, bool, float]]) -> Panoptic:
    """Panoptic with exact areas and bboxes, computed with bincounts (ids < 65536)."""
    k = int(seg.max()) + 1
    flat = seg.ravel()
    area = np.bincount(flat, minlength=k)
    rows = (
        np.bincount((seg * H + np.arange(H, dtype=np.int32)[:, None]).ravel(), minlength=k * H).reshape(k, H)
        > 0
    )
    cols = (
        np.bincount((seg * W + np.arange(W, dtype=np.int32)[None, :]).ravel(), minlength=k * W).reshape(k, W)
        > 0
    )
    segments = []
    for sid in np.flatnonzero(area).tolist():
        if sid == 0:
            continue
        r = np.flatnonzero(rows[sid])
        c = np.flatnonzero(cols[sid])
        cls, thing, crowd, score = info[sid]
        segments.append(
            Segment(
                id=sid,
                class_index=cls,
                is_thing=thing,
                iscrowd=crowd,
                score=score,
                area=int(area[sid]),
                bbox=(int(c[0]), int(r[0]), int(c[-1] - c[0] + 1), int(r[-1] - r[0] + 1)),
            )
        )
    return Panoptic(segment_ids=seg, segments=tuple(segments))


def synthetic_scene(rng: np.random.Generator, classes: ClassInfo) -> tuple[Panoptic, Panoptic]:
    """A street-like 1024x2048 scene: stuff bands and blocks, ~35 things, void and crowd;
    the prediction jitters, drops, relabels and adds segments."""
    stuff = classes.stuff_indices
    things = classes.thing_indices
    gt = np.zeros((H, W), np.int32)
    pred = np.zeros((H, W), np.int32)
    info: dict[int, tuple[int, bool, bool, float]] = {}
    pinfo: dict[int, tuple[int, bool, bool, float]] = {}
    nid = 1
    # stuff: horizontal bands, then blocks (one segment per stuff class)
    stuff_id = {}
    bounds = np.sort(rng.choice(np.arange(50, H - 50), size=4, replace=False))
    for y0, y1 in zip([0, *bounds], [*bounds, H], strict=True):
        c = int(rng.choice(stuff))
        sid = stuff_id.setdefault(c, nid)
        nid = max(nid, sid + 1)
        info[sid] = (c, False, False, 1.0)
        gt[y0:y1] = sid
        jitter = int(rng.integers(-15, 16))
        pc = c if rng.random() < 0.85 else int(rng.choice(stuff))
        pred[max(0, y0 + jitter) : max(0, y1 + jitter)] = 1000 + pc
        pinfo[1000 + pc] = (pc, False, False, 1.0)
    pred[pred == 0] = 1000 + int(classes.stuff_indices[0])
    pinfo.setdefault(1000 + int(classes.stuff_indices[0]), (int(classes.stuff_indices[0]), False, False, 1.0))
    for _ in range(int(rng.integers(6, 12))):
        y, x, h, w = _rect(rng, 40, 300)
        c = int(rng.choice(stuff))
        sid = stuff_id.setdefault(c, nid)
        nid = max(nid, sid + 1)
        info[sid] = (c, False, False, 1.0)
        gt[y : y + h, x : x + w] = sid
        dy, dx = (int(v) for v in rng.integers(-20, 21, size=2))
        pc = c if rng.random() < 0.8 else int(rng.choice(stuff))
        pred[max(0, y + dy) : y + dy + h, max(0, x + dx) : x + dx + w] = 1000 + pc
        pinfo[1000 + pc] = (pc, False, False, 1.0)
    # void
    for _ in range(int(rng.integers(1, 4))):
        y, x, h, w = _rect(rng, 20, 150)
        gt[y : y + h, x : x + w] = 0
    # things (instances) and their jittered predictions
    pid = 2000
    for _ in range(int(rng.integers(20, 50))):
        y, x, h, w = _rect(rng, 10, 250)
        c = int(rng.choice(things))
        gt[y : y + h, x : x + w] = nid
        info[nid] = (c, True, False, 1.0)
        nid += 1
        if rng.random() < 0.15:
            continue
        s = max(2, h // 5)
        dy, dx, dh, dw = (int(v) for v in rng.integers(-s, s + 1, size=4))
        pc = c if rng.random() < 0.85 else int(rng.choice(things))
        pred[max(0, y + dy) : max(0, y + dy + h + dh), max(0, x + dx) : max(0, x + dx + w + dw)] = pid
        pinfo[pid] = (pc, True, False, float(rng.random()))
        pid += 1
    for c in rng.choice(things, size=2, replace=False):  # crowd regions
        y, x, h, w = _rect(rng, 30, 200)
        gt[y : y + h, x : x + w] = nid
        info[nid] = (int(c), True, True, 1.0)
        nid += 1
    for _ in range(int(rng.integers(2, 8))):  # false positives
        y, x, h, w = _rect(rng, 10, 120)
        pred[y : y + h, x : x + w] = pid
        pinfo[pid] = (int(rng.choice(things)), True, False, float(rng.random()))
        pid += 1
    return _panoptic(gt, info), _panoptic(pred, pinfo)


# --------------------------------------------------------------------------- file writers
def _id_rgb(seg: np.ndarray) -> np.ndarray:
    s = seg.astype(np.uint32)
    return np.stack([s % 256, (s // 256) % 256, s // 65536], axis=-1).astype(np.uint8)


def _coco_panoptic_ann(name: str, p: Panoptic, classes: ClassInfo) -> dict:
    return {
        "image_id": name,
        "file_name": f"{name}.png",
        "segments_info": [
            {
                "id": s.id,
                "category_id": classes.ids[s.class_index],
                "iscrowd": int(s.iscrowd),
                "area": s.area,
                "bbox": list(s.bbox),
            }
            for s in p.segments
        ],
    }


def _labelid(sem: np.ndarray, classes: ClassInfo) -> np.ndarray:
    lut = np.zeros(256, np.uint8)  # 255 (ignore / void) -> labelId 0 "unlabeled"
    lut[: classes.num_classes] = classes.ids
    return lut[sem]


def write_official_files(root: Path, scenes: list[tuple[Panoptic, Panoptic]], classes: ClassInfo) -> dict:
    for sub in ("gt_pan", "pred_pan", "sem"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    gt_anns, pred_anns, gt_sem, pred_sem = [], [], [], []
    for k, (gt, pred) in enumerate(scenes):
        name = f"img{k:04d}"
        Image.fromarray(_id_rgb(gt.segment_ids)).save(root / "gt_pan" / f"{name}.png", compress_level=1)
        Image.fromarray(_id_rgb(pred.segment_ids)).save(root / "pred_pan" / f"{name}.png", compress_level=1)
        gt_anns.append(_coco_panoptic_ann(name, gt, classes))
        pred_anns.append(_coco_panoptic_ann(name, pred, classes))
        g = root / "sem" / f"{name}_gtFine_labelIds.png"
        p = root / "sem" / f"{name}_pred_labelIds.png"
        Image.fromarray(_labelid(gt.semantic, classes)).save(g, compress_level=1)
        Image.fromarray(_labelid(pred.semantic, classes)).save(p, compress_level=1)
        gt_sem.append(str(g))
        pred_sem.append(str(p))
    categories = [
        {"id": classes.ids[k], "name": classes.names[k], "isthing": int(classes.is_thing[k])}
        for k in range(classes.num_classes)
    ]
    return {
        "gt_anns": gt_anns,
        "pred_anns": pred_anns,
        "categories": categories,
        "gt_sem": gt_sem,
        "pred_sem": pred_sem,
    }


# --------------------------------------------------------------------------- benchmark parts
def _best_of(repeats: int, fn) -> tuple[float, object]:
    """(minimum wall time over ``repeats`` runs, last return value): the machine is shared,
    so the minimum is the least disturbed measurement (applied to both sides alike)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_panoptic(scenes, classes, files, root: Path, repeats: int) -> tuple[float, float, dict, dict]:
    from cityscapesscripts.evaluation import evalPanopticSemanticLabeling as ps

    categories = {c["id"]: c for c in files["categories"]}
    pairs = list(zip(files["gt_anns"], files["pred_anns"], strict=True))

    def official_run():
        with contextlib.redirect_stdout(io.StringIO()):
            return ps.pq_compute_single_core(
                0, pairs, str(root / "gt_pan"), str(root / "pred_pan"), categories
            )

    def ours_run():
        m = PanopticQuality(classes)
        for k, (gt, pred) in enumerate(scenes):
            m.update(gt, pred, image_id=k)
        return m

    t_official, stat = _best_of(repeats, official_run)
    with contextlib.redirect_stdout(io.StringIO()):
        official = ps.average_pq(stat, categories)
    t_ours, m = _best_of(repeats, ours_run)
    return t_official, t_ours, official, m.result()


def bench_semantic(scenes, classes, files, repeats: int) -> tuple[float, float, dict, dict]:
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs

    cs.args.evalInstLevelScore = False
    cs.args.evalPixelAccuracy = False
    cs.args.JSONOutput = False
    cs.args.quiet = True
    t_official, official = _best_of(
        repeats, lambda: cs.evaluateImgLists(files["pred_sem"], files["gt_sem"], cs.args)
    )
    sems = [(gt.semantic, pred.semantic) for gt, pred in scenes]  # derived maps: not timed

    def ours_run():
        m = SemanticConfusion(classes.num_classes)
        for k, (g, p) in enumerate(sems):
            m.update(g, p, image_id=k)
        return m

    t_ours, m = _best_of(repeats, ours_run)
    return t_official, t_ours, official, m.result()


def png_decode_time(paths: list[str], repeats: int) -> float:
    return _best_of(repeats, lambda: [np.asarray(Image.open(p)) for p in paths])[0]


def _vm_hwm_mb() -> float:
    """Peak resident set size of this process in MB: /proc/self/status VmHWM (Linux), which,
    unlike getrusage's ru_maxrss, does not inherit the parent's peak across fork + exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_hwm() -> bool:
    """Reset the peak-RSS mark (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def bench_stream(classes: ClassInfo, n_images: int, n_boundary: int, seed: int) -> dict:
    """Run in a fresh process (see main): pool of 10 scenes, then stream n_images through it."""
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(10):
        gt, pred = synthetic_scene(rng, classes)
        pool.append((gt, pred, gt.semantic, pred.semantic))
    rss0 = _vm_hwm_mb()
    reset = _reset_hwm()
    sem = SemanticConfusion(classes.num_classes, is_thing=classes.is_thing)
    pq = PanopticQuality(classes)
    bnd = BoundaryAccuracy(classes.num_classes)
    t0 = time.perf_counter()
    t_boundary = 0.0
    for k in range(n_images):
        gt, pred, g, p = pool[k % len(pool)]
        sem.update(g, p, image_id=k)
        pq.update(gt, pred, image_id=k)
        if k < n_boundary:
            tb = time.perf_counter()
            bnd.update(g, p, image_id=k)
            t_boundary += time.perf_counter() - tb
    elapsed = time.perf_counter() - t0
    rss1 = _vm_hwm_mb()
    state_bytes = len(json.dumps(sem.state())) + len(json.dumps(pq.state())) + len(json.dumps(bnd.state()))
    return {
        "images": n_images,
        "boundary_images": n_boundary,
        "seconds": elapsed,
        "boundary_ms_per_image": 1e3 * t_boundary / max(n_boundary, 1),
        "peak_rss_before_mb": rss0,
        "peak_rss_after_mb": rss1,
        "peak_reset": reset,
        "state_json_kb": state_bytes / 1024,
        "miou": sem.result()["miou"],
        "pq": pq.result()["pq"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=50, help="images for the speed comparison (default 50)")
    ap.add_argument(
        "--stream-images", type=int, default=500, help="images for the streaming memory run (default 500)"
    )
    ap.add_argument(
        "--boundary-images", type=int, default=20, help="of which also through BoundaryAccuracy (default 20)"
    )
    ap.add_argument(
        "--repeats", type=int, default=3, help="timing repeats, the minimum is reported (default 3)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stream-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    classes = cityscapes_classes()
    if args.stream_only:  # child process of the memory measurement
        print(
            json.dumps(
                bench_stream(
                    classes, args.stream_images, min(args.boundary_images, args.stream_images), args.seed
                )
            )
        )
        return
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    scenes = [synthetic_scene(rng, classes) for _ in range(args.images)]
    n_seg = np.mean([len(g.segments) + len(p.segments) for g, p in scenes]) / 2
    print(
        f"generated {args.images} scenes of {H}x{W} ({n_seg:.1f} segments/image avg) in {time.perf_counter() - t0:.1f} s"
    )

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        files = write_official_files(root, scenes, classes)
        print(f"wrote official-format files in {time.perf_counter() - t0:.1f} s")

        t_off, t_ours, official, ours = bench_panoptic(scenes, classes, files, root, args.repeats)
        pan_pngs = [str(root / "gt_pan" / a["file_name"]) for a in files["gt_anns"]]
        pan_pngs += [str(root / "pred_pan" / a["file_name"]) for a in files["pred_anns"]]
        t_png = png_decode_time(pan_pngs, args.repeats)
        n = args.images
        print("\n== panoptic (PQ) ==")
        print(
            f"official pq_compute_single_core : {1e3 * t_off / n:8.1f} ms/image (includes decoding 2 RGB PNGs)"
        )
        print(f"segfusion PanopticQuality.update: {1e3 * t_ours / n:8.1f} ms/image (arrays in memory)")
        print(f"  decoding the 2 RGB PNGs alone : {1e3 * t_png / n:8.1f} ms/image")
        print(
            f"speed-up: {t_off / t_ours:.1f}x (target >= 5x); including PNG decode: {t_off / (t_ours + t_png):.1f}x"
        )
        print(
            f"PQ official {official['All']['pq']:.12f}  ours {ours['pq']:.12f}  |diff| {abs(official['All']['pq'] - ours['pq']):.2e}"
        )

        t_off, t_ours, official, ours = bench_semantic(scenes, classes, files, args.repeats)
        t_png = png_decode_time(files["gt_sem"] + files["pred_sem"], args.repeats)
        print("\n== semantic (mIoU) ==")
        print(f"official evaluateImgLists       : {1e3 * t_off / n:8.1f} ms/image (includes decoding 2 PNGs)")
        print(f"segfusion SemanticConfusion     : {1e3 * t_ours / n:8.1f} ms/image (arrays in memory)")
        print(f"  decoding the 2 label PNGs     : {1e3 * t_png / n:8.1f} ms/image")
        print(
            f"speed-up: {t_off / t_ours:.1f}x (target >= 10x); including PNG decode: {t_off / (t_ours + t_png):.1f}x"
        )
        print(
            f"mIoU official {official['averageScoreClasses']:.12f}  ours {ours['miou']:.12f}  "
            f"|diff| {abs(official['averageScoreClasses'] - ours['miou']):.2e}"
        )

    del scenes
    # memory: a fresh process, so that its peak RSS is the streaming run's alone
    cmd = [
        sys.executable,
        __file__,
        "--stream-only",
        "--stream-images",
        str(args.stream_images),
        "--boundary-images",
        str(args.boundary_images),
        "--seed",
        str(args.seed),
    ]
    s = json.loads(
        subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    )
    print("\n== streaming memory (fresh process) ==")
    print(
        f"{s['images']} images of {H}x{W} through SemanticConfusion + PanopticQuality "
        f"(the first {s['boundary_images']} also through BoundaryAccuracy, {s['boundary_ms_per_image']:.0f} ms/image) "
        f"in {s['seconds']:.1f} s"
    )
    during = (
        "peak RSS during streaming"
        if s["peak_reset"]
        else "peak RSS of the process (peak mark not resettable)"
    )
    print(
        f"{during}: {s['peak_rss_after_mb']:.0f} MB (target < 2048 MB); peak before streaming "
        f"{s['peak_rss_before_mb']:.0f} MB (interpreter + generating a pool of 10 scenes, reused cyclically)"
    )
    print(f"accumulator states as JSON: {s['state_json_kb']:.0f} kB; mIoU {s['miou']:.4f}, PQ {s['pq']:.4f}")


if __name__ == "__main__":
    main()
