"""Qualitative figures: image | ground truth | each variant's fused semantic map, and the worst images.

Like IMP Fig. 2 (images, then the semantic output of each model side by side) and the
qualitative rows of Seamless Fig. 4. Semantic maps are drawn with the dataset palette
(`ClassInfo.colors`, read from the canonical split's ``classes.json``); void / ignore (255)
is black. Large images are subsampled (nearest, every k-th pixel) to at most
``MAX_SIDE`` pixels per side before drawing.

Specs (plain dicts, built by `segfusion.report.workflow_inputs`):

* grid: ``{"dataset", "split", "data": canonical split dir, "images": N, "variants":
  [{"model", "fusion", "seed", "fused": [shard dirs]}]}``; the first N images by image id;
* gallery: ``{"dataset", "split", "data", "model", "fusion", "seed", "fused": [...],
  "images": N}``; the N images of lowest per-image PQ (``details.per_image`` of the gathered
  metrics), ties broken by name.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from segfusion.datasets.canonical import CanonicalSplit
from segfusion.io.images import read_image
from segfusion.report.plots import pyplot, save
from segfusion.types import ClassInfo

MAX_SIDE = 512
PANEL_INCHES = 2.4


def palette(classes: ClassInfo) -> np.ndarray:
    """(256, 3) uint8 lookup table: class index -> colour, everything else (void 255) black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: classes.num_classes] = np.asarray(classes.colors, dtype=np.uint8).reshape(-1, 3)
    return lut


def colorize(semantic: np.ndarray, classes: ClassInfo) -> np.ndarray:
    """(H, W) class-index map -> (H, W, 3) uint8 RGB with the dataset palette."""
    sem = np.asarray(semantic)
    if sem.dtype != np.uint8:
        sem = np.where((sem >= 0) & (sem < 256), sem, 255).astype(np.uint8)
    return palette(classes)[sem]


def _subsample(a: np.ndarray) -> np.ndarray:
    step = max(1, math.ceil(max(a.shape[:2]) / MAX_SIDE))
    return a[::step, ::step]


def fused_semantic_path(shards: list[str], name: str) -> Path | None:
    """The ``semantic/{name}.png`` of whichever shard directory holds the image (None if none)."""
    for shard in shards:
        p = Path(shard) / "semantic" / f"{name}.png"
        if p.exists():
            return p
    return None


def _draw_rows(rows: list[dict], columns: list[str], classes: ClassInfo, title: str, path: Path) -> Path:
    """Draw a grid: ``rows`` = [{"label", "panels": [(H, W, 3) array or None]}], a class legend below.

    Axes are placed at fixed positions (inches), so the figure has no empty margins whatever
    the number of rows and columns; each row's label is written in its first panel.
    """
    plt = pyplot()
    from matplotlib.patches import Patch

    h, w = next(p for r in rows for p in r["panels"] if p is not None).shape[:2]
    pw = PANEL_INCHES
    ph = pw * h / max(w, 1)
    gap, side, top = 0.05, 0.1, 0.75
    legend_cols = min(10, classes.num_classes)
    legend_h = 0.2 + 0.2 * math.ceil(classes.num_classes / legend_cols)
    ncol, nrow = len(columns), len(rows)
    fig_w = 2 * side + ncol * pw + (ncol - 1) * gap
    fig_h = top + nrow * ph + (nrow - 1) * gap + legend_h
    fig = plt.figure(figsize=(fig_w, fig_h))
    for i, row in enumerate(rows):
        for j, panel in enumerate(row["panels"]):
            x0 = side + j * (pw + gap)
            y0 = fig_h - top - (i + 1) * ph - i * gap
            ax = fig.add_axes((x0 / fig_w, y0 / fig_h, pw / fig_w, ph / fig_h))
            ax.set_xticks([])
            ax.set_yticks([])
            if panel is None:
                ax.set_facecolor("0.8")
                ax.text(0.5, 0.5, "missing", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(panel, interpolation="nearest", aspect="auto")
            if i == 0:
                ax.set_title(columns[j], fontsize=7)
            if j == 0:
                ax.text(0.02, 0.97, row["label"], transform=ax.transAxes, ha="left", va="top", fontsize=6,
                        bbox={"facecolor": "white", "alpha": 0.75, "pad": 1.5, "edgecolor": "none"})  # fmt: skip
    handles = [Patch(color=np.asarray(c) / 255.0, label=n) for n, c in zip(classes.names, classes.colors)]
    fig.legend(handles=handles, loc="lower center", ncol=legend_cols, fontsize=6, frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(title, fontsize=9, y=1 - 0.12 / fig_h, va="top")
    return save(fig, path)


def plot_qualitative(spec: dict, path: Path) -> Path | None:
    """Image | ground truth | every variant's fused semantic map, for the first N images."""
    n = int(spec.get("images", 4))
    variants = spec.get("variants", [])
    if n <= 0 or not variants:
        return None
    split = CanonicalSplit(spec["data"])
    records = sorted(split.images, key=lambda r: r.image_id)[:n]
    if not records:
        return None
    rows = []
    for rec in records:
        panels = [_subsample(split.image(rec)), _subsample(colorize(split.semantic(rec), split.classes))]
        for v in variants:
            p = fused_semantic_path(v["fused"], rec.name)
            panels.append(None if p is None else _subsample(colorize(read_image(p), split.classes)))
        rows.append({"label": rec.name, "panels": panels})
    columns = ["image", "ground truth"] + [f"{v['model']}\n{v['fusion']}" for v in variants]
    seed = variants[0].get("seed")
    return _draw_rows(rows, columns, split.classes, f"{spec['dataset']} / {spec['split']}, seed {seed}: semantic maps", path)


def worst_images(per_image: list[dict], n: int, key: str = "pq") -> list[dict]:
    """The ``n`` entries of lowest ``key`` (entries without a value are skipped; ties by name)."""
    scored = [r for r in per_image if r.get(key) is not None]
    return sorted(scored, key=lambda r: (r[key], str(r["image"])))[:n]


def plot_worst(spec: dict, per_image: list[dict], path: Path) -> Path | None:
    """Gallery of the images with the lowest per-image PQ for one model / fusion."""
    n = int(spec.get("images", 4))
    worst = worst_images(per_image, n)
    if n <= 0 or not worst:
        return None
    split = CanonicalSplit(spec["data"])
    rows = []
    for entry in worst:
        rec = split.record(str(entry["image"]))
        p = fused_semantic_path(spec["fused"], rec.name)
        panels = [
            _subsample(split.image(rec)),
            _subsample(colorize(split.semantic(rec), split.classes)),
            None if p is None else _subsample(colorize(read_image(p), split.classes)),
        ]
        miou = entry.get("miou")
        label = f"{rec.name}: PQ {100 * entry['pq']:.1f}" + ("" if miou is None else f", mIoU {100 * miou:.1f}")
        rows.append({"label": label, "panels": panels})
    title = f"{spec['dataset']} / {spec['split']}: lowest per-image PQ, {spec['model']} / {spec['fusion']}, seed {spec.get('seed')}"
    return _draw_rows(rows, ["image", "ground truth", "prediction"], split.classes, title, path)
