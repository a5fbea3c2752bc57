"""Shared fixtures: small synthetic data written once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def street_raw(tmp_path_factory):
    """Raw Cityscapes-layout synthetic street scenes: 6 train, 3 val, 64x128."""
    from segfusion.datasets.synthetic import synthesize_street

    raw = tmp_path_factory.mktemp("raw_street")
    synthesize_street(raw, "train", 6, (64, 128), seed=3)
    synthesize_street(raw, "val", 3, (64, 128), seed=3)
    return raw


@pytest.fixture(scope="session")
def street_canonical(street_raw, tmp_path_factory):
    """The canonical train split of ``street_raw``."""
    from segfusion.datasets.registry import convert

    out = tmp_path_factory.mktemp("canonical") / "train"
    convert("cityscapes", street_raw, "train", out)
    return out


REPO = __import__("pathlib").Path(__file__).resolve().parents[1]

MICRO_CONFIG = {
    "datasets": {
        "micro": {
            "format": "cityscapes",
            "raw": "results/raw/micro",
            "synthesize": {"flavour": "street", "size": [64, 128], "seed": 0, "num": {"train": 4, "val": 3}},
        }
    },
    "models": ["maskrcnn_imp", "panoptic_fpn", "panoptic_fpn_imp"],
    "architecture": {"min_size": [64], "max_size": 128},
    "inference": {"test_min_size": 64},
    "stage1": {"schedule": {"iterations": 4, "lr": 0.01}, "batch_size": 2, "checkpoint_every": 2},
    "stage2": {"schedule": {"iterations": 2, "lr": 0.01}, "batch_size": 2, "checkpoint_every": 2, "freeze": ["backbone", "rpn", "roi_heads"]},
    "predict": {"shards": 1, "batch_size": 2},
    "fusion": {"methods": ["semantic", "kirillov", "seamless", "jsis", "costea"], "params": {m: {"stuff_area_fraction": 0.002} for m in ["kirillov", "seamless", "jsis", "costea"]}},
    "threads": 1,
}


def run_snakemake(workdir, *args, configfile="config.yaml", check=True, timeout=900):
    """Run the repository's Snakefile in ``workdir`` with ``configfile``; returns CompletedProcess."""
    import subprocess
    import sys

    env = dict(os.environ)
    env["PATH"] = f"{REPO / '.venv' / 'bin'}:{os.path.dirname(sys.executable)}:{env['PATH']}"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(workdir / configfile), *args]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory):
    """One complete Snakemake run of the micro config, shared by every test that needs trained artefacts."""
    import yaml

    workdir = tmp_path_factory.mktemp("micro_run")
    (workdir / "config.yaml").write_text(yaml.safe_dump(MICRO_CONFIG))
    run_snakemake(workdir, "--cores", "2")
    return workdir
