"""`segfusion aggregate`: metrics JSONs -> metrics.csv (tidy), tables.md, plots/, provenance.json.

Tables follow the papers' layouts: IMP Table 1 (BBox AP, Mask AP, mIoU, mAcc per model
variant, semantic metrics from the ``semantic`` fusion, i.e. the head's own output),
Costea / Seamless Table 1 (PQ, PQ_St, PQ_Th, PQ†, AP_M, IoU per fusion method) and IMP
Table 4 (per-class IoU with and without IMP). With several seeds, cells show mean ± std.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from segfusion.io.atomic import atomic_path, read_json, write_json
from segfusion.provenance import provenance

KEYS = ["dataset", "model", "fusion", "split", "seed"]


def tidy_rows(results: list[dict]) -> pd.DataFrame:
    rows = []
    for r in results:
        meta = {k: r["meta"].get(k) for k in KEYS}
        for metric, value in r["metrics"].items():
            if isinstance(value, (int, float)) and value is not None:
                rows.append({**meta, "metric": metric, "value": float(value)})
        per_class = r.get("details", {}).get("semantic", {}).get("iou")
        names = r["meta"].get("class_names")
        if per_class and names:
            for name, v in zip(names, per_class):
                if v is not None:
                    rows.append({**meta, "metric": f"iou/{name}", "value": float(v)})
    return pd.DataFrame(rows, columns=KEYS + ["metric", "value"])


def _cell(values: pd.Series, scale: float = 100.0) -> str:
    v = values.dropna().to_numpy() * scale
    if len(v) == 0:
        return "–"
    if len(v) == 1:
        return f"{v[0]:.1f}"
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}"


def _table(df: pd.DataFrame, index: list[str], columns: dict[str, str]) -> str:
    """Markdown table: one row per ``index`` group, one column per metric (label -> metric key)."""
    lines = ["| " + " | ".join(index + list(columns)) + " |", "|" + "---|" * (len(index) + len(columns))]
    for key, group in df.groupby(index, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        cells = [_cell(group[group.metric == m].value) for m in columns.values()]
        lines.append("| " + " | ".join([str(k) for k in key] + cells) + " |")
    return "\n".join(lines)


def tables_markdown(df: pd.DataFrame, config_hash: str) -> str:
    out = [f"# segfusion results\n\nconfig hash `{config_hash}`; all numbers in %, mean ± std over seeds where several ran.\n"]
    for dataset, d in df.groupby("dataset"):
        out.append(f"## {dataset}\n")
        sem = d[d.fusion == "semantic"]
        if len(sem):
            out.append("### Models (IMP Table 1 layout; mIoU/mAcc of the semantic output, AP of the raw detections)\n")
            out.append(
                _table(sem, ["split", "model"], {"BBox AP": "ap_box_before_fusion", "Mask AP": "ap_mask_before_fusion", "mIoU": "miou", "mAcc": "macc", "mIoU things": "miou_things"})
            )
            base = sem[sem.metric == "miou_most_frequent_class"].value
            if len(base):
                out.append(f"\nTrivial baseline (most frequent class everywhere): mIoU {100 * base.iloc[0]:.1f}.\n")
        out.append("### Fusion methods (Costea / Seamless Table 1 layout)\n")
        out.append(
            _table(d, ["split", "model", "fusion"], {"PQ": "pq", "PQ_St": "pq_stuff", "PQ_Th": "pq_things", "PQ†": "pq_dagger", "AP_M": "ap_mask", "IoU": "miou"})
        )
        out.append("")
        per_class = sem[sem.metric.str.startswith("iou/")]
        imp_models = sorted(m for m in per_class.model.unique() if m.endswith("_imp") and m[: -len("_imp")] in set(per_class.model))
        for m in imp_models:
            base_model = m[: -len("_imp")]
            out.append(f"### Per-class IoU with and without IMP (IMP Table 4 layout): {base_model} vs {m}\n")
            piv = per_class[per_class.model.isin([base_model, m])].pivot_table(index="metric", columns="model", values="value", aggfunc="mean")
            lines = [f"| class | {base_model} | {m} | Δ |", "|---|---|---|---|"]
            for metric, row in piv.iterrows():
                delta = row.get(m, np.nan) - row.get(base_model, np.nan)
                lines.append(f"| {metric[4:]} | {100 * row.get(base_model, np.nan):.1f} | {100 * row.get(m, np.nan):.1f} | {100 * delta:+.1f} |")
            out.append("\n".join(lines) + "\n")
    return "\n".join(out) + "\n"


def plot_bars(df: pd.DataFrame, path: Path, metrics=("pq", "pq_things", "pq_stuff", "pq_dagger", "miou", "ap_mask")) -> None:
    """Grouped bars: one group per metric, one bar per (model, fusion)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = df[df.metric.isin(metrics)]
    if d.empty:
        return
    piv = d.groupby(["model", "fusion", "metric"]).value.mean().unstack("metric").reindex(columns=[m for m in metrics if m in set(d.metric)])
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(piv.columns) * max(1, len(piv)) / 3), 4))
    width = 0.8 / max(len(piv), 1)
    x = np.arange(len(piv.columns))
    for i, (label, row) in enumerate(piv.iterrows()):
        ax.bar(x + i * width, 100 * row.to_numpy(dtype=float), width, label=" / ".join(label))
    ax.set_xticks(x + width * (len(piv) - 1) / 2)
    ax.set_xticklabels(piv.columns)
    ax.set_ylabel("%")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("metrics per model / fusion")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def config_digest(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


def aggregate(metric_paths: list[str | os.PathLike], out_dir: str | os.PathLike, params: dict) -> pd.DataFrame:
    out_dir = Path(out_dir)
    results = [read_json(p) for p in metric_paths]
    df = tidy_rows(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "metrics.csv", suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)
    digest = config_digest(params.get("config", {}))
    with atomic_path(out_dir / "tables.md", suffix=".md") as tmp:
        tmp.write_text(tables_markdown(df, digest))
    (out_dir / "plots").mkdir(exist_ok=True)
    plot_bars(df, out_dir / "plots" / "metrics_bars.png")
    seeds = sorted({r["meta"].get("seed") for r in results if r["meta"].get("seed") is not None})
    write_json(out_dir / "provenance.json", {**provenance(), "config_hash": digest, "seeds": seeds, "inputs": [str(p) for p in metric_paths]}, indent=1)
    return df
