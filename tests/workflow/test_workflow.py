"""End-to-end: Snakemake on the micro config; every declared output exists and is sane."""

import json

import pandas as pd
import pytest
import yaml

from segfusion.config import ConfigError, validate_config
from tests.conftest import MICRO_CONFIG, REPO, run_snakemake

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def test_complete_run_writes_every_output(micro_run):
    r = micro_run / "results"
    for split in ("train", "val"):
        assert (r / "micro" / "data" / split / "panoptic.json").exists()
    assert (r / "micro" / "models" / "maskrcnn" / "seed0" / "stage1.pt").exists()
    for model in ("panoptic_fpn", "panoptic_fpn_imp"):
        assert (r / "micro" / "models" / model / "seed0" / "stage2.pt").exists()
    fusions = {"maskrcnn_imp": ["semantic"], "panoptic_fpn": MICRO_CONFIG["fusion"]["methods"], "panoptic_fpn_imp": MICRO_CONFIG["fusion"]["methods"]}
    for model, methods in fusions.items():
        assert (r / "micro" / "predictions" / model / "seed0" / "val" / "shard-0-of-1.h5").exists()
        for fusion in methods:
            fused = r / "micro" / "fused" / model / "seed0" / fusion / "val" / "shard-0-of-1"
            assert len(list((fused / "panoptic").glob("*.png"))) == 3
            metrics = json.loads((r / "micro" / "metrics" / model / "seed0" / fusion / "val.json").read_text())
            assert metrics["meta"] == {"dataset": "micro", "model": model, "seed": 0, "fusion": fusion, "split": "val"}
            m = metrics["metrics"]
            assert m["n_images"] == 3
            for key in ("miou", "pq", "sq", "rq"):
                assert m[key] is None or 0.0 <= m[key] <= 1.0
    summary = r / "summary"
    df = pd.read_csv(summary / "metrics.csv")
    assert list(df.columns) == ["dataset", "model", "fusion", "split", "seed", "metric", "value"]
    assert set(df.model) == set(fusions) and set(df.fusion) == set(MICRO_CONFIG["fusion"]["methods"])
    tables = (summary / "tables.md").read_text()
    assert "Costea / Seamless Table 1" in tables and "IMP Table 1" in tables and "Trivial baseline" in tables
    assert (summary / "plots" / "metrics_bars.png").stat().st_size > 1000
    prov = json.loads((summary / "provenance.json").read_text())
    assert prov["seeds"] == [0] and prov["torch"] and prov["snakemake"] and prov["config_hash"]
    run_dirs = list((r / "micro" / "runs" / "maskrcnn" / "seed0").iterdir())
    assert len(run_dirs) == 1 and (run_dirs[0] / "loss.csv").exists()
    assert list((r / "logs").rglob("*.log"))


def test_nothing_to_do_after_a_complete_run(micro_run):
    proc = run_snakemake(micro_run, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_config_typo_names_the_key(tmp_path):
    cfg = json.loads(json.dumps(MICRO_CONFIG))
    cfg["stage2"]["schedul"] = cfg["stage2"].pop("schedule")
    with pytest.raises(ConfigError, match=r"unknown key 'schedul' at stage2 \(did you mean 'schedule'\?\)"):
        validate_config(cfg, SCHEMA)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = run_snakemake(tmp_path, "-n", check=False, timeout=120)
    assert proc.returncode != 0
    assert "unknown key 'schedul'" in proc.stdout + proc.stderr


def test_defaults_are_filled_and_values_checked():
    cfg = validate_config({"datasets": {"d": {"format": "cityscapes", "raw": "x"}}}, SCHEMA)
    assert cfg["stage2"]["freeze"] == ["backbone", "rpn", "roi_heads"]
    assert cfg["stage1"]["augmentation"]["hflip"] is True and cfg["datasets"]["d"]["eval_splits"] == ["val"]
    with pytest.raises(ConfigError, match="fusion.methods.0"):
        validate_config({"datasets": {"d": {"format": "cityscapes", "raw": "x"}}, "fusion": {"methods": ["kirilov"]}}, SCHEMA)


def test_default_config_is_valid():
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    validate_config(cfg, SCHEMA)
    assert {"panoptic_fpn", "panoptic_fpn_imp"} <= set(cfg["models"])


def _micro_config(**datasets_extra):
    cfg = json.loads(json.dumps(MICRO_CONFIG))
    cfg["datasets"]["micro"].update(datasets_extra)
    return cfg


def test_val_split_needs_a_synthetic_image_count():
    cfg = _micro_config(val_split="holdout")
    with pytest.raises(ConfigError, match=r"datasets.micro.synthesize.num has no image count for split\(s\) \['holdout'\]"):
        validate_config(cfg, SCHEMA)
    cfg["datasets"]["micro"]["synthesize"]["num"]["holdout"] = 2
    assert validate_config(cfg, SCHEMA)["datasets"]["micro"]["val_split"] == "holdout"


def test_validation_runs_on_the_held_out_split_and_warns_otherwise(tmp_path):
    # keep_best on the evaluated split is flagged; a held-out val_split is trained against
    # (converted, validated) but never evaluated.
    cfg = _micro_config()
    cfg["stage2"].update(validate_every=1, keep_best=True)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = run_snakemake(tmp_path, "-n", "-p", timeout=120)
    text = out.stdout + out.stderr
    assert "stage2.keep_best selects checkpoints on split 'val' of dataset 'micro'" in text
    assert "--val-data results/micro/data/val " in text

    cfg["datasets"]["micro"]["val_split"] = "holdout"
    cfg["datasets"]["micro"]["synthesize"]["num"]["holdout"] = 2
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = run_snakemake(tmp_path, "-n", "-p", timeout=120)
    text = out.stdout + out.stderr
    assert "keep_best selects" not in text
    assert "--val-data results/micro/data/holdout " in text
    assert "--split holdout" in text and "metrics/panoptic_fpn/seed0/kirillov/holdout.json" not in text
