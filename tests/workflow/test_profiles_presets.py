"""Cluster profile and real-data presets: each plans the full DAG with `snakemake -n`."""

import shutil

import pytest
import yaml

from segfusion.config import validate_config
from segfusion.datasets.synthetic import synthesize_street
from tests.conftest import MICRO_CONFIG, REPO, run_snakemake

PRESETS = sorted((REPO / "presets").glob("*.yaml"))
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def _fake_raw(fmt: str, root):
    """A tiny raw dataset of the preset's format (dry-run only needs it to exist and be listable)."""
    root.mkdir(parents=True, exist_ok=True)
    if fmt == "cityscapes":
        synthesize_street(root, "train", 1, (32, 64), 0)
        synthesize_street(root, "val", 1, (32, 64), 0)
    else:
        (root / "README").write_text(f"fake {fmt} dataset for a dry run\n")
    return root


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_validates_and_plans_whole_dag(preset, tmp_path):
    cfg = yaml.safe_load(preset.read_text())
    validate_config(yaml.safe_load(preset.read_text()), SCHEMA, source=str(preset))
    for name, d in cfg["datasets"].items():
        d["raw"] = str(_fake_raw(d["format"], tmp_path / "raw" / name))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = run_snakemake(tmp_path, "-n", "--quiet", "rules", timeout=180)
    out = proc.stdout + proc.stderr
    for rule in ("convert", "train_stage1", "predict", "fuse", "evaluate", "gather", "aggregate"):
        assert rule in out, (rule, out[-2000:])
    if any(m not in ("maskrcnn_imp",) for m in cfg["models"]):
        assert "train_stage2" in out


def _slurm_dry_run(tmp_path) -> str:
    """The output of `snakemake --profile profiles/slurm -n` on the micro config."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(MICRO_CONFIG))
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    proc = run_snakemake(tmp_path, "--profile", str(tmp_path / "profiles" / "slurm"), "-n", timeout=180)
    return proc.stdout + proc.stderr


def test_slurm_profile_plans_the_full_workflow(tmp_path):
    out = _slurm_dry_run(tmp_path)
    assert "train_stage2" in out and "aggregate" in out and "Nothing to be done" not in out
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["set-resources"]["train_stage1"]["gpu"] == 1


def _dry_run_resources(out: str) -> dict[str, list[dict[str, str]]]:
    """{rule: [resources of each job]} from a dry run's job listing."""
    import re

    jobs: dict[str, list[dict[str, str]]] = {}
    for block in re.split(r"\n(?=rule |localrule )", out):
        head = re.match(r"(?:local)?rule (\w+):", block)
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        if head and res:
            jobs.setdefault(head[1], []).append(dict(kv.split("=", 1) for kv in res[1].split(", ")))
    return jobs


def test_slurm_profile_jobs_request_what_the_profile_sets(tmp_path):
    """The workflow profile (profiles/default) must not override the cluster profile's resources."""
    out = _slurm_dry_run(tmp_path)
    assert "workflow specific profile" in out  # profiles/default was applied too
    jobs = _dry_run_resources(out)
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    defaults = profile["default-resources"]
    assert {"train_stage1", "train_stage2", "predict", "fuse", "evaluate"} <= set(jobs)
    for rule, listed in jobs.items():
        # default-resources fill what a rule does not declare (rules declare mem_mb, runtime, gpu);
        # set-resources override both
        expected = {"cpus_per_task": defaults["cpus_per_task"], **profile["set-resources"].get(rule, {})}
        for resources in listed:
            for key, value in expected.items():
                if key != "slurm_partition":
                    assert resources.get(key) == str(value), (rule, key, resources)
    assert all(r["gpu"] == "1" for rule in ("train_stage1", "train_stage2", "predict") for r in jobs[rule])
    assert all(r["gpu"] == "0" for r in jobs["fuse"] + jobs["evaluate"])
