"""The smoke overlay of a preset: a --configfile layered over it that cuts only what keeps the
network and the image sizes (iterations, images, seeds, shards, batch), and points real-data
folders at generated raw data of the preset's format and real image size.

Pure: takes the preset's config, returns the overlay and the raw data to write.
"""

from __future__ import annotations

from dataclasses import dataclass

ITERATIONS = 2
"""Training iterations per stage (a preset's 0, a skipped stage, stays 0)."""
BATCH = 1
"""Images per training iteration (the real batches of the R50/R101 presets do not fit 24 GB on the CPU)."""
IMAGES = {"train": 2, "eval": 1}
"""Images per split: the training split and every other split."""

REAL_SIZE = {
    "cityscapes": (1024, 2048),  # IMP Sec. 4.3: "All images are high-resolution (1024x2048)"
    "coco_panoptic": (480, 640),  # COCO's usual 640x480 (W x H); the largest side of COCO images is 640
    "modanet": (600, 400),  # ModaNet (IMP Sec. 4.2, "640x480 or smaller"): its Chictopia photos are 400 wide, 600 high
    "vcp": (1280, 720),  # IMP Sec. 4.1: "all images are 1280x720 pixels or higher"; full-body portraits
}
"""(H, W) of the real datasets, for presets whose raw data is a real-data folder."""


@dataclass(frozen=True)
class RawJob:
    """Raw data the driver writes before the workflow runs: ``num[split]`` images of ``size``."""

    dataset: str
    fmt: str
    root: str  # relative to the preset's work directory
    size: tuple[int, int]
    num: dict[str, int]


def splits_of(dataset: dict) -> list[str]:
    """The splits the workflow reads of a dataset (training, evaluation and validation splits)."""
    splits = [dataset.get("train_split", "train"), *dataset.get("eval_splits", ["val"])]
    if dataset.get("val_split"):
        splits.append(dataset["val_split"])
    return list(dict.fromkeys(splits))


def _counts(dataset: dict) -> dict[str, int]:
    train = dataset.get("train_split", "train")
    return {s: IMAGES["train"] if s == train else IMAGES["eval"] for s in splits_of(dataset)}


def _schedule(stage: dict, where: str) -> dict:
    try:
        iterations = int(stage["schedule"]["iterations"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{where}.schedule.iterations: missing or not an integer") from None
    return {
        # The preset's warm-up stays: the smoke's iterations are the preset's first ones. At the
        # full learning rate, the untrained networks of presets without pretrained weights
        # diverged within 2 iterations (cityscapes_seamless, coco_jsis: NaN weights). lr steps go
        # (they all lie after the cut).
        "schedule": {"iterations": min(iterations, ITERATIONS), "steps": []},
        "batch_size": BATCH,
    }


def smoke_overlay(preset: dict, source: str = "preset") -> tuple[dict, list[RawJob]]:
    """The overlay of ``preset`` (its parsed YAML; ``source`` names it in errors) and the raw data to write."""
    if not isinstance(preset.get("datasets"), dict) or not preset["datasets"]:
        raise ValueError(f"{source}: no datasets")
    datasets, jobs = {}, []
    for name, d in preset["datasets"].items():
        counts = _counts(d)
        if d.get("synthesize"):
            datasets[name] = {"synthesize": {"num": counts}}
            continue
        fmt = d.get("format")
        if fmt not in REAL_SIZE:
            raise ValueError(f"{source}: datasets.{name}.format {fmt!r} has no real image size in benchmarks/smoke/overlay.py REAL_SIZE")
        root = f"raw/{name}"
        datasets[name] = {"raw": root}
        jobs.append(RawJob(name, fmt, root, REAL_SIZE[fmt], counts))
    overlay = {
        "datasets": datasets,
        "seeds": list(preset.get("seeds", [0]))[:1],
        "stage1": _schedule(preset.get("stage1", {"schedule": {"iterations": ITERATIONS}}), f"{source}: stage1"),
        "stage2": _schedule(preset.get("stage2", {"schedule": {"iterations": ITERATIONS}}), f"{source}: stage2"),
        "predict": {"shards": 1},
    }
    return overlay, jobs
