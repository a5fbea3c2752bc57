"""Benchmark of training-data loading at Cityscapes size: one loading thread against DataLoader
worker processes (`segfusion.training.loop.loaded`, config ``train.data_workers``).

Setting: ``--images`` synthetic street scenes of 1024 x 2048 (`synthesize_street`, converted with
the cityscapes converter), the cityscapes_imp training input (presets/cityscapes_imp.yaml: multi-scale resize to a short
side drawn from 512-2048, then a random 512 x 1024 crop, horizontal flip and colour jitter 0.4;
`segfusion.training.stage.training_data`),
global batches of ``--batch`` (16, the IMP paper's). Each batch is what `_load_batch` returns
for one iteration: PNG decoding, instance targets, resize, crop and flip.

For each worker count (0 = the loading thread of the training process, the path before
DataLoader workers) it times ``--batches`` consecutive batches as the training loop consumes
them, with nothing else to do (a training step of zero cost), and prints the median seconds
per batch and the ratio to the thread. A step is never slower than its loading with a worker
count w when w workers load a batch within the step time (the workers run ``w`` batches at
once): the printed "step time this covers" is seconds per batch, which must be below a GPU
step of the preset for loading not to be the bottleneck.

First, the resize step of one sample at every scale: the crop's window only
(`resize_crop_sample`) against the whole sample resized and then cut (the path before it), in
the same run.

    python benchmarks/bench_loading.py [--images 8] [--batch 16] [--batches 4] [--workers 0,1,2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

SIZE = (1024, 2048)
SCALES = (512, 724, 1024, 1448, 2048)  # presets/cityscapes_imp.yaml architecture.min_size


def make_data(root: Path, images: int) -> Path:
    from segfusion.datasets.registry import convert
    from segfusion.datasets.synthetic import synthesize_street

    synthesize_street(root / "raw", "train", images, SIZE, seed=0)
    convert("cityscapes", root / "raw", "train", root / "train")
    return root / "train"


def time_batches(data_dir: Path, batch: int, batches: int, workers: int) -> list[float]:
    """Seconds between consecutive batches as `loaded` delivers them (the first one included)."""
    import torch  # noqa: F401  (imported before forking the workers, as in training)

    from segfusion.datasets.canonical import CanonicalSplit
    from segfusion.datasets.torch_dataset import PanopticTrainingData
    from segfusion.specs import Augmentation, Schedule, TrainSpec
    from segfusion.training.distributed import DistContext
    from segfusion.training.loop import _load_batch, loaded

    split = CanonicalSplit(data_dir)
    aug = Augmentation(hflip=True, color_jitter=0.4, hue_jitter=0.4, crop_size=(512, 1024))
    spec = TrainSpec(Schedule(iterations=batches, lr=0.01), batch_size=batch, augmentation=aug)
    data = PanopticTrainingData(split, aug, scales=SCALES, max_size=4096)
    ctx = DistContext()
    times, t = [], time.perf_counter()
    for _ in loaded(lambda i: _load_batch(data, spec, i, ctx), range(batches), workers):
        now = time.perf_counter()
        times.append(now - t)
        t = now
    return times


def resize_step_ms(data_dir: Path, repeats: int = 3) -> list[tuple[int, float, float, float]]:
    """Per training scale: median ms of the resize step of one sample, the crop's window only
    (`resize_crop_sample`, today's path) against resizing the whole sample and then cutting the
    crop (the path before it: torch ``interpolate`` of the image, nearest indexing of the two
    label maps), and of a whole `PanopticTrainingData.sample` at that scale; one thread."""
    import numpy as np
    import torch

    from segfusion.datasets.canonical import CanonicalSplit
    from segfusion.datasets.torch_dataset import (
        PanopticTrainingData,
        _nearest_taps,
        resize_crop_sample,
        scaled_size,
    )
    from segfusion.specs import Augmentation

    torch.set_num_threads(1)
    split = CanonicalSplit(data_dir)
    rec = split.images[0]
    image, pan = split.image(rec), split.panoptic(rec)
    labels = (pan.segment_ids, pan.semantic)

    def whole_then_crop(size, crop):
        img = torch.from_numpy(image).permute(2, 0, 1).float()[None]
        img = torch.nn.functional.interpolate(img, size=size, mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
        ys, xs = _nearest_taps(SIZE[0], size[0], 0, size[0]), _nearest_taps(SIZE[1], size[1], 0, size[1])
        y0, x0, h, w = crop
        return [a[y0 : y0 + h, x0 : x0 + w] for a in (img, *(m[ys[:, None], xs[None, :]] for m in labels))]

    def median_ms(fn, *args) -> float:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn(*args)
            times.append(time.perf_counter() - t)
        return 1000 * statistics.median(times)

    out = []
    aug = Augmentation(hflip=True, color_jitter=0.4, hue_jitter=0.4, crop_size=(512, 1024))
    for scale in SCALES:
        size = scaled_size(SIZE, scale, 4096)
        crop = (size[0] - 512) // 2, (size[1] - 1024) // 2, 512, 1024
        window = median_ms(resize_crop_sample, size, crop, image, *labels)
        whole = median_ms(whole_then_crop, size, crop)
        data = PanopticTrainingData(split, aug, scales=(scale,), max_size=4096)
        sample = median_ms(data.sample, 0, np.random.default_rng(0))
        out.append((scale, window, whole, sample))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--workers", default="0,1,2")
    a = p.parse_args(argv if argv is not None else sys.argv[1:])
    counts = [int(w) for w in a.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp), a.images)
        print("resize step of one sample (one thread, median of 3): the crop's window vs the whole sample resized, then cut")
        rows = resize_step_ms(data)
        for scale, window, whole, sample in rows:
            print(f"  short side {scale:4d}: window {window:6.1f} ms, whole then crop {whole:6.1f} ms ({whole / window:5.1f}x); "
                  f"whole sample {sample:6.1f} ms")
        mean_sample = statistics.mean(r[3] for r in rows)
        mean_saved = statistics.mean(r[2] - r[1] for r in rows)
        print(f"  mean over the scales: sample {mean_sample:.0f} ms, {mean_saved:.0f} ms saved per sample "
              f"({(mean_sample + mean_saved) / mean_sample:.2f}x faster loading)")
        print(f"{a.batches} batches of {a.batch} images, {SIZE[0]}x{SIZE[1]} resized to a short side in {SCALES} and cropped to 512x1024")
        base = None
        for w in counts:
            times = time_batches(data, a.batch, a.batches, w)
            median = statistics.median(times)
            base = base or median
            label = "thread" if w == 0 else f"{w} worker(s)"
            print(f"  {label:12s} median {median:6.2f} s/batch ({a.batch / median:5.1f} images/s), "
                  f"first batch {times[0]:5.2f} s, ratio to the thread {base / median:4.2f}x")


if __name__ == "__main__":
    main()
