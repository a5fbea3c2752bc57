"""Report figures (PNG, matplotlib's Agg backend, each written atomically).

File names are ``{kind}-{name}.png`` (``kind`` in lowercase letters and underscores), so
``snakemake --report`` can file each figure under its kind; the historical
``metrics_bars.png`` keeps its name.

* ``metrics_bars.png``: grouped bars of the headline metrics per (model, fusion), one panel
  per (dataset, split), error bars = std over seeds;
* ``boundary-*``: mIoU and mAcc of the pixels within d px of a ground-truth boundary, one
  line per model (IMP Fig. 5; the ``within`` curves of `BoundaryAccuracy`);
* ``iou_delta-*``: per-class IoU of ``X_imp`` minus ``X`` (IMP Table 4 as bars);
* ``loss-*``: training loss curves, every ``loss*`` column of the declared loss CSVs;
* ``sweep-*``: metric vs swept value of a fusion parameter, one line per model.
* ``claims-{dataset}``: forest plot of the papers' claims (`plot_claims`).

The qualitative grid and the worst-images gallery are in `segfusion.report.qualitative`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from segfusion.io.atomic import save_figure
from segfusion.report.tables import PERCENT, is_sweep, per_class_iou

HEADLINE = ("pq", "pq_things", "pq_stuff", "pq_dagger", "miou", "ap_mask")
LABELS = {
    "pq": "PQ", "pq_things": "PQ_Th", "pq_stuff": "PQ_St", "pq_dagger": "PQ†", "miou": "mIoU",
    "ap_mask": "AP_M", "macc": "mAcc", "sq": "SQ", "rq": "RQ",
}  # fmt: skip
SWEEP_METRICS = ("pq", "pq_dagger", "miou")


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def safe_name(*parts: object) -> str:
    """File-name fragment from labels: anything outside [A-Za-z0-9_.=+] becomes '_' ('-' is the kind separator)."""
    return "_".join(re.sub(r"[^A-Za-z0-9_.=+]", "_", str(p)) for p in parts)


def save(fig, path: Path, dpi: int = 100) -> Path:
    """Write ``fig`` atomically as PNG and close it."""
    return save_figure(fig, path, dpi)


def plot_bars(df: pd.DataFrame, path: Path, metrics: tuple[str, ...] = HEADLINE) -> Path | None:
    """Grouped bars: one group per metric, one bar per (model, fusion); one panel per (dataset, split)."""
    plt = pyplot()
    d = df[df.metric.isin(metrics) & ~df.fusion.map(is_sweep)]
    if d.empty:
        return None
    panels = list(d.groupby(["dataset", "split"]))
    n_bars = max(len(g.groupby(["model", "fusion"])) for _, g in panels)
    width_in = max(6.0, 0.18 * n_bars * len(metrics)) + 2.5  # + the legend on the right
    fig, axes = plt.subplots(len(panels), 1, figsize=(width_in, 4 * len(panels)), squeeze=False)
    for ax, ((dataset, split), g) in zip(axes[:, 0], panels):
        stats = g.groupby(["model", "fusion", "metric"]).value.agg(["mean", "std"])
        cols = [m for m in metrics if m in set(g.metric)]
        mean = stats["mean"].unstack("metric").reindex(columns=cols)
        std = stats["std"].unstack("metric").reindex(columns=cols).fillna(0.0)
        width = 0.8 / max(len(mean), 1)
        x = np.arange(len(cols))
        for i, (label, row) in enumerate(mean.iterrows()):
            ax.bar(x + i * width, PERCENT * row.to_numpy(float), width, yerr=PERCENT * std.loc[label].to_numpy(float),
                   label=" / ".join(label), capsize=2, color=plt.get_cmap("tab20")(i % 20))  # fmt: skip
        ax.set_xticks(x + width * (len(mean) - 1) / 2)
        ax.set_xticklabels([LABELS.get(c, c) for c in cols])
        ax.set_ylabel("%")
        ax.set_title(f"{dataset} / {split}: metrics per model / fusion")
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return save(fig, path)


def _boundary_curve(result: dict, key: str) -> tuple[list[str], np.ndarray]:
    within = result.get("within", [])
    labels = [f"≤{e['hi']:g}" if e.get("hi") is not None else "all" for e in within]
    values = np.array([np.nan if e.get(key) is None else PERCENT * e[key] for e in within], float)
    return labels, values


def plot_boundary(results: list[dict], path: Path, title: str) -> Path | None:
    """mIoU / mAcc vs distance to the ground-truth boundary, one line per model (IMP Fig. 5).

    ``results``: gathered metrics JSONs of one (dataset, split), all fusions; per model the
    ``semantic`` fusion (the head's own output) is used when present, else its first fusion;
    with several seeds the curves are averaged and the spread shaded (± std).
    """
    plt = pyplot()
    by_model: dict[str, dict[str, list[dict]]] = {}
    for r in results:
        b = r.get("details", {}).get("boundary")
        if b and b.get("within"):
            by_model.setdefault(r["meta"]["model"], {}).setdefault(r["meta"]["fusion"], []).append(b)
    if not by_model:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for model in sorted(by_model):
        fusions = by_model[model]
        fusion = "semantic" if "semantic" in fusions else sorted(fusions, key=lambda f: (is_sweep(f), f))[0]
        for ax, key in zip(axes, ("miou", "macc")):
            curves = [_boundary_curve(b, key) for b in fusions[fusion]]
            labels = curves[0][0]
            values = np.vstack([c[1] for c in curves if len(c[1]) == len(labels)])
            mean = np.nanmean(values, axis=0)
            x = np.arange(len(labels))
            ax.plot(x, mean, marker="o", label=f"{model} ({fusion})")
            if len(values) > 1:
                sd = np.nanstd(values, axis=0, ddof=1)
                ax.fill_between(x, mean - sd, mean + sd, alpha=0.2)
            ax.set_xticks(x)
            ax.set_xticklabels(labels)
    for ax, key in zip(axes, ("mIoU", "mAcc")):
        ax.set_xlabel("pixels within d px of a ground-truth boundary")
        ax.set_ylabel(f"{key} (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def plot_iou_delta(sem: pd.DataFrame, base: str, imp: str, path: Path, title: str, classes: list[str] | None = None) -> Path | None:
    """Per-class IoU of ``imp`` minus ``base`` (percentage points), green above zero, red below."""
    plt = pyplot()
    t = per_class_iou(sem, base, imp, classes).dropna(subset=["delta"])
    if t.empty:
        return None
    delta = PERCENT * t.delta.to_numpy(float)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(t)), 4))
    ax.bar(np.arange(len(t)), delta, color=np.where(delta >= 0, "tab:green", "tab:red"))
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(t)))
    ax.set_xticklabels(t.index, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(f"IoU {imp} − {base} (points)")
    ax.set_title(title)
    fig.tight_layout()
    return save(fig, path)


def read_loss_csv(path: str | Path) -> pd.DataFrame:
    """A loss CSV as written by ``segfusion train --loss-csv`` (``iteration`` and ``loss*`` columns).

    A stage of 0 iterations (e.g. stage 1 skipped for pretrained weights, presets/cityscapes_imp.yaml)
    writes a file without rows or header: it reads as a frame without rows."""
    if not Path(path).read_text().strip():
        return pd.DataFrame({"iteration": pd.Series([], dtype=float)})
    d = pd.read_csv(path)
    if "iteration" not in d.columns:
        raise ValueError(f"{path}: loss CSV without an 'iteration' column (columns {list(d.columns)})")
    return d


def plot_losses(curves: list[dict], path: Path, title: str) -> Path | None:
    """Loss curves, one panel per (model, stage), one line per ``loss*`` term (dashed for seeds after the first).

    ``curves``: ``[{"model", "seed", "stage", "path"}]``. Long runs are smoothed with a
    moving average over 1/30 of the iterations; the y axis is logarithmic.
    """
    plt = pyplot()
    panels: dict[tuple[str, int], list[dict]] = {}
    for c in curves:
        panels.setdefault((c["model"], int(c["stage"])), []).append(c)
    if not panels:
        return None
    keys = sorted(panels, key=lambda k: (k[1], k[0]))
    ncol = min(3, len(keys))
    nrow = int(np.ceil(len(keys) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(5 * ncol, 3.5 * nrow), squeeze=False)
    for ax in axes.ravel()[len(keys) :]:
        ax.axis("off")
    for ax, key in zip(axes.ravel(), keys):
        runs = sorted(panels[key], key=lambda c: int(c["seed"]))
        for j, c in enumerate(runs):
            d = read_loss_csv(c["path"])
            its = d["iteration"].to_numpy(float)
            for k, col in enumerate(col for col in d.columns if col.startswith("loss")):
                vals = d[col].to_numpy(float)
                win = max(1, len(vals) // 30)
                smooth = np.convolve(np.nan_to_num(vals), np.ones(win) / win, mode="valid")
                ax.plot(its[win - 1 :], np.maximum(smooth, 1e-8), color=f"C{k % 10}", ls="-" if j == 0 else "--",
                        lw=2 if col == "loss" else 1, label=col if j == 0 else None)  # fmt: skip
        if not ax.lines:  # every run of this panel trained 0 iterations
            ax.text(0.5, 0.5, "0 iterations", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.set_yscale("log")
            ax.legend(fontsize=6)
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        ax.set_title(f"{key[0]} stage {key[1]} (seeds {', '.join(str(c['seed']) for c in runs)})", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def sweep_frame(df: pd.DataFrame, base_values: dict[tuple[str, str], float] | None = None) -> pd.DataFrame:
    """Rows of sweep variants with ``method``, ``param`` and ``param_value`` parsed from the fusion name.

    ``base_values`` maps (method, param) to the value the unswept method runs with (the
    configured fusion param); when given, the plain method's rows join the sweep at that value.
    """
    from segfusion.sweeps import parse_variant

    rows = []
    for fusion in df.fusion.unique():
        method, over = parse_variant(fusion)
        for param, value in over.items():
            rows.append({"fusion": fusion, "method": method, "param": param, "param_value": float(value)})
    for (method, param), value in (base_values or {}).items():
        if any(r["method"] == method and r["param"] == param for r in rows) and method in set(df.fusion):
            rows.append({"fusion": method, "method": method, "param": param, "param_value": float(value)})
    if not rows:
        return pd.DataFrame(columns=[*df.columns, "method", "param", "param_value"])
    return df.merge(pd.DataFrame(rows), on="fusion")


def plot_sweep(sw: pd.DataFrame, path: Path, title: str, metrics: tuple[str, ...] = SWEEP_METRICS) -> Path | None:
    """Metric (%) vs parameter value, one panel per metric, one line per model (± std over seeds)."""
    plt = pyplot()
    d = sw[sw.metric.isin(metrics)]
    if d.empty:
        return None
    cols = [m for m in metrics if m in set(d.metric)]
    fig, axes = plt.subplots(1, len(cols), figsize=(4.5 * len(cols), 3.5), squeeze=False)
    for ax, metric in zip(axes[0], cols):
        for model, g in d[d.metric == metric].groupby("model"):
            s = g.groupby("param_value").value.agg(["mean", "std"]).sort_index()
            ax.errorbar(s.index.to_numpy(float), PERCENT * s["mean"].to_numpy(float), yerr=PERCENT * s["std"].fillna(0).to_numpy(float),
                        marker="o", capsize=2, label=model)  # fmt: skip
        ax.set_xlabel(str(d.param.iloc[0]))
        ax.set_ylabel(f"{LABELS.get(metric, metric)} (%)")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def plot_claims(rows: list, path: Path, title: str) -> Path | None:
    """Forest plot of the claims of one dataset (`segfusion.report.claims.ClaimRow`): per claim the
    per-seed effects (dots), the mean and its Student-t 95 % CI (bar), the paper's effect (red
    diamond) and the equivalence margin (grey band); zero drawn. Claims that did not run are
    listed with ``not run``. One panel per effect unit (points; M parameters)."""
    plt = pyplot()
    if not rows:
        return None
    units = list(dict.fromkeys(r.claim.unit for r in rows))
    heights = [max(1, sum(r.claim.unit == u for r in rows)) for u in units]
    fig, axes = plt.subplots(len(units), 1, figsize=(9, 0.42 * sum(heights) + 1.4 * len(units)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})  # fmt: skip
    splits = {r.split for r in rows}
    for ax, unit in zip(axes[:, 0], units):
        group = [r for r in rows if r.claim.unit == unit]
        y = np.arange(len(group))[::-1]
        for yi, r in zip(y, group):
            c, s = r.claim, r.summary
            if c.margin is not None:
                ax.fill_betweenx([yi - 0.35, yi + 0.35], -c.margin, c.margin, color="0.85", zorder=0)
            if s.n:
                ax.scatter(r.effects, [yi] * len(r.effects), s=12, color="tab:blue", alpha=0.5, zorder=2)
                if s.lo is not None:
                    ax.plot([s.lo, s.hi], [yi, yi], color="tab:blue", lw=2, zorder=3)
                ax.scatter([s.mean], [yi], marker="s", color="tab:blue", zorder=4)
            if c.paper_effect is not None:
                ax.scatter([c.paper_effect], [yi], marker="D", color="tab:red", zorder=5)
            verdict = r.verdict if s.n else "not run"
            ax.annotate(verdict, (1.01, yi), xycoords=("axes fraction", "data"), fontsize=7, va="center")
        labels = [r.claim.id + (f" ({r.split})" if len(splits) > 1 else "") for r in group]
        ax.set_yticks(y)
        ax.set_yticklabels(labels, fontsize=7)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlabel(f"effect A − B ({unit}); blue: ours (dots seeds, square mean, bar 95 % t CI), red: paper")
        ax.set_ylim(-0.7, len(group) - 0.3)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)
