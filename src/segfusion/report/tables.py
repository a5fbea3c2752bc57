"""Paper-style Markdown tables from the tidy metrics frame (`segfusion.report.aggregate.tidy_rows`).

Layouts (every quality number in %, cells ``mean ± std`` over seeds when several ran, the
sample standard deviation, ddof = 1):

* **IMP Table 1** (Fu et al., ICCV 2019): BBox AP, Mask AP (raw detections, before fusion),
  mIoU and mAcc (the ``semantic`` fusion, i.e. the head's own output) per model variant;
  plus the bootstrap 95 % interval of mIoU.
* **Costea Table 1 / Seamless Table 1** (Porzi et al., CVPR 2019): PQ, PQ_St, PQ_Th, PQ†,
  AP_M and IoU per fusion method; plus the bootstrap 95 % interval of PQ. Sweep variants
  (``method@param=value``) get their own table.
* **IMP Table 4**: per-class IoU without and with IMP and the difference, for each model
  ``X`` that has a partner ``X_imp`` (the difference is of the seed means).
* **Trivial baseline**: mIoU of predicting the most frequent ground-truth class everywhere.
* **Efficiency** (IMP Table 6, Seamless Sec. 5.4): parameters, FLOPs of one forward pass at
  the evaluated image size, measured network time and fusion time per image.

Bootstrap intervals are per seed; with several seeds the table shows the seed means of
the lower and upper bounds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from segfusion.metrics.statistics import BOOTSTRAP_LEVEL, BOOTSTRAP_RESAMPLES

PERCENT = 100.0


def cell(values: pd.Series | np.ndarray, scale: float = PERCENT, digits: int = 1) -> str:
    """``mean ± std`` (ddof 1) of the non-missing values times ``scale``; ``–`` when none."""
    v = pd.Series(values, dtype=float).dropna().to_numpy() * scale
    if len(v) == 0:
        return "–"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def _interval(group: pd.DataFrame, key: str) -> str:
    lo = group[group.metric == f"{key}_ci_lo"].value.dropna()
    hi = group[group.metric == f"{key}_ci_hi"].value.dropna()
    if lo.empty or hi.empty:
        return "–"
    return f"[{PERCENT * lo.mean():.1f}, {PERCENT * hi.mean():.1f}]"


def markdown_table(df: pd.DataFrame, index: list[str], columns: dict[str, str], intervals: dict[str, str] | None = None) -> str:
    """One row per ``index`` group; ``columns`` maps a header to a metric key (cells in %);
    ``intervals`` maps a header to ``pq`` / ``miou`` (bootstrap interval cells)."""
    intervals = intervals or {}
    header = index + list(columns) + list(intervals)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, group in df.groupby(index, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        cells = [cell(group[group.metric == m].value) for m in columns.values()]
        cells += [_interval(group, k) for k in intervals.values()]
        lines.append("| " + " | ".join([str(k) for k in key] + cells) + " |")
    return "\n".join(lines)


def is_sweep(fusion: str) -> bool:
    return "@" in fusion


def imp_table1(sem: pd.DataFrame) -> str:
    return markdown_table(
        sem,
        ["split", "model"],
        {"BBox AP": "ap_box_before_fusion", "Mask AP": "ap_mask_before_fusion", "mIoU": "miou", "mAcc": "macc", "mIoU things": "miou_things"},
        {"mIoU 95 % CI": "miou"},
    )


def fusion_table1(d: pd.DataFrame) -> str:
    return markdown_table(
        d,
        ["split", "model", "fusion"],
        {"PQ": "pq", "PQ_St": "pq_stuff", "PQ_Th": "pq_things", "PQ†": "pq_dagger", "AP_M": "ap_mask", "IoU": "miou"},
        {"PQ 95 % CI": "pq"},
    )


def imp_pairs(models) -> list[tuple[str, str]]:
    """(base, base_imp) pairs among ``models``."""
    models = set(models)
    return sorted((m[: -len("_imp")], m) for m in models if m.endswith("_imp") and m[: -len("_imp")] in models)


def per_class_iou(sem: pd.DataFrame, base: str, imp: str, classes: list[str] | None = None) -> pd.DataFrame:
    """Per-class IoU seed means of ``base`` and ``imp`` (fractions) and ``delta`` = imp − base.

    Index: class names in the order of ``classes`` (the dataset's class list; classes
    without any IoU are left out), else in first-appearance order; columns ``base``,
    ``imp``, ``delta``, ``base_std``, ``imp_std`` (NaN with one seed).
    """
    d = sem[sem.metric.str.startswith("iou/") & sem.model.isin([base, imp])]
    order = list(dict.fromkeys(d.metric))
    if classes:
        present = set(order)
        order = [f"iou/{c}" for c in classes if f"iou/{c}" in present] + [m for m in order if m[len("iou/") :] not in set(classes)]
    stats = d.groupby(["metric", "model"]).value.agg(["mean", "std"]).unstack("model")
    out = pd.DataFrame(index=order)
    out["base"] = stats["mean"].get(base, pd.Series(dtype=float)).reindex(order)
    out["imp"] = stats["mean"].get(imp, pd.Series(dtype=float)).reindex(order)
    out["base_std"] = stats["std"].get(base, pd.Series(dtype=float)).reindex(order)
    out["imp_std"] = stats["std"].get(imp, pd.Series(dtype=float)).reindex(order)
    out["delta"] = out["imp"] - out["base"]
    out.index = [m[len("iou/") :] for m in order]
    return out


def _mean_std(mean: float, std: float) -> str:
    if np.isnan(mean):
        return "–"
    return f"{PERCENT * mean:.1f}" if np.isnan(std) else f"{PERCENT * mean:.1f} ± {PERCENT * std:.1f}"


def imp_table4(sem: pd.DataFrame, base: str, imp: str, classes: list[str] | None = None) -> str:
    t = per_class_iou(sem, base, imp, classes)
    lines = [f"| class | {base} | {imp} | Δ |", "|---|---|---|---|"]
    for name, row in t.iterrows():
        delta = "–" if np.isnan(row.delta) else f"{PERCENT * row.delta:+.1f}"
        lines.append(f"| {name} | {_mean_std(row.base, row.base_std)} | {_mean_std(row.imp, row.imp_std)} | {delta} |")
    mean_delta = t.delta.dropna()
    if len(mean_delta):
        lines.append(f"| **mean** | | | {PERCENT * mean_delta.mean():+.1f} |")
    return "\n".join(lines)


def baseline_table(d: pd.DataFrame) -> str:
    """Trivial most-frequent-class baseline per split, next to the best model mIoU."""
    lines = ["| split | most frequent class mIoU | best mIoU (model / fusion) |", "|---|---|---|"]
    for split, g in d.groupby("split"):
        base = g[g.metric == "miou_most_frequent_class"].value.dropna()
        if base.empty:
            continue
        miou = g[g.metric == "miou"].groupby(["model", "fusion"]).value.mean().dropna()
        best = f"{PERCENT * miou.max():.1f} ({' / '.join(miou.idxmax())})" if len(miou) else "–"
        lines.append(f"| {split} | {PERCENT * base.iloc[0]:.1f} | {best} |")
    return "\n".join(lines)


def efficiency_frame(d: pd.DataFrame) -> pd.DataFrame:
    """One row per model: parameters, flops, forward ms (seed mean, std) and fusion ms per method.

    ``forward_ms_per_image``, ``parameters`` and ``flops`` come from the prediction cache, so
    they repeat over a model's fusions: one value per (model, split, seed) is kept.
    """
    rows = []
    for model, g in d.groupby("model", sort=True):
        per_seed = g.drop_duplicates(["split", "seed", "metric"])
        row: dict = {"model": model}
        for key in ("parameters", "flops", "forward_ms_per_image"):
            v = per_seed[per_seed.metric == key].value.dropna()
            row[key] = v.mean() if len(v) else np.nan
            row[f"{key}_std"] = v.std(ddof=1) if len(v) > 1 else np.nan
        fus = g[(g.metric == "fusion_ms_per_image") & ~g.fusion.map(is_sweep)]
        for fusion, fg in fus.groupby("fusion"):
            row[f"fusion_ms/{fusion}"] = fg.value.mean()
        rows.append(row)
    return pd.DataFrame(rows)


def efficiency_table(d: pd.DataFrame, image_hw: dict[str, list[int]]) -> str:
    """IMP Table 6 / Seamless Sec. 5.4 layout; ``image_hw``: model -> FLOPs image size."""
    f = efficiency_frame(d)
    if f.empty:
        return ""
    fusions = sorted(c[len("fusion_ms/") :] for c in f.columns if c.startswith("fusion_ms/"))
    header = ["model", "parameters (M)", "GFLOPs", "at H×W", "inference ms/image"] + [f"{m} ms/image" for m in fusions]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in f.iterrows():
        hw = image_hw.get(r.model)
        ms = "–" if np.isnan(r.forward_ms_per_image) else cell(pd.Series([r.forward_ms_per_image]), 1.0)
        if not np.isnan(r.get("forward_ms_per_image_std", np.nan)):
            ms = f"{r.forward_ms_per_image:.1f} ± {r.forward_ms_per_image_std:.1f}"
        cells = [
            str(r.model),
            "–" if np.isnan(r.parameters) else f"{r.parameters / 1e6:.2f}",
            "–" if np.isnan(r.flops) else f"{r.flops / 1e9:.2f}",
            f"{hw[0]}×{hw[1]}" if hw else "–",
            ms,
        ]
        cells += ["–" if np.isnan(r.get(f"fusion_ms/{m}", np.nan)) else f"{r[f'fusion_ms/{m}']:.1f}" for m in fusions]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tables_markdown(
    df: pd.DataFrame,
    config_hash: str,
    image_hw: dict[tuple[str, str], list[int]] | None = None,
    class_names: dict[str, list[str]] | None = None,
) -> str:
    """The whole ``tables.md``. ``image_hw``: (dataset, model) -> the FLOPs image size;
    ``class_names``: dataset -> class list (row order of IMP Table 4)."""
    image_hw = image_hw or {}
    class_names = class_names or {}
    seeds = sorted(df.seed.dropna().unique().tolist()) if len(df) else []
    out = [
        "# segfusion results\n",
        f"config hash `{config_hash}`; seeds {seeds}; all quality numbers in %, mean ± std (ddof 1) over seeds "
        f"where several ran; {100 * BOOTSTRAP_LEVEL:.0f} % CI: percentile bootstrap over images "
        f"({BOOTSTRAP_RESAMPLES} resamples, fixed seed), seed means of the bounds.\n",
    ]
    for dataset, d in df.groupby("dataset"):
        out.append(f"## {dataset}\n")
        sem = d[d.fusion == "semantic"]
        if len(sem):
            out.append("### Models (IMP Table 1 layout; mIoU/mAcc of the semantic output, AP of the raw detections)\n")
            out.append(imp_table1(sem) + "\n")
        base = baseline_table(d)
        if base.count("\n") > 1:
            out.append("### Trivial baseline (most frequent class everywhere)\n")
            out.append(base + "\n")
        main = d[~d.fusion.map(is_sweep)]
        out.append("### Fusion methods (Costea / Seamless Table 1 layout)\n")
        out.append(fusion_table1(main) + "\n")
        sweeps = d[d.fusion.map(is_sweep)]
        if len(sweeps):
            out.append("### Fusion parameter sweeps\n")
            out.append(fusion_table1(sweeps) + "\n")
        for split, s in sem.groupby("split"):
            for base_model, imp_model in imp_pairs(s[s.metric.str.startswith("iou/")].model.unique()):
                out.append(f"### Per-class IoU with and without IMP (IMP Table 4 layout): {base_model} vs {imp_model}, {split}\n")
                out.append(imp_table4(s, base_model, imp_model, class_names.get(dataset)) + "\n")
        eff = efficiency_table(d, {m: hw for (ds, m), hw in image_hw.items() if ds == dataset})
        if eff:
            out.append("### Efficiency (IMP Table 6 / Seamless Sec. 5.4 layout)\n")
            out.append(
                "Parameters and FLOPs of one forward pass (torch FlopCounterMode, multiply-add = 2 FLOPs, "
                "RoIAlign/NMS not counted) at the evaluated image size; measured network and fusion time per image.\n"
            )
            out.append(eff + "\n")
    return "\n".join(out) + "\n"
