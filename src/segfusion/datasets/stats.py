"""Dataset statistics of a canonical split: class frequencies, instance sizes, overlays.

``write_dataset_stats(split_dir, out_dir)`` writes (each file atomically):

* ``class_stats.csv``: per class, its pixel count and frequency (over labelled pixels,
  void excluded), the number of images containing it, the number of instances
  (non-crowd thing segments) and of crowd segments. Frequencies read straight from the
  semantic PNGs; counts from ``panoptic.json``.
* ``instance_sizes.csv``: one row per thing segment (image, segment id, class, area,
  bbox w and h, iscrowd, sqrt(area)).
* ``instance_sizes.png``: histograms of sqrt(area) per thing class on log-spaced bins,
  with COCO's small/medium/large limits (32², 96² pixels) marked: it shows at a glance
  how many instances a detector must find at 1/4 or 1/8 of its stride.
* ``overlays.png``: a grid of up to ``max_overlays`` images (evenly spaced through the
  split, so the choice is deterministic) with the ground-truth classes blended in
  ``ClassInfo.colors`` and segment boundaries drawn, to eyeball a conversion.

Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np

from segfusion.datasets.canonical import CanonicalSplit, image_name
from segfusion.io.atomic import atomic_path, read_json, save_figure

CLASS_FIELDS = ["class_index", "name", "category", "is_thing", "native_id", "pixels", "pixel_fraction", "images", "instances", "crowd_segments"]
SIZE_FIELDS = ["image", "segment_id", "class_index", "name", "area", "sqrt_area", "bbox_w", "bbox_h", "iscrowd"]


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def class_and_size_stats(split: CanonicalSplit) -> tuple[list[dict], list[dict]]:
    """(class rows, instance rows) as written to the two CSV files."""
    classes = split.classes
    n = classes.num_classes
    pixels = np.zeros(n, np.int64)
    images = np.zeros(n, np.int64)
    for rec in split.images:
        counts = np.bincount(split.semantic(rec).ravel(), minlength=256)[:n]
        pixels += counts
        images += counts > 0
    data = read_json(split.root / "panoptic.json")
    names = {int(im["id"]): image_name(im) for im in data["images"]}
    index = classes.index_of_id()
    instances = np.zeros(n, np.int64)
    crowds = np.zeros(n, np.int64)
    sizes = []
    for ann in data["annotations"]:
        for s in ann["segments_info"]:
            k = index[int(s["category_id"])]
            if not classes.is_thing[k]:
                continue
            crowd = bool(s.get("iscrowd", 0))
            (crowds if crowd else instances)[k] += 1
            sizes.append(
                {
                    "image": names.get(int(ann["image_id"])) or Path(ann.get("file_name", "")).stem,
                    "segment_id": int(s["id"]),
                    "class_index": k,
                    "name": classes.names[k],
                    "area": int(s["area"]),
                    "sqrt_area": round(math.sqrt(int(s["area"])), 3),
                    "bbox_w": int(s["bbox"][2]),
                    "bbox_h": int(s["bbox"][3]),
                    "iscrowd": int(crowd),
                }
            )
    total = max(int(pixels.sum()), 1)
    rows = [
        {
            "class_index": k,
            "name": classes.names[k],
            "category": classes.category[k],
            "is_thing": int(classes.is_thing[k]),
            "native_id": int(classes.ids[k]),
            "pixels": int(pixels[k]),
            "pixel_fraction": round(float(pixels[k]) / total, 6),
            "images": int(images[k]),
            "instances": int(instances[k]),
            "crowd_segments": int(crowds[k]),
        }
        for k in range(n)
    ]
    return rows, sizes


def _plot_sizes(path: Path, sizes: list[dict], split: CanonicalSplit) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    side = np.array([r["sqrt_area"] for r in sizes if not r["iscrowd"]], float)
    if len(side):
        bins = np.logspace(0, math.log10(max(side.max(), 2.0)) + 0.05, 30)
        things = split.classes.thing_indices.tolist()
        data = [[r["sqrt_area"] for r in sizes if r["class_index"] == k and not r["iscrowd"]] for k in things]
        keep = [i for i, d in enumerate(data) if d]
        ax.hist(
            [data[i] for i in keep],
            bins=bins,
            stacked=True,
            color=[np.array(split.classes.colors[things[i]]) / 255.0 for i in keep],
            label=[split.classes.names[things[i]] for i in keep],
        )
        ax.set_xscale("log")
        for limit, text in ((32, "small | medium"), (96, "medium | large")):
            ax.axvline(limit, color="k", ls="--", lw=0.8)
            ax.text(limit, ax.get_ylim()[1] * 0.95, f" {text}", fontsize=7, va="top")
        ax.legend(fontsize=7, ncol=2)
    else:
        ax.text(0.5, 0.5, "no instances", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("sqrt(instance area) [pixels]")
    ax.set_ylabel("instances")
    ax.set_title(f"{split.root.name}: {len(side)} instances")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def overlay(image: np.ndarray, segment_ids: np.ndarray, semantic: np.ndarray, colors: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8: ``image`` blended with the class colours, void left as is, segment borders dark."""
    out = image.astype(np.float32)
    valid = semantic < len(colors)
    out[valid] = (1 - alpha) * out[valid] + alpha * colors[semantic[valid]]
    edge = np.zeros(segment_ids.shape, bool)
    edge[:, 1:] |= segment_ids[:, 1:] != segment_ids[:, :-1]
    edge[1:, :] |= segment_ids[1:, :] != segment_ids[:-1, :]
    out[edge] *= 0.3
    return np.clip(out, 0, 255).astype(np.uint8)


def _plot_overlays(path: Path, split: CanonicalSplit, max_images: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(max_images, len(split))
    picks = sorted({int(round(i)) for i in np.linspace(0, len(split) - 1, n)}) if n else []
    cols = max(1, min(4, len(picks)))
    rows = max(1, math.ceil(len(picks) / cols))
    colors = np.array(split.classes.colors, np.float32)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), picks):
        rec = split.images[i]
        pan = split.panoptic(rec)
        ax.imshow(overlay(split.image(rec), pan.segment_ids, split.semantic(rec), colors))
        ax.set_title(f"{rec.name} ({len(pan.segments)} segments)", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def write_dataset_stats(split_dir: str | os.PathLike, out_dir: str | os.PathLike, max_overlays: int = 8) -> dict[str, Path]:
    """Write class_stats.csv, instance_sizes.csv/.png and overlays.png for ``split_dir`` into ``out_dir``."""
    split = CanonicalSplit(split_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, sizes = class_and_size_stats(split)
    paths = {
        "class_stats": out / "class_stats.csv",
        "instance_sizes": out / "instance_sizes.csv",
        "instance_sizes_plot": out / "instance_sizes.png",
        "overlays": out / "overlays.png",
    }
    _write_csv(paths["class_stats"], CLASS_FIELDS, rows)
    _write_csv(paths["instance_sizes"], SIZE_FIELDS, sizes)
    _plot_sizes(paths["instance_sizes_plot"], sizes, split)
    _plot_overlays(paths["overlays"], split, max_overlays)
    return paths
