"""Benchmark of the Instance Mask Projection operator (`segfusion.models.imp`).

Setting (Cityscapes-like): 100 detections with 28 x 28 masks, 19 classes, a 1024 x 2048
image projected at stride 4 onto a 256 x 512 canvas; forward + backward (a weighted sum of
the canvas as loss), one CPU thread. Box sides are log-uniform in [16, 512] image pixels
(aspect ratio 0.5-2), centred anywhere in the image, so some boxes stick out of it.

The reference is the loop-over-instances-and-cells implementation from
``tests/models/test_imp.py`` (loaded from that file so both measure the same code).

    python benchmarks/bench_imp.py [--device cpu|cuda] [--repeats 20]
"""

from __future__ import annotations

import argparse
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


def run_once(fn, labels, scores, masks, boxes, weight) -> tuple[float, torch.Tensor]:
    scores = scores.clone().requires_grad_(True)
    masks = masks.clone().requires_grad_(True)
    if masks.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn(labels, scores, masks, boxes, NUM_CLASSES, weight.shape[1:], STRIDE)
    out.backward(weight)
    if masks.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1000, masks.grad


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

    # The loss weight costs the same for both; time it separately to show what the operator itself adds.
    fast_times = [
        run_once(instance_mask_projection, labels, scores, masks, boxes, weight)[0]
        for _ in range(args.repeats + 2)
    ][2:]
    cpu = [t.cpu() for t in (labels, scores, masks, boxes)]
    ref_times, ref_grad = [], None
    for _ in range(args.reference_repeats):
        t, ref_grad = run_once(reference, *cpu, weight.cpu())
        ref_times.append(t)
    _, fast_grad = run_once(instance_mask_projection, labels, scores, masks, boxes, weight)
    same = torch.allclose(fast_grad.cpu(), ref_grad, atol=1e-6)

    side = boxes[:, 2:] - boxes[:, :2]
    fast_ms, ref_ms = statistics.median(fast_times), statistics.median(ref_times)
    print(
        f"IMP forward+backward, {NUM_INSTANCES} instances, {NUM_CLASSES} classes, masks {MASK_SIZE}x{MASK_SIZE}, "
        f"canvas {canvas_hw[0]}x{canvas_hw[1]} (stride {STRIDE} of {IMAGE_HW[0]}x{IMAGE_HW[1]}), "
        f"device {args.device}, threads {torch.get_num_threads()}"
    )
    print(f"box sides: median {side.median().item():.0f} px, max {side.max().item():.0f} px (image pixels)")
    print(f"fast:      median {fast_ms:8.2f} ms  (min {min(fast_times):.2f}, {len(fast_times)} runs)")
    print(f"reference: median {ref_ms:8.2f} ms  ({len(ref_times)} runs)")
    print(f"speed-up:  {ref_ms / fast_ms:8.1f}x")
    print(f"gradients equal to reference: {same}")
    return {"fast_ms": fast_ms, "reference_ms": ref_ms, "speedup": ref_ms / fast_ms}


if __name__ == "__main__":
    main()
