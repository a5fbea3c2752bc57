"""The aggregate step's inputs as pure functions of the config (report.smk)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from segfusion.report.workflow_inputs import gallery_choice, plot_subcategory, report_inputs, report_paths

CONFIG = {
    "datasets": {"micro": {"eval_splits": ["val", "test"]}},
    "models": ["maskrcnn_imp", "panoptic_fpn", "panoptic_fpn_imp"],
    "seeds": [0, 1],
    "predict": {"shards": 2},
}
FUSIONS = {"maskrcnn_imp": ["semantic"], "panoptic_fpn": ["semantic", "kirillov", "kirillov@overlap_threshold=0.3"], "panoptic_fpn_imp": ["semantic", "kirillov", "kirillov@overlap_threshold=0.3"]}


def _fusions(m):
    return FUSIONS[m]


def _stage2(m):
    return m != "maskrcnn_imp"


def test_paths_cover_losses_splits_and_shards():
    p = report_paths(CONFIG, _fusions, _stage2)
    assert "results/micro/models/maskrcnn/seed1/stage1_loss.csv" in p["losses"]
    assert "results/micro/models/panoptic_fpn_imp/seed0/stage2_loss.csv" in p["losses"]
    assert not any("maskrcnn_imp" in x for x in p["losses"])
    assert len(p["losses"]) == 2 * 3
    assert p["data"] == ["results/micro/data/val"]  # first eval split only
    assert "results/micro/fused/panoptic_fpn/seed0/kirillov/val/shard-1-of-2" in p["fused"]
    assert not any("@" in x or "seed1" in x for x in p["fused"])  # no sweeps, first seed only
    assert len(p["fused"]) == len(set(p["fused"])) == 2 * (1 + 2 + 2)


def test_gallery_default_and_override():
    assert gallery_choice(CONFIG, _fusions) == ("panoptic_fpn_imp", "kirillov")
    cfg = {**CONFIG, "report": {"gallery_model": "panoptic_fpn", "gallery_fusion": "semantic"}}
    assert gallery_choice(cfg, _fusions) == ("panoptic_fpn", "semantic")
    with pytest.raises(ValueError, match="gallery_fusion 'jsis'"):
        gallery_choice({**CONFIG, "report": {"gallery_fusion": "jsis"}}, _fusions)
    spec = report_inputs(CONFIG, _fusions, _stage2)
    assert spec["gallery"][0]["model"] == "panoptic_fpn_imp" and spec["gallery"][0]["images"] == 4


def test_no_qualitative_images_means_no_qualitative_inputs():
    cfg = {**CONFIG, "report": {"qualitative_images": 0}}
    spec = report_inputs(cfg, _fusions, _stage2)
    assert spec["qualitative"] == [] and spec["gallery"] == [] and spec["loss_curves"]
    assert report_paths(cfg, _fusions, _stage2)["fused"] == []


def test_plot_subcategory():
    assert plot_subcategory(SimpleNamespace(kind="boundary")).startswith("Accuracy near boundaries")
    assert plot_subcategory(SimpleNamespace(name="metrics_bars")) == "Metric bars"


def test_per_dataset_models_select_losses_grid_and_gallery():
    cfg = {**CONFIG, "datasets": {"micro": {"eval_splits": ["val"]}, "small": {"eval_splits": ["val"], "models": ["panoptic_fpn"]}}}
    spec = report_inputs(cfg, _fusions, _stage2)
    small_losses = {c["model"] for c in spec["loss_curves"] if c["dataset"] == "small"}
    assert small_losses == {"maskrcnn", "panoptic_fpn"}
    grids = {q["dataset"]: {v["model"] for v in q["variants"]} for q in spec["qualitative"]}
    assert grids == {"micro": {"maskrcnn_imp", "panoptic_fpn", "panoptic_fpn_imp"}, "small": {"panoptic_fpn"}}
    assert {g["dataset"]: g["model"] for g in spec["gallery"]} == {"micro": "panoptic_fpn_imp", "small": "panoptic_fpn"}
    # a configured gallery model that does not run on a dataset draws no gallery there
    spec = report_inputs({**cfg, "report": {"gallery_model": "panoptic_fpn_imp"}}, _fusions, _stage2)
    assert [g["dataset"] for g in spec["gallery"]] == ["micro"]
