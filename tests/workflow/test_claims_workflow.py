"""Claims and pairs in the workflow: the micro run writes the claims table; a pair reuses the caches
(fuse/evaluate/gather only); a shared stage 1 is trained once per dataset."""

import copy
import shutil

import pandas as pd

from tests.conftest import MICRO_CONFIG, run_snakemake
from tests.workflow.test_incremental import planned_jobs

PAIR = {"indep": {"instances": "maskrcnn_imp", "semantic": "panoptic_fpn"}}


def test_micro_run_writes_the_claims_table_csv_and_forest_plot(micro_run):
    summary = micro_run / "results" / "summary"
    md = (summary / "claims.md").read_text()
    assert "## micro / val (street)" in md and "| `imp_t4_things` |" in md
    assert "needs ≥ 3 seeds" in md  # one seed: the effect is shown, no verdict
    assert "not run (needs models: + panoptic_asp_rp)" in md and "## Claims for data this run does not have" in md
    df = pd.read_csv(summary / "claims.csv")
    things = df[(df.claim == "imp_t4_things") & (df.dataset == "micro")].iloc[0]
    assert things.n_seeds == 1 and things.verdict == "needs ≥ 3 seeds" and pd.notna(things["mean"])
    assert pd.notna(things.bootstrap_lo)  # per-image statistics reached the gathered metrics
    assert (summary / "plots" / "claims-micro.png").stat().st_size > 1000


def test_a_pair_adds_only_fusion_and_evaluation_jobs(micro_run):
    cfg = copy.deepcopy(MICRO_CONFIG)
    cfg["pairs"] = PAIR
    assert planned_jobs(micro_run, cfg) == {"fuse": 5, "evaluate": 5, "gather": 5, "aggregate": 1, "all": 1}


def test_shared_stage1_trains_one_detector_for_every_seed(micro_run):
    cfg = copy.deepcopy(MICRO_CONFIG)
    cfg["seeds"] = [0, 1]
    cfg["shared_stage1"] = True
    jobs = planned_jobs(micro_run, cfg)
    assert "train_stage1" not in jobs  # seed 1 reuses seed 0's detector, which exists
    assert jobs["train_stage2"] == 2 and jobs["predict"] == 3  # seed 1's heads and predictions only
    cfg["shared_stage1"] = False
    assert planned_jobs(micro_run, cfg)["train_stage1"] == 1


def test_pair_end_to_end(micro_run, tmp_path):
    """A pair is fused, evaluated and tabulated like a model, from the two models' caches (in a copy of the micro run)."""
    work = tmp_path / "w"
    shutil.copytree(micro_run, work, symlinks=True)
    cfg = copy.deepcopy(MICRO_CONFIG)
    cfg["pairs"] = PAIR
    import yaml

    (work / "pair.yaml").write_text(yaml.safe_dump(cfg))
    run_snakemake(work, "--cores", "2", configfile="pair.yaml")
    m = pd.read_csv(work / "results" / "summary" / "metrics.csv")
    pair = m[m.model == "indep"]
    assert set(pair.fusion) == {"semantic", "kirillov", "seamless", "jsis", "costea"}
    # the pair's semantic output is panoptic_fpn's, its raw detections maskrcnn_imp's
    def value(model, fusion, metric):
        return m[(m.model == model) & (m.fusion == fusion) & (m.metric == metric)].value.iloc[0]

    assert value("indep", "semantic", "miou") == value("panoptic_fpn", "semantic", "miou")
    assert value("indep", "kirillov", "ap_mask_before_fusion") == value("maskrcnn_imp", "semantic", "ap_mask_before_fusion")
    fused = work / "results" / "micro" / "fused" / "indep" / "seed0" / "kirillov" / "val" / "shard-0-of-1" / "panoptic.json"
    meta = __import__("json").loads(fused.read_text())["meta"]
    assert meta["semantic_cache"].endswith("predictions/panoptic_fpn/seed0/val/shard-0-of-1.h5")
