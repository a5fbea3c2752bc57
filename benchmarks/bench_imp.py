"""Benchmark of the Instance Mask Projection operator (`segfusion.models.imp`).

Setting (Cityscapes-like): 100 detections with 28 x 28 masks, 19 classes, a 1024 x 2048
image projected at stride 4 onto a 256 x 512 canvas; forward + backward (the backward is
fed a fixed random canvas gradient, so no loss op is timed), one CPU thread. Box sides are log-uniform in [16, 512] image pixels
(aspect ratio 0.5-2), centred anywhere in the image, so some boxes stick out of it.

Both backends are timed: ``compiled`` (numba, the CPU default) and ``torch`` (vectorised,
the CUDA path). The reference is the loop-over-instances-and-cells implementation from
``tests/models/test_imp.py`` (loaded from that file so both measure the same code).

    python benchmarks/bench_imp.py [--device cpu|cuda] [--repeats 20] [--reference-repeats 2]

Wall time and this thread's CPU time are both printed (other processes may share the cores).
On virtual machines a good part of the time is first-touch page faults of the freshly
allocated 10 MB output (glibc returns large blocks to the OS); running with
``MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=100000000000`` shows the cost
without them.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import math
import statistics
import time
from pathlib import Path

import torch

from segfusion.models.imp import instance_mask_projection

NUM_INSTANCES = 100
NUM_CLASSES = 19
IMAGE_HW = (1024, 2048)
STRIDE = 4
MASK_SIZE = 28


def load_reference():
    path = Path(__file__).resolve().parents[1] / "tests" / "models" / "test_imp.py"
    spec = importlib.util.spec_from_file_location("_imp_reference", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module.reference_imp


def make_inputs(seed: int = 0, device: str = "cpu"):
    gen = torch.Generator().manual_seed(seed)
    h, w = IMAGE_HW
    side = torch.exp(math.log(16) + torch.rand(NUM_INSTANCES, generator=gen) * math.log(512 / 16))
    aspect = torch.exp((torch.rand(NUM_INSTANCES, generator=gen) - 0.5) * 2 * math.log(2))
    bw, bh = side * aspect.sqrt(), side / aspect.sqrt()
    cx, cy = torch.rand(NUM_INSTANCES, generator=gen) * w, torch.rand(NUM_INSTANCES, generator=gen) * h
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
    labels = torch.randint(0, NUM_CLASSES, (NUM_INSTANCES,), generator=gen)
    scores = torch.rand(NUM_INSTANCES, generator=gen)
    masks = torch.rand(NUM_INSTANCES, MASK_SIZE, MASK_SIZE, generator=gen)
    return [t.to(device) for t in (labels, scores, masks, boxes)]


def run_once(fn, labels, scores, masks, boxes, weight) -> tuple[float, float, torch.Tensor]:
    """One forward + backward; returns wall ms, this thread's CPU ms, and the mask gradient.

    The backward gets ``weight`` as the canvas gradient directly, so no loss op is timed.
    CPU time is reported because other processes may share the machine's cores.
    """
    scores = scores.clone().requires_grad_(True)
    masks = masks.clone().requires_grad_(True)
    if masks.is_cuda:
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.thread_time()
    out = fn(labels, scores, masks, boxes, NUM_CLASSES, weight.shape[1:], STRIDE)
    out.backward(weight)
    if masks.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1000, (time.thread_time() - c0) * 1000, masks.grad


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--reference-repeats", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    labels, scores, masks, boxes = make_inputs(device=args.device)
    canvas_hw = (IMAGE_HW[0] // STRIDE, IMAGE_HW[1] // STRIDE)
    weight = torch.rand(NUM_CLASSES, *canvas_hw, generator=torch.Generator().manual_seed(1)).to(args.device)
    reference = load_reference()

    backends = ["torch"] + (["compiled"] if args.device == "cpu" else [])
    timings: dict[str, tuple[list[float], list[float], torch.Tensor]] = {}
    for backend in backends:
        fn = functools.partial(instance_mask_projection, backend=backend)
        runs = [run_once(fn, labels, scores, masks, boxes, weight) for _ in range(args.repeats + 2)][2:]
        timings[backend] = ([r[0] for r in runs], [r[1] for r in runs], runs[-1][2])
    on_cpu = [t.cpu() for t in (labels, scores, masks, boxes)]
    refs = [run_once(reference, *on_cpu, weight.cpu()) for _ in range(args.reference_repeats)]
    ref_wall, ref_cpu = [r[0] for r in refs], [r[1] for r in refs]
    rw, rc = statistics.median(ref_wall), statistics.median(ref_cpu)

    side = boxes[:, 2:] - boxes[:, :2]
    print(
        f"IMP forward+backward, {NUM_INSTANCES} instances, {NUM_CLASSES} classes, masks {MASK_SIZE}x{MASK_SIZE}, "
        f"canvas {canvas_hw[0]}x{canvas_hw[1]} (stride {STRIDE} of {IMAGE_HW[0]}x{IMAGE_HW[1]}), "
        f"device {args.device}, threads {torch.get_num_threads()}"
    )
    print(f"box sides: median {side.median().item():.0f} px, max {side.max().item():.0f} px (image pixels)")
    result: dict[str, float] = {"reference_ms": rw, "reference_cpu_ms": rc}
    for backend, (wall, cpu, grad) in timings.items():
        fw, fc = statistics.median(wall), statistics.median(cpu)
        same = torch.allclose(grad.cpu(), refs[-1][2], atol=1e-6)
        print(
            f"{backend + ':':10s} wall median {fw:8.2f} ms (min {min(wall):7.2f}) | thread CPU median {fc:8.2f} ms "
            f"(min {min(cpu):7.2f}) | {len(wall)} runs | {rw / fw:6.1f}x faster than the reference "
            f"| gradients equal to reference: {same} | target <= 10 ms: {'met' if fw <= 10 else 'MISSED'}"
        )
        result.update({f"{backend}_ms": fw, f"{backend}_cpu_ms": fc, f"{backend}_speedup": rw / fw})
    print(
        f"reference: wall median {rw:8.2f} ms                | thread CPU median {rc:8.2f} ms | {len(refs)} runs"
    )
    if "compiled" in timings:
        ratio = statistics.median(timings["torch"][0]) / statistics.median(timings["compiled"][0])
        print(f"compiled vs torch backend: {ratio:.1f}x")
    return result


if __name__ == "__main__":
    main()
