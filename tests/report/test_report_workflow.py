"""End to end (slow): the micro Snakemake run's summary, and `snakemake --report` over it."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import run_snakemake

pytestmark = pytest.mark.slow


def test_summary_of_the_micro_run(micro_run):
    s = micro_run / "results" / "summary"
    figures = {p.name for p in (s / "plots").glob("*.png")}
    for name in ("metrics_bars.png", "boundary-micro_val.png", "iou_delta-micro_val_panoptic_fpn_imp.png", "loss-micro.png", "qualitative-micro_val.png"):
        assert name in figures and (s / "plots" / name).stat().st_size > 5000, name
    assert any(f.startswith("worst-micro_val_") for f in figures)
    df = pd.read_csv(s / "metrics.csv")
    # the model's cost travelled predict -> cache -> evaluate -> gather -> aggregate
    params = df[(df.metric == "parameters") & (df.model == "panoptic_fpn_imp")].value.to_numpy()
    flops = df[(df.metric == "flops") & (df.model == "panoptic_fpn_imp")].value.to_numpy()
    assert len(params) == len(flops) > 0 and (params > 1e4).all() and (flops > params).all()
    assert (df[df.metric == "fusion_ms_per_image"].value > 0).all()
    ci_lo = df[df.metric == "pq_ci_lo"].set_index(["model", "fusion"]).value
    pq = df[df.metric == "pq"].set_index(["model", "fusion"]).value
    ci_hi = df[df.metric == "pq_ci_hi"].set_index(["model", "fusion"]).value
    assert ((ci_lo <= pq + 1e-12) & (pq <= ci_hi + 1e-12)).all()
    tables = (s / "tables.md").read_text()
    assert "### Efficiency" in tables and "64×128" in tables
    per_image = pd.read_csv(s / "per_image.csv")
    assert len(per_image[(per_image.model == "panoptic_fpn") & (per_image.fusion == "kirillov")]) == 3
    assert json.loads((s / "provenance.json").read_text())["figures"]


def test_snakemake_report_holds_tables_and_figures(micro_run):
    proc = run_snakemake(micro_run, "--report", "report.html", timeout=120)
    html = (micro_run / "report.html").read_text()
    for name in ("tables.md", "metrics.csv", "metrics_bars.png", "qualitative-micro_val.png", "loss-micro.png"):
        assert name in proc.stdout + proc.stderr and name in html, name
    assert "Accuracy near boundaries (IMP Fig. 5)" in html and "Training loss" in html
