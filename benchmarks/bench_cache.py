"""Benchmark of the HDF5 prediction cache (`segfusion.inference.cache`), Zstd against gzip.

Setting (Cityscapes-like, the targets of the issue "Inference and the HDF5 prediction
cache"): a 1024 x 2048 image, 19 classes at stride 4 (19 x 256 x 512 probabilities) and 100
detections with 28 x 28 masks and 1000 proposals. One thread; files are read back from the
OS page cache right after writing (cold reads add the disk's time).

Synthetic outputs shaped like a trained network's, since an untrained network's
near-uniform softmax would compress unrealistically well or badly:

* semantic: a layout of 32 x 32-cell regions with one class each, blurred at the region
  borders, logits ``9 * layout + smooth noise`` (``--soft`` uses ``4 * layout + 1.5 noise``:
  a much less confident network, worst case for compression), softmax;
* masks: sigmoid of an elliptic blob with smooth noise, boxes log-uniform in [16, 512] px.

Figures:

1. size of one image, per dataset, for both compressions (target: <= 2 MB);
2. reading the instances (boxes, scores, labels, masks, proposals) of ``--images`` (1000)
   images (target: <= 5 s). That file stores a 19 x 1 x 1 semantic placeholder to keep the
   benchmark short: instance reads never touch the semantic datasets;
3. reading the full semantic probabilities (dequantised to float32) of
   ``--semantic-images`` images, in images/s (target: >= 50);
4. write overhead: the time of `CacheWriter.add` per image (quantisation, compression,
   HDF5 write) relative to the forward time of a prediction. The reference forward is
   measured on this CPU: the project's ``tiny`` panoptic_fpn model on one 1024 x 2048 image,
   one thread (``--forward-ms`` gives another reference, e.g. a GPU time, instead). This
   tiny model is far cheaper than an R50-FPN, so the ratio printed is an upper bound of the
   overhead of a CPU run. The "break-even" forward time is the one at which writing adds
   exactly 10 %.
5. checksum cost: the reads of 2. and 3. of Zstd files written with the Fletcher32 checksum
   (the cache format) against the same files written without it, in the same run, the reads
   of the two alternated five times, the fastest of each (target: reads <= 10 % slower).

    python benchmarks/bench_cache.py [--images 1000] [--semantic-images 50] [--soft] [--forward-ms MS]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from segfusion.datasets.cityscapes import cityscapes_classes  # noqa: E402
from segfusion.inference.cache import COMPRESSIONS, CacheReader, CacheWriter, dequantize, quantize  # noqa: E402
from segfusion.resize import resize_bilinear  # noqa: E402

IMAGE_HW = (1024, 2048)
NUM_CLASSES = 19
STRIDE = 4
NUM_DETECTIONS = 100
NUM_PROPOSALS = 1000
MASK_SIZE = 28
CHECKSUM_REPEAT = 5


def semantic_prob(rng: np.random.Generator, soft: bool = False) -> np.ndarray:
    """(19, 256, 512) float32 softmax probabilities (module docstring)."""
    c, (h, w) = NUM_CLASSES, (IMAGE_HW[0] // STRIDE, IMAGE_HW[1] // STRIDE)
    cells = rng.integers(0, c, (h // 32, w // 32))
    layout = np.repeat(np.repeat(cells, 32, 0), 32, 1)
    onehot = (np.arange(c)[:, None, None] == layout[None]).astype(np.float32)
    blurred = resize_bilinear(resize_bilinear(onehot, (h // 8, w // 8)), (h, w))
    noise = resize_bilinear(rng.normal(0, 1.5 if soft else 1.0, (c, h // 16, w // 16)).astype(np.float32), (h, w))
    logits = (4.0 if soft else 9.0) * blurred + noise
    logits -= logits.max(0, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(0, keepdims=True)
    return p.astype(np.float32)


def detections(rng: np.random.Generator) -> dict:
    """Keyword arguments of `CacheWriter.add` for 100 detections (no semantic part)."""
    n = NUM_DETECTIONS
    h, w = IMAGE_HW
    side = np.exp(np.log(16) + rng.random(n) * np.log(512 / 16))
    aspect = np.exp((rng.random(n) - 0.5) * 2 * np.log(2))
    bw, bh = side * np.sqrt(aspect), side / np.sqrt(aspect)
    cx, cy = rng.random(n) * w, rng.random(n) * h
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).astype(np.float32)
    yy, xx = (np.mgrid[0:MASK_SIZE, 0:MASK_SIZE] + 0.5) / MASK_SIZE - 0.5
    radius = rng.uniform(0.3, 0.5, (n, 2))
    blob = 1 - (yy[None] / radius[:, :1, None]) ** 2 - (xx[None] / radius[:, 1:, None]) ** 2
    noise = resize_bilinear(rng.normal(0, 0.3, (n, 7, 7)).astype(np.float32), (MASK_SIZE, MASK_SIZE))
    masks = 1 / (1 + np.exp(-(8 * blob + noise)))
    pc = rng.random((NUM_PROPOSALS, 2)) * (w, h)
    ps = rng.uniform(8, 400, (NUM_PROPOSALS, 2))
    return dict(
        image_size=IMAGE_HW,
        boxes=boxes,
        scores=rng.random(n).astype(np.float32),
        labels=rng.integers(11, NUM_CLASSES, n),
        mask_prob=masks.astype(np.float32),
        proposals=np.concatenate([pc - ps / 2, pc + ps / 2], 1).astype(np.float32),
    )


def dataset_sizes(path: Path) -> dict[str, int]:
    """Stored bytes per dataset of the first image of a cache."""
    import h5py

    with h5py.File(path, "r") as f:
        g = f["images"][next(iter(f["images"]))]
        return {k: int(g[k].id.get_storage_size()) for k in g}


def measure_forward_ms() -> float:
    """One-thread forward time of the tiny panoptic_fpn at 1024 x 2048 (after one warm-up run)."""
    import torch

    from segfusion.models.build import build_model
    from segfusion.specs import MODEL_PRESETS, InferenceSpec, ModelSpec

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(MODEL_PRESETS["panoptic_fpn"], ModelSpec(max_size=IMAGE_HW[1]), cityscapes_classes())
    inference = InferenceSpec(test_min_size=IMAGE_HW[0])
    image = torch.rand(3, *IMAGE_HW)
    model.predict([image], inference)
    t0 = time.perf_counter()
    model.predict([image], inference)
    return 1000 * (time.perf_counter() - t0)


class Timer:
    """Wall and this thread's CPU seconds of a ``with`` block (CPU time is robust to other load)."""

    def __enter__(self) -> "Timer":
        self._wall, self._cpu = time.perf_counter(), time.thread_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.thread_time() - self._cpu


def _best(times: list[tuple[float, float]]) -> tuple[float, float]:
    """The fastest of repeated (wall, CPU) measurements."""
    return min(times)


def write_files(compression: str, tmp: Path, sems: list[np.ndarray], dets: list[dict], n_instances: int, checksum: bool = True) -> dict:
    """Write the benchmark's caches; their sizes, write times and paths (``semantic``, ``instances``)."""
    classes = cityscapes_classes()
    out: dict = {}
    tmp = tmp / ("checksum" if checksum else "plain")
    tmp.mkdir(exist_ok=True)
    kw = {"compression": compression, "checksum": checksum}
    one = tmp / f"one-{compression}.h5"
    with CacheWriter(one, "bench", "h", classes, **kw) as w:
        w.add("img0", 0, **dets[0], semantic_prob=sems[0])
    out["size_mb"] = one.stat().st_size / 1e6
    out["datasets"] = dataset_sizes(one)

    out["semantic"] = path = tmp / f"semantic-{compression}.h5"
    wall, cpu = [], []
    with CacheWriter(path, "bench", "h", classes, **kw) as w:
        for i, sem in enumerate(sems):
            t0, c0 = time.perf_counter(), time.thread_time()
            w.add(f"img{i:05d}", i, **dets[i % len(dets)], semantic_prob=sem, forward_seconds=0.1)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)
    out["write_ms"] = (1000 * float(np.median(wall)), 1000 * float(np.median(cpu)))

    out["instances"] = path = tmp / f"instances-{compression}.h5"
    placeholder = np.full((NUM_CLASSES, 1, 1), 1 / NUM_CLASSES, np.float32)
    with CacheWriter(path, "bench", "h", classes, **kw) as w:
        for i in range(n_instances):
            w.add(f"img{i:05d}", i, **dets[i % len(dets)], semantic_prob=placeholder)
    out["n_instances"] = n_instances
    return out


def read_files(files: dict) -> dict[str, tuple[float, float]]:
    """One read of each kind of the caches of `write_files`: (wall, CPU) seconds."""
    out = {}
    with CacheReader(files["semantic"]) as r:
        with Timer() as t:
            for name in r.names:
                r.read_semantic(name)
        out["semantic"] = (t.wall, t.cpu)
        with Timer() as t:
            for _ in r:
                pass
        out["full"] = (t.wall, t.cpu)
        n_semantic = len(r)
    with Timer() as t, CacheReader(files["instances"]) as r:
        count = sum(len(d.instances) for d in r.iter_detections())
    out["instances"] = (t.wall, t.cpu)
    assert count == files["n_instances"] * NUM_DETECTIONS
    out["n_semantic"] = n_semantic
    return out


def summarize(files: dict, reads: list[dict]) -> dict:
    """`write_files`'s figures with the fastest of repeated `read_files` (rates in images/s)."""
    out = dict(files)
    n = reads[0]["n_semantic"]
    w_, c_ = _best([r["semantic"] for r in reads])
    out["semantic_images_per_s"] = (n / w_, n / c_)
    w_, c_ = _best([r["full"] for r in reads])
    out["full_images_per_s"] = (n / w_, n / c_)
    out["instances_s"] = _best([r["instances"] for r in reads])
    return out


def bench(compression: str, tmp: Path, sems: list[np.ndarray], dets: list[dict], n_instances: int, checksum: bool = True, repeat: int = 1) -> dict:
    files = write_files(compression, tmp, sems, dets, n_instances, checksum)
    return summarize(files, [read_files(files) for _ in range(repeat)])


def checksum_cost(tmp: Path, sems: list[np.ndarray], dets: list[dict], n_instances: int, repeat: int = 5) -> tuple[dict, dict]:
    """Zstd caches with and without Fletcher32, their reads alternated ``repeat`` times (so that
    load on the machine hits both alike), the fastest of each: (checksummed, plain)."""
    files = {checksum: write_files("zstd", tmp, sems, dets, n_instances, checksum) for checksum in (True, False)}
    reads: dict[bool, list[dict]] = {True: [], False: []}
    for _ in range(repeat):
        for checksum in (True, False):
            reads[checksum].append(read_files(files[checksum]))
    return summarize(files[True], reads[True]), summarize(files[False], reads[False])


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark (``argv`` as on the command line; None = defaults); returns the headline figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images whose instances are read")
    parser.add_argument("--semantic-images", type=int, default=50, help="images whose semantic part is read")
    parser.add_argument("--soft", action="store_true", help="a low-confidence network's semantic outputs")
    parser.add_argument("--forward-ms", type=float, help="reference forward time instead of measuring the tiny model")
    args = parser.parse_args([] if argv is None else argv)

    rng = np.random.default_rng(0)
    distinct = min(args.semantic_images, 8)  # distinct synthetic images, cycled
    sems = [semantic_prob(rng, args.soft) for _ in range(distinct)]
    sems = [sems[i % distinct] for i in range(args.semantic_images)]
    dets = [detections(rng) for _ in range(distinct)]

    p = sems[0]
    q = dequantize(quantize(p))
    top2 = np.sort(p, axis=0)[-2:]
    flips = q.argmax(0) != p.argmax(0)
    print(f"semantic ({'soft' if args.soft else 'confident'}): mean top probability {p.max(0).mean():.3f}; "
          f"quantisation max error {np.abs(q - p).max():.5f} (bound 1/510 = {1 / 510:.5f}); "
          f"argmax changed at {flips.mean():.2e} of stride-4 pixels, all with top-2 gap <= 1/255: "
          f"{bool((top2[1] - top2[0])[flips].max(initial=0) <= 1 / 255 + 1e-7)}")

    results = {}
    with tempfile.TemporaryDirectory() as d:
        for compression in COMPRESSIONS:
            results[compression] = bench(compression, Path(d), sems, dets, args.images)
        # Checksum cost, same run: Zstd with and without Fletcher32, reads alternated, best of five.
        checked, plain = checksum_cost(Path(d), sems, dets, args.images, repeat=CHECKSUM_REPEAT)
    forward_ms = args.forward_ms if args.forward_ms is not None else measure_forward_ms()
    source = "given" if args.forward_ms is not None else "measured: tiny panoptic_fpn, 1 CPU thread"

    print("\nTimes as wall / CPU of this thread (CPU time is what other processes on the machine cannot inflate).")
    print(f"{'':32s}" + "".join(f"{c:>18s}" for c in COMPRESSIONS) + "   zstd/gzip (wall, CPU)")
    rows = [
        ("size of one image (MB)", "size_mb", "<= 2"),
        ("write per image (ms, median)", "write_ms", ""),
        (f"instances of {args.images} images (s)", "instances_s", "<= 5"),
        ("semantic read (images/s)", "semantic_images_per_s", ">= 50"),
        ("full read (images/s)", "full_images_per_s", ""),
    ]
    for label, key, target in rows:
        vals = [results[c][key] for c in COMPRESSIONS]
        if isinstance(vals[0], tuple):
            cells = "".join(f"{w:>10.2f} / {c:<6.2f}" for w, c in vals)
            ratio = f"{vals[0][0] / vals[1][0]:.2f}, {vals[0][1] / vals[1][1]:.2f}"
        else:
            cells = "".join(f"{v:>18.3f}" for v in vals)
            ratio = f"{vals[0] / vals[1]:.2f}"
        print(f"{label:32s}{cells}   {ratio}" + (f"   target {target}" if target else ""))
    for c in COMPRESSIONS:
        sizes = ", ".join(f"{k} {v / 1e3:.0f} kB" for k, v in sorted(results[c]["datasets"].items()))
        print(f"{c} datasets: {sizes}")
    print(f"\nforward time ({source}): {forward_ms:.0f} ms/image")
    for c in COMPRESSIONS:
        w = results[c]["write_ms"][0]
        print(f"{c}: write ({w:.1f} ms wall) adds {100 * w / forward_ms:.1f} % to prediction (target <= 10 %); "
              f"writing adds 10 % to a forward of {10 * w:.0f} ms")
    print(f"\nFletcher32 checksum (zstd), reads alternated, best of {CHECKSUM_REPEAT}, CPU time (wall in parentheses); target <= 10 % slower:")
    cost = {}
    for label, key, slower_is in (("instances read", "instances_s", "time"), ("semantic read", "semantic_images_per_s", "rate"), ("full read", "full_images_per_s", "rate")):
        (cw, cc), (pw, pc) = checked[key], plain[key]
        ratio_cpu, ratio_wall = (cc / pc, cw / pw) if slower_is == "time" else (pc / cc, pw / cw)
        cost[key] = ratio_cpu - 1
        print(f"  {label:16s} checksummed {cc:8.3f} vs plain {pc:8.3f} ({'s' if slower_is == 'time' else 'images/s'}): "
              f"{100 * (ratio_cpu - 1):+.1f} % ({100 * (ratio_wall - 1):+.1f} % wall)")
    extra_us = 1e6 * (checked["instances_s"][1] - plain["instances_s"][1]) / args.images
    print(f"  the instance reads' checksum cost per image: {extra_us:.0f} us of CPU (the absolute figure behind the ratio)")
    print(f"  size of one image: {checked['size_mb']:.3f} MB checksummed vs {plain['size_mb']:.3f} MB plain")
    z = results["zstd"]
    return {
        "checksum_read_cost_instances": cost["instances_s"],
        "checksum_read_cost_semantic": cost["semantic_images_per_s"],
        "checksum_read_cost_full": cost["full_images_per_s"],
        "size_mb": z["size_mb"],
        "write_ms": z["write_ms"][0],
        "instances_seconds": z["instances_s"][0],
        "semantic_images_per_second": z["semantic_images_per_s"][0],
        "forward_ms": forward_ms,
        "write_overhead": z["write_ms"][0] / forward_ms,
    }


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
