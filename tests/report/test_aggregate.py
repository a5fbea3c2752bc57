"""`segfusion aggregate` on hand-made metrics JSONs: tables, figures, provenance."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from segfusion.cli import main
from segfusion.datasets.canonical import CanonicalSplit
from segfusion.io.fused import write_fused
from segfusion.report.aggregate import aggregate, tidy_rows
from segfusion.report.tables import cell, per_class_iou
from segfusion.types import Panoptic
from tests.report.conftest import make_result, write_loss_csv, write_results


def _assert_real_png(path, min_bytes=5000):
    """The file is a PNG of some size that is not one flat colour."""
    assert path.exists(), path
    assert path.stat().st_size > min_bytes, (path, path.stat().st_size)
    a = np.asarray(Image.open(path).convert("RGB"), dtype=float)
    assert a.shape[0] > 100 and a.shape[1] > 100 and a.std() > 5, path


def test_cell_mean_and_std_over_seeds():
    assert cell(pd.Series([0.5, 0.6])) == "55.0 ± 7.1"
    assert cell(pd.Series([0.5])) == "50.0"
    assert cell(pd.Series([np.nan])) == "–"


@pytest.fixture(scope="module")
def toy_summary(tmp_path_factory):
    """One aggregate run over the two-seed toy results (shared by the table tests)."""
    from tests.report.conftest import toy_results_list

    tmp = tmp_path_factory.mktemp("toy_summary")
    results = toy_results_list()
    df = aggregate(write_results(tmp, results), tmp / "summary", {"config": {"seeds": [0, 1]}})
    return df, (tmp / "summary" / "tables.md").read_text(), results


def test_two_seeds_give_mean_std_cells_and_tables(toy_summary):
    df, tables, _ = toy_summary
    # PQ of panoptic_fpn / kirillov: seeds 0.5 and 0.6 -> 55.0 ± 7.1
    row = next(line for line in tables.splitlines() if line.startswith("| val | panoptic_fpn | kirillov |"))
    assert "55.0 ± 7.1" in row
    # bootstrap interval cells: seed means of the bounds (0.45/0.55 and 0.55/0.65)
    assert "[50.0, 60.0]" in row
    # a quantity identical over seeds has no spread
    imp1 = next(line for line in tables.splitlines() if line.startswith("| val | panoptic_fpn_imp | 25.0"))
    assert "| 65.0 ± 0.0 |" in imp1 and "[60.0, 70.0]" in imp1
    for heading in ("IMP Table 1", "Costea / Seamless Table 1", "IMP Table 4", "Trivial baseline", "Efficiency", "Fusion parameter sweeps"):
        assert heading in tables, heading
    assert "config hash `" in tables
    assert set(df.seed) == {0, 1} and {"pq_ci_lo", "pq_ci_hi", "miou_ci_hi", "iou/car"} <= set(df.metric)


def test_imp_table4_delta_sign(toy_summary):
    df, tables, toy_results = toy_summary
    # road 0.5 -> 0.7 (+20.0), car 0.6 -> 0.4 (-20.0), person unchanged
    assert "| road | 50.0 ± 0.0 | 70.0 ± 0.0 | +20.0 |" in tables
    assert "| car | 60.0 ± 0.0 | 40.0 ± 0.0 | -20.0 |" in tables
    assert "| person | 70.0 ± 0.0 | 70.0 ± 0.0 | +0.0 |" in tables
    t = per_class_iou(tidy_rows(toy_results).query("fusion == 'semantic'"), "panoptic_fpn", "panoptic_fpn_imp")
    assert t.loc["road", "delta"] == pytest.approx(0.2) and t.loc["car", "delta"] == pytest.approx(-0.2)
    # the aggregate's own tidy rows carry the per-class IoUs: their seed means give the same
    # deltas as the input JSONs, recomputed here by hand
    sem = df[(df.fusion == "semantic") & df.metric.str.startswith("iou/")]
    assert len(sem) == 2 * 2 * 3  # 2 models x 2 seeds x 3 classes
    for k, name in enumerate(["road", "car", "person"]):
        mean = {}
        for model in ("panoptic_fpn", "panoptic_fpn_imp"):
            inputs = [r["details"]["semantic"]["iou"][k] for r in toy_results if r["meta"]["model"] == model and r["meta"]["fusion"] == "semantic"]
            assert len(inputs) == 2
            rows = sem[(sem.model == model) & (sem.metric == f"iou/{name}")]
            assert sorted(rows.value) == pytest.approx(sorted(inputs))
            mean[model] = sum(inputs) / len(inputs)
        delta = mean["panoptic_fpn_imp"] - mean["panoptic_fpn"]
        assert t.loc[name, "delta"] == pytest.approx(delta, abs=1e-12)
        assert per_class_iou(df[df.fusion == "semantic"], "panoptic_fpn", "panoptic_fpn_imp").loc[name, "delta"] == pytest.approx(delta, abs=1e-12)
        assert f"| {name} | {100 * mean['panoptic_fpn']:.1f} ± 0.0 | {100 * mean['panoptic_fpn_imp']:.1f} ± 0.0 | {100 * delta:+.1f} |" in tables


def test_efficiency_table(toy_summary):
    _, tables, _ = toy_summary
    eff = tables[tables.index("### Efficiency") :]
    header = next(line for line in eff.splitlines() if line.startswith("| model"))
    assert "parameters (M)" in header and "GFLOPs" in header and "kirillov ms/image" in header and "semantic ms/image" in header
    assert "@" not in header  # sweep variants are not efficiency columns
    imp = next(line for line in eff.splitlines() if line.startswith("| panoptic_fpn_imp |"))
    # 0.83 M parameters, 3.15 GFLOPs at 64×128, forward 40 and 41 ms over the two seeds, kirillov 3.0 ms
    assert "| 0.83 | 3.15 | 64×128 | 40.5 ± 0.7 |" in imp and "| 3.0 |" in imp
    base = next(line for line in eff.splitlines() if line.startswith("| panoptic_fpn |"))
    assert "| 0.79 |" in base


def test_trivial_baseline_row(toy_summary):
    _, tables, _ = toy_summary
    row = next(line for line in tables.splitlines() if line.startswith("| val | 11.0 |"))
    assert "65.0 (panoptic_fpn_imp /" in row


@pytest.fixture
def fused_run(street_canonical, tmp_path):
    """Two variants fused on the canonical split: the ground truth itself and a degraded copy."""
    split = CanonicalSplit(street_canonical)
    recs = sorted(split.images, key=lambda r: r.image_id)

    def degraded():
        for r in recs:
            p = split.panoptic(r)
            ids = p.segment_ids.copy()
            ids[ids == p.segments[0].id] = 0
            yield r.name, r.image_id, Panoptic(ids, p.segments[1:])

    gt_dir = tmp_path / "fused" / "gt" / "shard-0-of-2"
    write_fused(gt_dir, split.classes, ((r.name, r.image_id, split.panoptic(r)) for r in recs[:3]), meta={})
    write_fused(tmp_path / "fused" / "gt" / "shard-1-of-2", split.classes, ((r.name, r.image_id, split.panoptic(r)) for r in recs[3:]), meta={})
    write_fused(tmp_path / "fused" / "bad" / "shard-0-of-1", split.classes, degraded(), meta={})
    return split, recs


def test_every_figure_is_written(tmp_path, toy_results, fused_run):
    split, recs = fused_run
    names = [r.name for r in recs]
    # per-image PQ of the gallery's model: the last two images are the worst
    per_image = [{"image": n, "pq": 0.9 - 0.1 * k, "miou": 0.8} for k, n in enumerate(names)]
    for r in toy_results:
        if r["meta"]["model"] == "panoptic_fpn_imp" and r["meta"]["fusion"] == "kirillov" and r["meta"]["seed"] == 0:
            r["details"]["per_image"] = per_image
    losses = []
    for model, stage in (("maskrcnn", 1), ("panoptic_fpn", 2), ("panoptic_fpn_imp", 2)):
        for seed in (0, 1):
            losses.append({"dataset": "toy", "model": model, "seed": seed, "stage": stage,
                           "path": str(write_loss_csv(tmp_path / "loss" / f"{model}{seed}.csv", scale=1 + seed))})  # fmt: skip
    fused = lambda v: [str(p) for p in sorted((tmp_path / "fused" / v).iterdir())]  # noqa: E731
    inputs = {
        "loss_curves": losses,
        "qualitative": [{"dataset": "toy", "split": "val", "data": str(split.root), "images": 3,
                         "variants": [{"model": "gt", "fusion": "kirillov", "seed": 0, "fused": fused("gt")},
                                      {"model": "bad", "fusion": "jsis", "seed": 0, "fused": fused("bad")}]}],
        "gallery": [{"dataset": "toy", "split": "val", "data": str(split.root), "model": "panoptic_fpn_imp", "fusion": "kirillov",
                     "seed": 0, "images": 2, "fused": fused("bad")}],
    }  # fmt: skip
    config = {"fusion": {"params": {"kirillov": {"overlap_threshold": 0.5}}}, "sweeps": {"kirillov": {"overlap_threshold": [0.3, 0.7]}}}
    paths = write_results(tmp_path, toy_results)
    rc = main(["aggregate", *paths, "--out", str(tmp_path / "s"), "--params", json.dumps({"config": config, "inputs": inputs})])
    assert rc == 0
    plots = tmp_path / "s" / "plots"
    expected = [
        "metrics_bars.png", "boundary-toy_val.png", "iou_delta-toy_val_panoptic_fpn_imp.png", "loss-toy.png",
        "sweep-toy_val_kirillov_overlap_threshold.png", "qualitative-toy_val.png", "worst-toy_val_panoptic_fpn_imp_kirillov.png",
    ]  # fmt: skip
    for name in expected:
        _assert_real_png(plots / name)
    assert sorted(p.name for p in plots.glob("*.png")) == sorted(expected)
    prov = json.loads((tmp_path / "s" / "provenance.json").read_text())
    assert sorted(prov["figures"]) == sorted(expected) and prov["seeds"] == [0, 1]
    assert {"segfusion", "git_commit", "torch", "snakemake", "config_hash"} <= set(prov)
    per = pd.read_csv(tmp_path / "s" / "per_image.csv")
    assert set(per.image) >= set(names) and per.pq.between(0, 1).all()
    # the qualitative grid shows the images (not "missing" panels): the perfect variant equals the ground truth
    grid = np.asarray(Image.open(plots / "qualitative-toy_val.png").convert("RGB"))
    assert grid.shape[1] > grid.shape[0]  # 4 columns, 3 rows of 2:1 images


def test_gallery_of_an_unknown_variant_names_it(tmp_path, toy_results, fused_run):
    split, _ = fused_run
    inputs = {"gallery": [{"dataset": "toy", "split": "val", "data": str(split.root), "model": "nope", "fusion": "kirillov", "seed": 0, "images": 2, "fused": []}]}
    with pytest.raises(ValueError, match="nope / kirillov"):
        aggregate(write_results(tmp_path, toy_results), tmp_path / "s", {"inputs": inputs})


def test_stale_figures_are_removed_and_bad_json_is_named(tmp_path, toy_results):
    (tmp_path / "s" / "plots").mkdir(parents=True)
    (tmp_path / "s" / "plots" / "old-thing.png").write_bytes(b"x")
    aggregate(write_results(tmp_path, toy_results[:2]), tmp_path / "s", {})
    assert not (tmp_path / "s" / "plots" / "old-thing.png").exists()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"metrics": {}}))
    with pytest.raises(ValueError, match="bad.json"):
        aggregate([str(bad)], tmp_path / "s2", {})


def test_single_result_without_optional_parts(tmp_path):
    r = make_result("semantic_fpn", "semantic", 0, pq=0.3, miou=0.4, fusion_ms=None)
    del r["details"]["boundary"]
    aggregate(write_results(tmp_path, [r]), tmp_path / "s", {})
    tables = (tmp_path / "s" / "tables.md").read_text()
    row = next(line for line in tables.splitlines() if line.startswith("| val | semantic_fpn | semantic |"))
    assert "| 30.0 |" in row and "±" not in row
    assert "IMP Table 4" not in tables  # no IMP pair
    assert (tmp_path / "s" / "plots" / "metrics_bars.png").exists()
    assert not list((tmp_path / "s" / "plots").glob("boundary-*"))


def test_imp_table4_rows_follow_the_class_list(tmp_path):
    base = make_result("m", "semantic", 0, pq=0.3, miou=0.4, iou=[0.5, None, 0.2])
    imp = make_result("m_imp", "semantic", 0, pq=0.3, miou=0.4, iou=[0.6, 0.3, 0.1])
    aggregate(write_results(tmp_path, [base, imp]), tmp_path / "s", {})
    tables = (tmp_path / "s" / "tables.md").read_text()
    rows = [line.split("|")[1].strip() for line in tables[tables.index("IMP Table 4") :].splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1:4] == ["road", "car", "person"]  # class order, even though 'car' is missing for m
    assert "| car | – | 30.0 | – |" in tables and "| person | 20.0 | 10.0 | -10.0 |" in tables
