"""`segfusion aggregate`: gathered metrics JSONs -> the summary folder.

Writes, into ``out_dir``:

* ``metrics.csv``: tidy rows ``dataset, model, fusion, split, seed, metric, value`` (every
  numeric headline metric, the bootstrap bounds as ``pq_ci_lo`` ... ``miou_ci_hi``, and the
  per-class IoU as ``iou/{class}``);
* ``per_image.csv``: ``dataset, model, fusion, split, seed, image, pq, miou``;
* ``tables.md``: the paper-style tables of `segfusion.report.tables`;
* ``plots/``: the figures of `segfusion.report.plots` and `segfusion.report.qualitative`
  (the folder's PNGs are replaced on every run);
* ``claims.md`` / ``claims.csv``: the papers' claims as tested hypotheses
  (`segfusion.report.claims`), and ``plots/claims-{dataset}.png``, their forest plots;
* ``provenance.json``: package version, git commit, config hash, seeds, library versions
  (torch and snakemake included, read from package metadata: torch is never imported),
  the inputs and the figures written.

``params``: ``{"config": the workflow config (hashed; its fusion params place the unswept
method on sweep plots), "inputs": {"loss_curves": [{"dataset", "model", "seed", "stage",
"path"}], "qualitative": [grid specs], "gallery": [gallery specs]}}`` (see
`segfusion.report.workflow_inputs`, which builds it from the config).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd

from segfusion.io.atomic import atomic_path, read_json, write_json
from segfusion.provenance import file_identity, provenance
from segfusion.report import claims as claims_report
from segfusion.report import plots, qualitative
from segfusion.report.tables import imp_pairs, tables_markdown

KEYS = ["dataset", "model", "fusion", "split", "seed"]


def tidy_rows(results: list[dict]) -> pd.DataFrame:
    """One row per (result, numeric metric); bootstrap intervals as ``*_ci_lo`` / ``*_ci_hi``."""
    rows = []
    for r in results:
        meta = {k: r["meta"].get(k) for k in KEYS}
        for metric, value in r["metrics"].items():
            if isinstance(value, bool):
                continue
            if isinstance(value, (int, float)):
                rows.append({**meta, "metric": metric, "value": float(value)})
            elif metric.endswith("_ci") and isinstance(value, list) and len(value) == 2:
                rows.append({**meta, "metric": f"{metric}_lo", "value": float(value[0])})
                rows.append({**meta, "metric": f"{metric}_hi", "value": float(value[1])})
        per_class = r.get("details", {}).get("semantic", {}).get("iou")
        names = r["meta"].get("class_names") or _class_names(r)
        if per_class and names:
            for name, v in zip(names, per_class):
                if v is not None:
                    rows.append({**meta, "metric": f"iou/{name}", "value": float(v)})
    return pd.DataFrame(rows, columns=KEYS + ["metric", "value"])


def _class_names(result: dict) -> list[str] | None:
    """Class names from the panoptic details (``per_class`` keeps the class order)."""
    per_class = result.get("details", {}).get("panoptic", {}).get("per_class")
    return list(per_class) if per_class else None


def _dataset_classes(results: list[dict]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in results:
        names = r["meta"].get("class_names") or _class_names(r)
        if names:
            out.setdefault(r["meta"].get("dataset"), list(names))
    return out


def per_image_rows(results: list[dict]) -> pd.DataFrame:
    rows = []
    for r in results:
        meta = {k: r["meta"].get(k) for k in KEYS}
        for e in r.get("details", {}).get("per_image", []):
            rows.append({**meta, "image": e.get("image"), "pq": e.get("pq"), "miou": e.get("miou")})
    return pd.DataFrame(rows, columns=KEYS + ["image", "pq", "miou"])


def config_digest(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


def _image_hw(results: list[dict]) -> dict[tuple[str, str], list[int]]:
    out = {}
    for r in results:
        eff = r.get("details", {}).get("efficiency") or {}
        if eff.get("flops_image_hw"):
            out.setdefault((r["meta"].get("dataset"), r["meta"].get("model")), list(eff["flops_image_hw"]))
    return out


def _sweep_base_values(config: dict) -> dict[tuple[str, str], float]:
    """(method, param) -> configured value of the unswept method, for params that are swept."""
    out = {}
    fusion_params = config.get("fusion", {}).get("params", {})
    for method, grid in config.get("sweeps", {}).items():
        for param in grid:
            v = fusion_params.get(method, {}).get(param)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[(method, param)] = float(v)
    return out


def _gallery_inputs(results: list[dict], specs: list[dict]) -> list[tuple[dict, list[dict]]]:
    """Each gallery spec with the per-image scores of its (dataset, split, model, fusion, seed)."""
    out = []
    for spec in specs:
        key = (spec["dataset"], spec["split"], spec["model"], spec["fusion"], spec.get("seed"))
        match = [r for r in results if tuple(r["meta"].get(k) for k in ("dataset", "split", "model", "fusion", "seed")) == key]
        if not match:
            raise ValueError(
                f"aggregate: the gallery asks for {spec['model']} / {spec['fusion']} seed {spec.get('seed')} on "
                f"{spec['dataset']} / {spec['split']}, which is not among the metrics given"
            )
        out.append((spec, match[0].get("details", {}).get("per_image", [])))
    return out


def write_figures(df: pd.DataFrame, results: list[dict], plot_dir: Path, params: dict) -> list[Path]:
    """Every figure of the report; returns the files written."""
    inputs = params.get("inputs", {})
    written: list[Path | None] = [plots.plot_bars(df, plot_dir / "metrics_bars.png")]
    classes = _dataset_classes(results)
    by_split: dict[tuple, list[dict]] = {}
    for r in results:
        by_split.setdefault((r["meta"].get("dataset"), r["meta"].get("split")), []).append(r)
    for (dataset, split), rs in sorted(by_split.items(), key=lambda kv: tuple(map(str, kv[0]))):
        name = plots.safe_name(dataset, split)
        written.append(plots.plot_boundary(rs, plot_dir / f"boundary-{name}.png", f"{dataset} / {split}: accuracy near boundaries (IMP Fig. 5)"))
        sem = df[(df.dataset == dataset) & (df.split == split) & (df.fusion == "semantic")]
        for base, imp in imp_pairs(sem[sem.metric.str.startswith("iou/")].model.unique()):
            written.append(
                plots.plot_iou_delta(
                    sem, base, imp, plot_dir / f"iou_delta-{plots.safe_name(dataset, split, imp)}.png",
                    f"{dataset} / {split}: per-class IoU gain of IMP (IMP Table 4)", classes.get(dataset),
                )
            )  # fmt: skip
        sw = plots.sweep_frame(df[(df.dataset == dataset) & (df.split == split)], _sweep_base_values(params.get("config", {})))
        for (method, param), g in sw.groupby(["method", "param"]) if len(sw) else []:
            written.append(plots.plot_sweep(g, plot_dir / f"sweep-{plots.safe_name(dataset, split, method, param)}.png", f"{dataset} / {split}: {method}, {param}"))
    losses: dict[str, list[dict]] = {}
    for c in inputs.get("loss_curves", []):
        losses.setdefault(c["dataset"], []).append(c)
    for dataset, curves in sorted(losses.items()):
        written.append(plots.plot_losses(curves, plot_dir / f"loss-{plots.safe_name(dataset)}.png", f"{dataset}: training loss"))
    for spec in inputs.get("qualitative", []):
        written.append(qualitative.plot_qualitative(spec, plot_dir / f"qualitative-{plots.safe_name(spec['dataset'], spec['split'])}.png"))
    for spec, per_image in _gallery_inputs(results, inputs.get("gallery", [])):
        name = plots.safe_name(spec["dataset"], spec["split"], spec["model"], spec["fusion"])
        written.append(qualitative.plot_worst(spec, per_image, plot_dir / f"worst-{name}.png"))
    return [p for p in written if p is not None]


def write_claims(results: list[dict], out_dir: Path, config: dict, digest: str) -> list[Path]:
    """``claims.md``, ``claims.csv`` and one forest plot per dataset; returns the plots written."""
    rows = claims_report.evaluate_claims(results, config)
    with atomic_path(out_dir / "claims.md", suffix=".md") as tmp:
        tmp.write_text(claims_report.claims_markdown(rows, claims_report.run_notes(config), digest))
    with atomic_path(out_dir / "claims.csv", suffix=".csv") as tmp:
        claims_report.claims_frame(rows).to_csv(tmp, index=False)
    written = []
    for dataset in dict.fromkeys(r.dataset for r in rows if r.dataset is not None):
        mine = [r for r in rows if r.dataset == dataset]
        path = plots.plot_claims(mine, out_dir / "plots" / f"claims-{plots.safe_name(dataset)}.png", f"{dataset}: the papers' claims")
        if path is not None:
            written.append(path)
    return written


def aggregate(metric_paths: list[str | os.PathLike], out_dir: str | os.PathLike, params: dict) -> pd.DataFrame:
    """Write the summary folder (see the module docstring); returns the tidy metrics frame."""
    out_dir = Path(out_dir)
    results = [read_json(p) for p in metric_paths]
    for p, r in zip(metric_paths, results):
        if not isinstance(r, dict) or "meta" not in r or "metrics" not in r:
            raise ValueError(f"{p}: not a gathered metrics JSON (needs 'meta' and 'metrics')")
    from segfusion.verify import verify_metrics_for_report

    # Provenance chain (segfusion.verify): every metric's shards, fused outputs, caches, model files
    # and data are the ones it was made from, or nothing is written.
    unverified = verify_metrics_for_report(metric_paths, results)
    _gallery_inputs(results, params.get("inputs", {}).get("gallery", []))  # fail before writing anything
    df = tidy_rows(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "metrics.csv", suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(out_dir / "per_image.csv", suffix=".csv") as tmp:
        per_image_rows(results).to_csv(tmp, index=False)
    digest = config_digest(params.get("config", {}))
    with atomic_path(out_dir / "tables.md", suffix=".md") as tmp:
        tmp.write_text(tables_markdown(df, digest, _image_hw(results), _dataset_classes(results)))
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    for old in plot_dir.glob("*.png"):
        old.unlink()
    figures = write_figures(df, results, plot_dir, params)
    figures += write_claims(results, out_dir, params.get("config", {}), digest)
    seeds = sorted({r["meta"].get("seed") for r in results if r["meta"].get("seed") is not None})
    write_json(
        out_dir / "provenance.json",
        {
            **provenance(),
            "config_hash": digest,
            "seeds": seeds,
            "inputs": [str(p) for p in metric_paths],
            "loss_csvs": [c["path"] for c in params.get("inputs", {}).get("loss_curves", [])],
            "figures": [p.name for p in figures],
            "lineage": {"metrics": {str(p): file_identity(p) for p in metric_paths}, "unverified": unverified},
        },
        indent=1,
    )
    return df
