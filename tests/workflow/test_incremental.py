"""Incremental reruns after a complete micro run: `snakemake -n` plans exactly what a change invalidates."""

import copy
import os
import re
from pathlib import Path

import pytest
import yaml

import segfusion.fusion.greedy
from tests.conftest import MICRO_CONFIG, run_snakemake


def planned_jobs(workdir: Path, cfg: dict) -> dict[str, int]:
    """{rule: job count} of a dry run with ``cfg`` (written to a side config file)."""
    path = workdir / "variant.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = run_snakemake(workdir, "-n", "--quiet", "rules", configfile="variant.yaml", timeout=180)
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^[ \t]*([a-z_0-9]+)[ \t]+(\d+)[ \t]*$", table, re.M)}


def test_no_change_nothing_to_do(micro_run):
    assert planned_jobs(micro_run, MICRO_CONFIG) == {}


def test_fusion_threshold_reruns_only_that_fusion(micro_run):
    cfg = copy.deepcopy(MICRO_CONFIG)
    cfg["fusion"]["params"]["kirillov"]["overlap_threshold"] = 0.3
    # Two models run kirillov (maskrcnn_imp only has the semantic output).
    assert planned_jobs(micro_run, cfg) == {"fuse": 2, "evaluate": 2, "gather": 2, "aggregate": 1, "all": 1}


def test_stage2_lr_reruns_stage2_and_downstream_only(micro_run):
    cfg = copy.deepcopy(MICRO_CONFIG)
    cfg["stage2"]["schedule"]["lr"] = 0.02
    jobs = planned_jobs(micro_run, cfg)
    assert jobs["train_stage2"] == 2 and jobs["predict"] == 2
    assert "train_stage1" not in jobs and "convert" not in jobs and "synthesize" not in jobs
    assert jobs["fuse"] == 10  # 2 models x 5 methods; maskrcnn_imp's predictions stay valid


def test_new_fusion_method_adds_only_its_jobs(micro_run):
    cfg = copy.deepcopy(MICRO_CONFIG)
    cfg["fusion"]["methods"] = ["semantic", "kirillov", "seamless", "jsis"]
    # Removing a method changes only the aggregate.
    assert planned_jobs(micro_run, cfg) == {"aggregate": 1, "all": 1}
    # Adding one the run never had (a sweep point is a new method variant) adds only its own
    # jobs: one fuse/evaluate/gather per model with instance fusion, and the aggregate.
    cfg_plus = copy.deepcopy(cfg)
    cfg_plus["fusion"]["methods"].append("costea")
    cfg_plus["sweeps"] = {"costea": {"score_threshold": [0.6]}}
    assert planned_jobs(micro_run, cfg_plus) == {"fuse": 2, "evaluate": 2, "gather": 2, "aggregate": 1, "all": 1}


@pytest.mark.parametrize(
    ("key", "value"),
    [("box_score_thresh", 0.3), ("detections_per_image", 50), ("test_min_size", 48), ("rpn_post_nms_top_n_test", 100)],
)
def test_a_test_time_setting_reruns_prediction_and_after_never_training(micro_run, key, value):
    cfg = copy.deepcopy(MICRO_CONFIG)
    cfg["inference"][key] = value
    jobs = planned_jobs(micro_run, cfg)
    assert "train_stage1" not in jobs and "train_stage2" not in jobs and "convert" not in jobs
    assert jobs["predict"] == 3 and jobs["fuse"] == 11 and jobs["evaluate"] == 11 and jobs["aggregate"] == 1


def test_one_splits_image_count_reruns_only_that_split(micro_run):
    cfg = copy.deepcopy(MICRO_CONFIG)
    cfg["datasets"]["micro"]["synthesize"]["num"]["val"] = 4
    jobs = planned_jobs(micro_run, cfg)
    # val: its synthesis, conversion and statistics, then prediction and everything after
    assert jobs["synthesize"] == 1 and jobs["convert"] == 1 and jobs["dataset_stats"] == 1
    assert jobs["predict"] == 3 and jobs["fuse"] == 11 and jobs["aggregate"] == 1
    assert "train_stage1" not in jobs and "train_stage2" not in jobs


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fusion": {"params": {"kirillov": {"overlap_treshold": 0.4}}}}, "fusion.params.kirillov.overlap_treshold: unknown parameter (did you mean overlap_threshold?)"),
        ({"fusion": {"params": {"kirillov": {"overlap_threshold": "high"}}}}, "fusion.params.kirillov.overlap_threshold: 'high' is not a number in [0, 1]"),
        ({"fusion": {"params": {"jsis": {"score_threshold": 2}}}}, "fusion.params.jsis.score_threshold: 2 is not a number in [0, 1]"),
        ({"sweeps": {"kirillov": {"overlap_treshold": [0.3]}}}, "sweeps.kirillov.overlap_treshold: unknown parameter (did you mean overlap_threshold?)"),
    ],
)
def test_fusion_config_errors_fail_the_dry_run_with_the_key_named(micro_run, change, message):
    cfg = copy.deepcopy(MICRO_CONFIG)
    for section, value in change.items():
        if section == "fusion":
            for method, params in value["params"].items():
                cfg["fusion"]["params"][method] = {**cfg["fusion"]["params"].get(method, {}), **params}
        else:
            cfg[section] = value
    path = micro_run / "variant.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = run_snakemake(micro_run, "-n", configfile="variant.yaml", check=False, timeout=180)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert "Job stats" not in proc.stdout + proc.stderr  # nothing was planned


def test_sweep_adds_one_job_per_point(micro_run):
    cfg = copy.deepcopy(MICRO_CONFIG)
    cfg["sweeps"] = {"kirillov": {"overlap_threshold": [0.3, 0.7]}}
    assert planned_jobs(micro_run, cfg) == {"fuse": 4, "evaluate": 4, "gather": 4, "aggregate": 1, "all": 1}


def test_editing_a_fusion_module_reruns_fusion_but_no_training(micro_run):
    """Snakemake >= 9.18 compares input checksums, so only a real edit counts (a bare touch does not)."""
    module = Path(segfusion.fusion.greedy.__file__)
    original, stat = module.read_bytes(), module.stat()
    try:
        module.write_bytes(original + b"\n# an edit\n")
        jobs = planned_jobs(micro_run, MICRO_CONFIG)
    finally:
        module.write_bytes(original)
        os.utime(module, (stat.st_atime, stat.st_mtime))
    assert "train_stage1" not in jobs and "train_stage2" not in jobs and "predict" not in jobs
    assert jobs["fuse"] == 11 and jobs["evaluate"] == 11 and jobs["aggregate"] == 1
