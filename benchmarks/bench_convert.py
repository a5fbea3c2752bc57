"""Benchmark of the dataset converters (`segfusion.datasets.registry.convert`): images per second.

Setting: for each format, ``--num`` generated images of ``--size`` (default 40 of
256 × 512), converted into a canonical split once with one process and once with two
worker processes (`convert_split`'s ProcessPoolExecutor). Timed: the whole `convert`
call (finding samples, reading, conversion, PNG and JSON writing, atomic rename);
data generation is not timed. One BLAS/OpenMP thread per process.

Data per format:

* ``cityscapes``: the ``street`` synthetic flavour (labelIds + instanceIds PNGs);
* ``cityscapes/panoptic``: the same data through cityscapesscripts' createPanopticImgs;
* ``vcp``: the ``clothing`` synthetic flavour (connected components -> instances);
* ``coco_panoptic``: the canonical conversion of the clothing data re-exported in the
  COCO-panoptic layout (JSON + RGB id PNGs + image folder);
* ``modanet``: random polygon garments (13 categories, 4-10 instances, 16-vertex
  star-shaped polygons) on noise images, rasterised with pycocotools.

    python benchmarks/bench_convert.py [--num 40] [--size 256x512] [--seed 0]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from segfusion.datasets.modanet import MODANET_CATEGORIES  # noqa: E402
from segfusion.datasets.registry import convert  # noqa: E402
from segfusion.datasets.synthetic import synthesize_street  # noqa: E402
from segfusion.datasets.synthetic_clothing import synthesize_clothing  # noqa: E402
from segfusion.io.images import write_png  # noqa: E402

SPLIT = "val"


def make_coco_panoptic(clothing_raw: Path, root: Path) -> Path:
    """COCO-panoptic raw layout from the canonical conversion of the clothing data."""
    canonical = root / "canonical_for_coco"
    with contextlib.redirect_stderr(io.StringIO()):
        convert("vcp", clothing_raw, SPLIT, canonical)
    data = json.loads((canonical / "panoptic.json").read_text())
    raw = root / "coco"
    (raw / SPLIT).mkdir(parents=True)
    shutil.copytree(canonical / "panoptic", raw / f"panoptic_{SPLIT}")
    for im in data["images"]:
        shutil.copy(canonical / im.pop("image_path"), raw / SPLIT / im["file_name"])
    (raw / f"panoptic_{SPLIT}.json").write_text(json.dumps(data))
    return raw


def make_modanet(root: Path, num: int, size: tuple[int, int], seed: int) -> Path:
    """ModaNet-style JSON of random star-shaped polygon garments, and noise images."""
    h, w = size
    raw = root / "modanet"
    images, anns = [], []
    for k in range(num):
        rng = np.random.default_rng([seed, k])
        name = f"{k:07d}.jpg"
        write_png(raw / "images" / name, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        images.append({"id": k, "file_name": name, "height": h, "width": w})
        for _ in range(int(rng.integers(4, 11))):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            r = rng.uniform(0.05, 0.3) * h * (1 + 0.4 * np.sin(np.linspace(0, 6 * np.pi, 16, endpoint=False) + rng.uniform(0, 6)))
            t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
            poly = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1).ravel().round(1).tolist()
            anns.append({"id": len(anns) + 1, "image_id": k, "category_id": int(rng.integers(1, 14)), "segmentation": [poly], "iscrowd": 0})
    cats = [{"id": i, "name": n, "supercategory": "fashion"} for i, n, _ in MODANET_CATEGORIES]
    (raw / f"modanet2018_instances_{SPLIT}.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return raw


def _time(fmt: str, raw: Path, out: Path, workers: int, options: dict) -> float:
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # tqdm bars
        convert(fmt, raw, SPLIT, out, workers=workers, options=options)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=40)
    ap.add_argument("--size", default="256x512", help="HxW")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv if argv is not None else [])
    size = tuple(int(v) for v in a.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="bench_convert_") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):
            synthesize_street(root / "street", SPLIT, a.num, size, a.seed)
            synthesize_clothing(root / "clothing", SPLIT, a.num, size, a.seed)
        from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

        with contextlib.redirect_stdout(io.StringIO()):
            convert2panoptic(str(root / "street" / "gtFine"), str(root / "street" / "gtFine"), setNames=[SPLIT])
        cases = [
            ("cityscapes", root / "street", {}),
            ("cityscapes/panoptic", root / "street", {"source": "panoptic"}),
            ("vcp", root / "clothing", {}),
            ("coco_panoptic", make_coco_panoptic(root / "clothing", root), {}),
            ("modanet", make_modanet(root, a.num, size, a.seed), {}),
        ]
        load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
        print(f"{a.num} images of {size[0]}x{size[1]} per format (data generated in {time.perf_counter() - t0:.1f} s); cpus: {os.cpu_count()}, load average: {load}")
        print(f"{'format':<22}{'1 proc img/s':>14}{'2 workers img/s':>17}{'speed-up':>10}")
        for label, raw, options in cases:
            fmt = label.split("/")[0]
            t1 = _time(fmt, raw, root / "out1", 1, options)
            t2 = _time(fmt, raw, root / "out2", 2, options)
            print(f"{label:<22}{a.num / t1:>14.1f}{a.num / t2:>17.1f}{t1 / t2:>9.2f}x", flush=True)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
