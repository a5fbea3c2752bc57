"""Peak memory of one training step per image, for a preset's architecture and training input,
and the per-GPU batch that fits 24, 40 and 80 GB.

Setting (default ``presets/cityscapes_imp.yaml``): the preset's ``architecture`` (R50-FPN,
Mask R-CNN heads; ``pretrained`` left out, since weights do not change the memory, but its
``norm: auto`` resolved as with them: frozen BatchNorm) on synthetic
street scenes of Cityscapes' 1024 x 2048 in the Cityscapes layout (19 classes), and the preset's
training input (IMP Sec. 4.3): each sample resized to a short side drawn from
``architecture.min_size`` (long side capped at ``max_size``), then cropped to
``stage2.augmentation.crop_size`` (`segfusion.training.stage.training_data`). Each scale is
measured on its own: the model is built with ``min_size`` = that one scale, so the scale draw
always picks it. Stage 2 trains ``panoptic_fpn_imp`` with the preset's ``stage2`` (nothing
frozen, IMP end to end, bootstrapping); stage 1 trains Mask R-CNN alone (``maskrcnn_imp``) with
the preset's ``stage1`` but stage 2's augmentation, since the preset skips stage 1 (0 iterations).

Measurement: each (stage, scale, batch) runs in a fresh process: build the model, the SGD
optimizer and the batch (`segfusion.training.loop._load_batch`), trim the heap, read VmRSS,
reset the kernel's high-water mark (``/proc/self/clear_refs`` 5), run one
`segfusion.training.loop._step` (forward, loss, backward, SGD step: gradients and momentum
buffers are allocated here) and read VmHWM. The step's memory is the peak RSS delta (not torch
profiler counts), with ``MALLOC_MMAP_THRESHOLD_`` fixed so large tensors are mmapped and freed
memory leaves the RSS, as a CUDA caching allocator's live bytes would.

Batch model: a step at batch B takes ``fixed + B * per_image``; per_image = delta(B=2) -
delta(B=1) at the same scale, fixed = weights + (delta(B=1) - per_image) (gradients, momentum,
batch-independent temporaries), at least weights + gradients + SGD momentum (3x the trainable
weights: the step's peak is in backward, where they may take memory freed by activations). Per-GPU batch = floor((G - fixed - context) / per_image) with a
CUDA context and allocator reserve of ``--cuda-context-gb`` (an assumption, default 1 GB). CPU
memory stands in for CUDA memory: cuDNN workspaces and allocator fragmentation are not in it.

    python -m benchmarks memory                     (all defaults)
    python benchmarks/bench_memory.py [--preset P] [--stages 1,2] [--scales 512,1024] [--batches 1,2] [--threads 2]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GPU_GB = (24, 40, 80)


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


def _reset_peak() -> None:
    """Release free heap to the OS and reset VmHWM to the current RSS (Linux >= 4.0)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    Path("/proc/self/clear_refs").write_text("5")


def measure_one(preset_path: str, data: str, stage: int, scale: int, batch: int, threads: int) -> dict:
    """One training step in this process; returns its memory and timing (JSON-able)."""
    import torch
    import yaml

    from segfusion.datasets.canonical import CanonicalSplit
    from segfusion.models.build import build_model
    from segfusion.specs import MODEL_PRESETS, ModelSpec, TrainSpec
    from segfusion.training.distributed import DistContext
    from segfusion.training.loop import _load_batch, _step
    from segfusion.training.stage import training_data

    torch.set_num_threads(threads)
    preset = yaml.safe_load(Path(preset_path).read_text())
    arch = {**preset["architecture"], "pretrained": None, "min_size": [scale]}
    if arch.get("norm", "auto") == "auto":  # what auto resolves to with the preset's pretrained weights
        arch["norm"] = "frozen_bn" if preset["architecture"].get("pretrained") else "bn"
    stage_cfg = dict(preset[f"stage{stage}"])
    if stage == 1:
        stage_cfg["augmentation"] = preset["stage2"].get("augmentation", {})
        stage_cfg.pop("freeze", None)
    stage_cfg["batch_size"] = batch
    spec = TrainSpec.from_dict(stage_cfg, where=f"{preset_path}: stage{stage}", seed=0)
    variant = MODEL_PRESETS["maskrcnn_imp" if stage == 1 else "panoptic_fpn_imp"]
    split = CanonicalSplit(data)
    model = build_model(variant, ModelSpec.from_dict(arch, where=f"{preset_path}: architecture"), split.classes)
    model.freeze(spec.freeze)
    data_set = training_data(model, split, spec)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=spec.schedule.lr, momentum=spec.schedule.momentum, weight_decay=spec.schedule.weight_decay)
    ctx = DistContext.current()
    samples = _load_batch(data_set, spec, 0, ctx)
    _reset_peak()
    before = _status_kb("VmRSS")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        row = _step(model, model, optimizer, spec, 0, samples, ctx, Path(tmp) / "last.pt")
    seconds = time.perf_counter() - t0
    peak = _status_kb("VmHWM")
    return {
        "stage": stage, "scale": scale, "batch": batch,
        "input_hw": [list(img.shape[-2:]) for img, _ in samples],
        "instances": [int(t["labels"].numel()) for _, t in samples],
        "params_mb": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20,
        "trainable_mb": sum(p.numel() * p.element_size() for p in params) / 2**20,
        "rss_before_mb": before / 1024, "peak_mb": peak / 1024, "delta_mb": (peak - before) / 1024,
        "step_s": seconds, "loss": row["loss"],
    }


def make_data(root: Path, num: int, size: tuple[int, int]) -> Path:
    """A canonical split of ``num`` synthetic street scenes of ``size`` (Cityscapes layout, 19 classes)."""
    from segfusion.datasets.registry import convert
    from segfusion.datasets.synthetic import synthesize_street

    synthesize_street(root / "raw", "train", num, size, 0)
    convert("cityscapes", root / "raw", "train", root / "data")
    return root / "data"


def run_child(args: list[str]) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one", *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_memory --one {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fit(rows: list[dict], context_gb: float) -> list[dict]:
    """Per (stage, scale): per-image and fixed memory from batches 1 and 2, and the batch per GPU size."""
    out = []
    keys = sorted({(r["stage"], r["scale"]) for r in rows})
    for stage, scale in keys:
        by_batch = {r["batch"]: r for r in rows if (r["stage"], r["scale"]) == (stage, scale)}
        if 1 not in by_batch or 2 not in by_batch:
            continue
        one, two = by_batch[1], by_batch[2]
        per_image = max(two["delta_mb"] - one["delta_mb"], 1.0)
        # at least weights, gradients and momentum: the step's peak (in backward) may reuse freed activations for them
        fixed = max(one["params_mb"] + one["delta_mb"] - per_image, one["params_mb"] + 2 * one["trainable_mb"])
        fits = {g: max(0, math.floor((g * 1024 - context_gb * 1024 - fixed) / per_image)) for g in GPU_GB}
        out.append({"stage": stage, "scale": scale, "delta1_mb": one["delta_mb"], "delta2_mb": two["delta_mb"], "per_image_mb": per_image,
                    "fixed_mb": fixed, "fits": fits, "instances": one["instances"] + two["instances"], "step_s": one["step_s"]})
    return out


def markdown(fits: list[dict], context_gb: float) -> str:
    lines = ["| stage | short side (then crop) | step delta B=1 / B=2 (GB) | per image (GB) | fixed (GB) | "
             + " | ".join(f"batch/GPU {g} GB" for g in GPU_GB) + " |",
             "| --- | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in GPU_GB) + " |"]
    for f in fits:
        lines.append(f"| {f['stage']} | {f['scale']} | {f['delta1_mb'] / 1024:.2f} / {f['delta2_mb'] / 1024:.2f} | {f['per_image_mb'] / 1024:.2f} | "
                     f"{f['fixed_mb'] / 1024:.2f} | " + " | ".join(str(f["fits"][g]) for g in GPU_GB) + " |")
    lines.append(f"\nfixed = max(weights + delta B=1 - per image, weights + gradients + momentum); "
                 f"batch = floor((GPU - {context_gb:g} GB context - fixed) / per image)")
    return "\n".join(lines)


def _write(out: str, rows: list[dict], a) -> list[dict]:
    fits = fit(rows, a.cuda_context_gb)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({"rows": rows, "fits": fits, "preset": a.preset, "threads": a.threads}, indent=1))
    return fits


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default=str(REPO / "presets" / "cityscapes_imp.yaml"))
    p.add_argument("--stages", default="2,1")
    p.add_argument("--scales", default="", help="short sides (default: the preset's architecture.min_size)")
    p.add_argument("--stage1-scales", default="", help="short sides of stage 1 (default: --scales)")
    p.add_argument("--batches", default="1,2")
    p.add_argument("--size", default="1024x2048", help="HxW of the synthetic images (Cityscapes)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--cuda-context-gb", type=float, default=1.0)
    p.add_argument("--out", default=str(REPO / "results" / "bench_memory.json"))
    p.add_argument("--one", nargs=6, metavar=("PRESET", "DATA", "STAGE", "SCALE", "BATCH", "THREADS"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        preset, data, stage, scale, batch, threads = a.one
        print(json.dumps(measure_one(preset, data, int(stage), int(scale), int(batch), int(threads))))
        return
    import yaml

    preset = yaml.safe_load(Path(a.preset).read_text())
    scales = [int(s) for s in a.scales.split(",") if s] or list(preset["architecture"]["min_size"])
    batches = [int(b) for b in a.batches.split(",")]
    h, w = (int(v) for v in a.size.split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp), max(batches), (h, w))
        for stage in (int(s) for s in a.stages.split(",")):
            stage_scales = [int(s) for s in a.stage1_scales.split(",") if s] if stage == 1 and a.stage1_scales else scales
            for scale in stage_scales:
                for batch in batches:
                    row = run_child([a.preset, str(data), str(stage), str(scale), str(batch), str(a.threads)])
                    rows.append(row)
                    _write(a.out, rows, a)  # after every measurement: an interrupted run keeps what it measured
                    print(f"stage {stage} scale {scale} batch {batch}: input {row['input_hw']}, instances {row['instances']}, "
                          f"RSS before {row['rss_before_mb']:.0f} MB, peak {row['peak_mb']:.0f} MB, step +{row['delta_mb']:.0f} MB, "
                          f"{row['step_s']:.1f} s", flush=True)
    print(markdown(_write(a.out, rows, a), a.cuda_context_gb))
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
