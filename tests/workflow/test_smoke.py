"""`make smoke` without running it: every preset's smoke overlay keeps the preset's network and
image sizes, validates, and plans the whole DAG (`snakemake -n`); the measuring shim and the
table are checked on small commands. The real run is `make smoke` (README, "Smoke run")."""

import json
import sys

import pytest
import yaml

from benchmarks.smoke import measure
from benchmarks.smoke.__main__ import REPO, run_preset
from benchmarks.smoke.overlay import ITERATIONS, REAL_SIZE, smoke_overlay
from benchmarks.smoke.report import PresetResult, markdown, read_log, stage_of
from segfusion.config import validate_config

PRESETS = sorted((REPO / "presets").glob("*.yaml"))
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def _merge(base: dict, over: dict) -> dict:
    """Snakemake's merge of --configfile files: nested mappings updated key by key."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_overlay_keeps_network_and_image_size_and_cuts_training(preset):
    cfg = yaml.safe_load(preset.read_text())
    overlay, jobs = smoke_overlay(cfg, source=str(preset))
    merged = _merge(cfg, overlay)
    validate_config(json.loads(json.dumps(merged)), SCHEMA, source=f"{preset.name} + smoke overlay")
    assert merged["architecture"] == cfg["architecture"] and merged["models"] == cfg["models"]
    assert merged["inference"] == cfg.get("inference", merged["inference"])
    for stage in ("stage1", "stage2"):
        its = merged[stage]["schedule"]["iterations"]
        assert its <= ITERATIONS and (its > 0 or cfg[stage]["schedule"]["iterations"] == 0), (stage, its)
        # the preset's warm-up is kept: the smoke's iterations are the preset's first ones
        assert merged[stage]["schedule"].get("warmup_iters") == cfg[stage]["schedule"].get("warmup_iters"), stage
        assert merged[stage]["schedule"].get("warmup_factor") == cfg[stage]["schedule"].get("warmup_factor"), stage
        assert merged[stage].get("augmentation") == cfg[stage].get("augmentation")
    assert len(merged["seeds"]) == 1 and merged["predict"]["shards"] == 1
    for name, d in cfg["datasets"].items():
        if d.get("synthesize"):  # the generator's own size stays, only the counts are cut
            assert merged["datasets"][name]["synthesize"]["size"] == d["synthesize"]["size"]
            assert merged["datasets"][name]["raw"] == d["raw"]
        else:  # a real-data folder is replaced by generated data of the format's real size
            (job,) = [j for j in jobs if j.dataset == name]
            assert merged["datasets"][name]["raw"] == job.root != d["raw"]
            assert (job.fmt, job.size) == (d["format"], REAL_SIZE[d["format"]])


def test_overlay_names_the_preset_and_dataset_of_an_unknown_format():
    cfg = {"datasets": {"mine": {"format": "maps", "raw": "data/maps"}}, "stage1": {"schedule": {"iterations": 5}}}
    with pytest.raises(ValueError, match=r"my\.yaml: datasets\.mine\.format 'maps'"):
        smoke_overlay(cfg, source="my.yaml")


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_smoke_overlay_plans_the_whole_dag(preset, tmp_path):
    result = run_preset(preset, tmp_path, cores=2, dry_run=True)
    log = (tmp_path / preset.stem / "snakemake.log").read_text()
    assert result.ok, log[-3000:]
    for rule in ("convert", "train_stage1", "predict", "fuse", "evaluate", "gather", "aggregate"):
        assert f"rule {rule}:" in log or f"localrule {rule}:" in log, rule
    cfg = yaml.safe_load(preset.read_text())
    if any(m != "maskrcnn_imp" for m in cfg["models"]):
        assert "rule train_stage2:" in log
    assert "shard-0-of-1" in log and "seed1" not in log


def test_measure_records_peak_rss_wall_time_and_exit_code(tmp_path):
    log = tmp_path / "m.jsonl"
    grow = "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"
    assert measure.main([str(log), sys.executable, "-c", grow]) == 0
    assert measure.main([str(log), sys.executable, "-c", "import sys; sys.exit(3)"]) == 3
    small, failed = (json.loads(line) for line in log.read_text().splitlines())
    assert small["max_rss_mb"] >= 300 and small["rc"] == 0 and small["wall_s"] > 0
    assert failed["rc"] == 3 and failed["argv"] == ["-c", "import sys; sys.exit(3)"]


def test_report_groups_jobs_by_stage(tmp_path):
    log = tmp_path / "m.jsonl"
    records = [(["train", "--stage", "2", "--data", "d"], 3.0, 900.0), (["train", "--stage", "2"], 5.0, 1200.0),
               (["fuse", "--cache", "c"], 1.0, 80.0), (["-m", "benchmarks.smoke", "write-raw"], 2.0, 60.0)]
    log.write_text("".join(json.dumps({"argv": a, "rc": 0, "wall_s": w, "max_rss_mb": m}) + "\n" for a, w, m in records))
    result = read_log(PresetResult("p", "x 1x1", workflow_s=10.0, ok=True), log)
    assert stage_of(["train", "--stage", "1"]) == "stage 1" and stage_of(["convert"]) == "conversion"
    row = result.stages["stage 2"]
    assert (row.jobs, row.wall_s, row.max_wall_s, row.peak_rss_mb) == (2, 8.0, 5.0, 1200.0)
    table = markdown([result])
    assert table.index("| p | raw data |") < table.index("| p | stage 2 |") < table.index("| p | fuse |")
    assert "Total wall time (raw data + workflows): 12 s" in table
    log.write_text("not json\n")
    with pytest.raises(ValueError, match=r"m\.jsonl:1"):
        read_log(PresetResult("p", ""), log)
