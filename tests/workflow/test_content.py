"""End-to-end content checks of the micro run (issue 15, item 1).

Every fused output, metric and summary number the workflow wrote is recomputed in-process
from its inputs and must come out the same:

1. each cache re-fused with the method and parameters of ``MICRO_CONFIG`` (never those
   recorded in the output, so a CLI that runs the wrong method is caught) gives the fused
   shard byte for byte, and the written ids, classes and scores are those of the fusion's
   `Panoptic` (decoded here without the package's readers);
2. each fused shard re-evaluated and gathered gives the gathered metrics JSON exactly;
3. ``summary/metrics.csv`` and ``summary/tables.md`` carry those gathered numbers.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import MICRO_CONFIG

DATASET = "micro"
SPLITS = MICRO_CONFIG["datasets"][DATASET].get("eval_splits", ["val"])
SEEDS = MICRO_CONFIG.get("seeds", [0])
SHARDS = MICRO_CONFIG["predict"]["shards"]
# Models without a semantic head (maskrcnn_imp, head "none") only have the semantic output,
# as `fusions_for` in workflow/rules/common.smk decides; every other model runs every method.
SEMANTIC_ONLY = {"maskrcnn_imp"}
RUNS = [(model, fusion) for model in MICRO_CONFIG["models"] for fusion in (["semantic"] if model in SEMANTIC_ONLY else MICRO_CONFIG["fusion"]["methods"])]
JOBS = [(model, fusion, split, seed, shard) for model, fusion in RUNS for split in SPLITS for seed in SEEDS for shard in range(SHARDS)]
# Measured wall-clock times (fused panoptic.json meta, gathered metrics): they differ between
# two runs of the same computation, so they are the only values not compared.
TIMING_KEYS = {"fusion_ms_per_image", "forward_ms_per_image"}


GATHERS = sorted({job[:4] for job in JOBS})


def _ids(jobs):
    return ["-".join(str(v) for v in job) for job in jobs]


def configured_params(model: str, fusion: str) -> dict:
    """The fusion parameters the workflow must pass for (model, fusion), from MICRO_CONFIG."""
    method = fusion.split("@")[0]
    params = dict(MICRO_CONFIG["fusion"].get("params", {}).get(method, {}))
    if method == "semantic" and model in SEMANTIC_ONLY:
        # the canvas of maskrcnn_imp: maxima under the threshold are void (schema default 0.5)
        params = {"background_threshold": MICRO_CONFIG["fusion"].get("canvas_background_threshold", 0.5), **params}
    return params


def shard_paths(model, fusion, split, seed, shard):
    """(cache, fused dir, metric state, gathered metrics), relative to the run's directory."""
    part = f"shard-{shard}-of-{SHARDS}"
    r = f"results/{DATASET}"
    return (
        f"{r}/predictions/{model}/seed{seed}/{split}/{part}.h5",
        f"{r}/fused/{model}/seed{seed}/{fusion}/{split}/{part}",
        f"{r}/metrics/{model}/seed{seed}/{fusion}/{split}/{part}.json",
        f"{r}/metrics/{model}/seed{seed}/{fusion}/{split}.json",
    )


def drop_timings(obj):
    """``obj`` without the keys of TIMING_KEYS, at any depth."""
    if isinstance(obj, dict):
        return {k: drop_timings(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [drop_timings(v) for v in obj]
    return obj


def files_under(root: Path) -> list[str]:
    """Files of a fused shard, but Snakemake's marker of directory outputs (``.snakemake_timestamp``)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.startswith(".snakemake"))


def test_every_configured_variant_was_fused_and_gathered(micro_run):
    r = micro_run / "results" / DATASET
    for seed in SEEDS:
        for model in MICRO_CONFIG["models"]:
            expected = {f for m, f in RUNS if m == model}
            assert {p.name for p in (r / "fused" / model / f"seed{seed}").iterdir()} == expected, model
            for split in SPLITS:
                assert {p.parent.name for p in (r / "metrics" / model / f"seed{seed}").glob(f"*/{split}.json")} == expected, model


@pytest.mark.parametrize("model,fusion,split,seed,shard", JOBS, ids=_ids(JOBS))
def test_refusing_the_cache_reproduces_the_fused_output(micro_run, tmp_path, monkeypatch, model, fusion, split, seed, shard):
    from pycocotools import mask as mask_utils

    from segfusion.cli import _fused_lineage
    from segfusion.fusion import fuse
    from segfusion.inference.cache import CacheReader
    from segfusion.io.fused import write_fused
    from segfusion.specs import FusionSpec

    monkeypatch.chdir(micro_run)  # the rule runs in the workdir and passes relative paths
    cache, fused, _, _ = shard_paths(model, fusion, split, seed, shard)
    disk = micro_run / fused
    # the code path of `segfusion fuse` (cli.cmd_fuse), with MICRO_CONFIG's parameters
    spec = FusionSpec.for_variant(fusion, configured_params(model, fusion))
    meta = {**spec.to_dict(), "variant": fusion, "cache": cache}
    with CacheReader(cache) as reader:
        classes = reader.classes
        meta["lineage"] = _fused_lineage(reader, spec)  # the provenance chain, as cmd_fuse records it
        items = [(c.name, c.image_id, fuse(spec.method, c.instances, c.semantic, classes, **spec.params)) for c in reader]
    out = tmp_path / "fused"
    assert write_fused(out, classes, items, meta=meta) == len(items) > 0

    # 1a. byte for byte: the same files, every PNG and JSON identical (panoptic.json but its timing)
    assert files_under(disk) == files_under(out)
    for rel in files_under(out):
        if rel != "panoptic.json":
            assert (disk / rel).read_bytes() == (out / rel).read_bytes(), f"{fused}/{rel} differs from the re-fused file"
    on_disk, refused = (json.loads((d / "panoptic.json").read_text()) for d in (disk, out))
    assert isinstance(on_disk["meta"].pop("fusion_ms_per_image"), float)
    assert on_disk["meta"] == refused["meta"], f"{fused}: fused with other parameters than MICRO_CONFIG's"
    assert on_disk == refused, f"{fused}/panoptic.json differs from the re-fused one"

    # 1b. the content is the fusion's Panoptic, decoded here without the package's writers/readers
    results = json.loads((disk / "instances.json").read_text())
    expected_results = []
    for (name, image_id, pan), ann in zip(items, on_disk["annotations"], strict=True):
        rgb = np.asarray(Image.open(disk / "panoptic" / f"{name}.png").convert("RGB")).astype(np.int64)
        np.testing.assert_array_equal(rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2], pan.segment_ids)
        np.testing.assert_array_equal(np.asarray(Image.open(disk / "semantic" / f"{name}.png")), pan.semantic)
        assert (ann["image_id"], ann["file_name"]) == (image_id, f"{name}.png")
        assert ann["segments_info"] == [
            {"id": s.id, "category_id": classes.ids[s.class_index], "iscrowd": int(s.iscrowd), "area": s.area, "bbox": list(s.bbox), "score": s.score}
            for s in pan.segments
        ], f"{fused}: segments of {name} (ids, classes, areas, scores) differ from the fusion's"
        expected_results += [(image_id, classes.ids[s.class_index], s.score, list(map(float, s.bbox)), pan.segment_ids == s.id) for s in pan.segments if s.is_thing and not s.iscrowd]
    assert len(results) == len(expected_results)
    for res, (image_id, category_id, score, bbox, mask) in zip(results, expected_results):
        assert (res["image_id"], res["category_id"], res["score"], res["bbox"]) == (image_id, category_id, score, bbox), f"{fused}/instances.json: result differs from its segment"
        rle = {"size": res["segmentation"]["size"], "counts": res["segmentation"]["counts"].encode("ascii")}
        np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), mask)


def test_the_micro_run_has_scores_below_one(micro_run):
    """The score checks above only have teeth if some written score is not 1.0 (costea's
    unmatched foreground segments score their class's mean probability)."""
    r = micro_run / "results" / DATASET
    scores = [res["score"] for p in r.glob("fused/*/seed*/*/*/shard-*/instances.json") for res in json.loads(p.read_text())]
    assert any(0.0 < s < 1.0 for s in scores)


@pytest.mark.parametrize("model,fusion,split,seed", GATHERS, ids=_ids(GATHERS))
def test_reevaluating_reproduces_the_gathered_metrics(micro_run, tmp_path, monkeypatch, model, fusion, split, seed):
    from segfusion.evaluation import evaluate_fused, gather_states
    from segfusion.io.atomic import write_json

    monkeypatch.chdir(micro_run)
    # the evaluate rule's params: config `evaluate` with its schema default
    params = {"boundary_bins": [0, 2, 4, 8, 16, 32, 64], **MICRO_CONFIG.get("evaluate", {})}
    states = []
    for shard in range(SHARDS):
        cache, fused, state_path, gathered = shard_paths(model, fusion, split, seed, shard)
        state = evaluate_fused(f"results/{DATASET}/data/{split}", fused, cache, params)
        states.append(tmp_path / f"shard-{shard}.json")
        write_json(states[-1], state)  # as `segfusion evaluate` does
        assert drop_timings(json.loads(json.dumps(state))) == drop_timings(json.loads(Path(state_path).read_text())), f"{state_path} differs from the re-evaluated state"
    meta = {"dataset": DATASET, "model": model, "seed": seed, "fusion": fusion, "split": split}  # rule gather's meta
    result = gather_states([str(p) for p in states], meta)
    on_disk = json.loads(Path(gathered).read_text())
    assert on_disk["meta"] == meta
    assert set(on_disk["metrics"]) == set(result["metrics"])
    for key in ("metrics", "details"):
        assert drop_timings(on_disk[key]) == drop_timings(json.loads(json.dumps(result[key]))), f"{gathered}: {key} differ from the re-gathered ones"


def _gathered(micro_run) -> dict:
    out = {}
    for model, fusion, split, seed in GATHERS:
        out[(model, fusion, split, seed)] = json.loads((micro_run / shard_paths(model, fusion, split, seed, 0)[3]).read_text())
    return out


def _pct(v) -> str:
    """A table cell: percent with one decimal, ``–`` when missing (`segfusion.report.tables.cell`)."""
    return "–" if v is None else f"{100.0 * v:.1f}"


def _section(text: str, heading: str) -> list[str]:
    """The table lines under the first ``### {heading}...`` of the dataset's section."""
    part = text.split(f"\n## {DATASET}\n", 1)[1].split("\n## ", 1)[0]
    body = part.split(f"\n### {heading}", 1)[1].split("\n### ", 1)[0]
    return [line for line in body.splitlines() if line.startswith("| ")]


def test_the_summary_carries_the_gathered_numbers(micro_run):
    gathered = _gathered(micro_run)
    summary = micro_run / "results" / "summary"

    # metrics.csv: tidy rows, one per numeric headline metric (None left out), the intervals
    # as *_ci_lo / *_ci_hi and the per-class IoU as iou/{class}; floats written in full precision
    rows: dict[tuple, dict[str, float]] = {}
    with open(summary / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            key = (row["model"], row["fusion"], row["split"], int(row["seed"]))
            assert row["dataset"] == DATASET
            assert row["metric"] not in rows.setdefault(key, {}), f"metrics.csv: {key} {row['metric']} twice"
            rows[key][row["metric"]] = float(row["value"])
    assert set(rows) == set(gathered)
    for key, g in gathered.items():
        expected = {}
        for metric, v in g["metrics"].items():
            if isinstance(v, list):
                expected[f"{metric}_lo"], expected[f"{metric}_hi"] = v
            elif v is not None:
                expected[metric] = float(v)
        names = list(g["details"]["panoptic"]["per_class"])
        expected.update({f"iou/{n}": v for n, v in zip(names, g["details"]["semantic"]["iou"]) if v is not None})
        assert {"pq", "miou", "ap_mask", "pq_dagger", "pq_ci_lo", "miou_ci_hi"} <= set(expected)
        assert rows[key] == expected, f"metrics.csv rows of {key} differ from the gathered metrics"

    # tables.md: the fusion table (Costea / Seamless Table 1) and the models table (IMP Table 1)
    text = (summary / "tables.md").read_text()
    fusion_rows = _section(text, "Fusion methods")
    model_rows = _section(text, "Models")
    # one seed: every cell is a single value, not mean ± std
    for (model, fusion, split, _seed), g in gathered.items():
        m = g["metrics"]
        cells = [_pct(m[k]) for k in ("pq", "pq_stuff", "pq_things", "pq_dagger", "ap_mask", "miou")]
        ci = "[{:.1f}, {:.1f}]".format(*(100.0 * v for v in m["pq_ci"]))
        assert f"| {split} | {model} | {fusion} | {' | '.join(cells)} | {ci} |" in fusion_rows, f"tables.md: fusion row of {model} / {fusion}"
        if fusion == "semantic":
            cells = [_pct(m.get(k)) for k in ("ap_box_before_fusion", "ap_mask_before_fusion", "miou", "macc", "miou_things")]
            ci = "[{:.1f}, {:.1f}]".format(*(100.0 * v for v in m["miou_ci"]))
            assert f"| {split} | {model} | {' | '.join(cells)} | {ci} |" in model_rows, f"tables.md: models row of {model}"
    assert len(fusion_rows) == 1 + len(gathered)  # the header, one row per (model, fusion)
