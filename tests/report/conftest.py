"""Fixtures of the report tests: hand-made gathered metrics JSONs and a small fused run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

CLASSES = ["road", "car", "person"]


def make_result(model: str, fusion: str, seed: int, *, pq: float, miou: float, iou: list[float] | None = None,
                dataset: str = "toy", split: str = "val", ci: float = 0.05, boundary_shift: float = 0.0,
                efficiency: dict | None = None, fusion_ms: float | None = 2.0, per_image: list[dict] | None = None) -> dict:  # fmt: skip
    """A gathered metrics JSON as `segfusion gather` writes it, with controllable numbers."""
    iou = iou if iou is not None else [miou] * len(CLASSES)
    edges = [0, 2, 4, 8]
    within = [{"lo": 0.0, "hi": e, "miou": min(1.0, 0.3 + 0.1 * k + boundary_shift), "macc": min(1.0, 0.4 + 0.1 * k), "pixels": 10, "iou": iou}
              for k, e in enumerate(edges[1:] + [None])]  # fmt: skip
    metrics = {
        "n_images": 3, "miou": miou, "macc": miou + 0.05, "pixel_acc": 0.9, "miou_things": miou, "miou_stuff": miou,
        "pq": pq, "sq": 0.8, "rq": pq / 0.8, "pq_things": pq - 0.05, "pq_stuff": pq + 0.05, "pq_dagger": pq + 0.01,
        "ap_box": 0.2, "ap_mask": 0.18, "ap_box_before_fusion": 0.25, "ap_mask_before_fusion": 0.22,
        "miou_most_frequent_class": 0.11, "forward_ms_per_image": 40.0 + seed, "detections_per_image": 5.0,
        "pq_ci": [max(0.0, pq - ci), min(1.0, pq + ci)], "miou_ci": [max(0.0, miou - ci), min(1.0, miou + ci)],
    }  # fmt: skip
    if fusion_ms is not None:
        metrics["fusion_ms_per_image"] = fusion_ms
    details: dict = {
        "semantic": {"miou": miou, "iou": iou},
        "panoptic": {"pq": pq, "per_class": {c: {"pq": pq} for c in CLASSES}},
        "boundary": {"bins": within, "within": within, "n_images": 3},
        "per_image": per_image if per_image is not None else [{"image": f"img{k}", "pq": pq - 0.1 * k, "miou": miou} for k in range(3)],
    }
    if efficiency is not None:
        metrics["parameters"], metrics["flops"] = efficiency["parameters"], efficiency["flops"]
        details["efficiency"] = efficiency
    assert all(not isinstance(v, float) or not math.isnan(v) for v in metrics.values())
    return {"meta": {"dataset": dataset, "model": model, "fusion": fusion, "split": split, "seed": seed}, "metrics": metrics, "details": details}


def write_results(tmp: Path, results: list[dict]) -> list[str]:
    paths = []
    for k, r in enumerate(results):
        p = tmp / f"m{k}.json"
        p.write_text(json.dumps(r))
        paths.append(str(p))
    return paths


@pytest.fixture
def toy_results() -> list[dict]:
    """Two seeds of panoptic_fpn (+ IMP) with semantic and kirillov fusions, plus a sweep."""
    return toy_results_list()


def toy_results_list() -> list[dict]:
    """The results of the `toy_results` fixture (a fresh copy)."""
    eff = {"parameters": 830_248, "flops": 3_145_476_480, "flops_image_hw": [64, 128]}
    out = []
    for seed in (0, 1):
        for fusion, fms in (("semantic", 0.5), ("kirillov", 3.0), ("kirillov@overlap_threshold=0.3", 3.1), ("kirillov@overlap_threshold=0.7", 2.9)):
            out.append(make_result("panoptic_fpn", fusion, seed, pq=0.5 + 0.1 * seed, miou=0.6, iou=[0.5, 0.6, 0.7],
                                   efficiency={**eff, "parameters": 787_656}, fusion_ms=fms))  # fmt: skip
            out.append(make_result("panoptic_fpn_imp", fusion, seed, pq=0.55 + 0.1 * seed, miou=0.65, iou=[0.7, 0.4, 0.7],
                                   boundary_shift=0.05, efficiency=eff, fusion_ms=fms))  # fmt: skip
    return out


def write_loss_csv(path: Path, n: int = 60, scale: float = 1.0) -> Path:
    lines = ["iteration,lr,loss,loss_mask,seconds"]
    for i in range(n):
        lines.append(f"{i},0.01,{scale * 3.0 / (1 + 0.1 * i)},{scale * 1.0 / (1 + 0.05 * i)},0.1")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
