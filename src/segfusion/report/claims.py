"""The claims table: every claim of `segfusion.claims` evaluated on the gathered metrics.

`evaluate_claims(results, config)` (pure) gives one `ClaimRow` per (dataset, eval split,
claim that applies to the dataset's kind), plus one ``not run`` row per claim that applies
to no configured dataset: no claim is ever dropped. `claims_markdown` and `claims_frame`
render them (``summary/claims.md``, ``claims.csv``); `segfusion.report.plots.plot_claims`
draws the forest plot.

Per claim and seed the effect is A - B (or (A - B) - (C - D) with a contrast) of the sides'
values in the claim's unit (percentage points for ratios); a seed counts when every side
has a value. A side whose model is a `PairRef` reads the configured pair with those members
(config ``pairs``); a pair's ``parameters`` are the sum of its two models'. Statistics and
verdicts: `segfusion.claim_statistics`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from segfusion import claim_statistics as cs
from segfusion.claims import CLAIM_METRICS, CLAIMS, Claim, PairRef, Side, dataset_kind
from segfusion.config import dataset_models
from segfusion.metrics.statistics import dense_per_image

Key = tuple  # (dataset, split, model, fusion, seed)


@dataclass(frozen=True)
class ClaimRow:
    """One claim on one (dataset, split): per-seed effects, their summary, the bootstrap view and
    the verdict; ``needs`` says what a ``not run`` claim lacks, ``notes`` what was left out."""

    claim: Claim
    dataset: str | None
    split: str | None
    kind: str | None
    seeds: tuple[int, ...] = ()
    effects: tuple[float, ...] = ()
    summary: cs.SeedSummary = field(default_factory=lambda: cs.seed_summary([]))
    bootstrap: tuple[float, float] | None = None
    verdict: str = cs.NOT_RUN
    needs: str = ""
    notes: tuple[str, ...] = ()

    @property
    def ratio(self) -> float | None:
        return cs.magnitude_ratio(self.summary.mean, self.claim.paper_effect)


# --------------------------------------------------------------------------- reading sides from results


def index_results(results: Iterable[dict]) -> dict[Key, dict]:
    """Gathered metrics JSONs by (dataset, split, model, fusion, seed)."""
    out = {}
    for r in results:
        m = r["meta"]
        out[(m.get("dataset"), m.get("split"), m.get("model"), m.get("fusion"), m.get("seed"))] = r
    return out


def pair_names(config: Mapping) -> dict[PairRef, str]:
    """Configured pairs by their members (the first pair wins when two have the same members)."""
    out: dict[PairRef, str] = {}
    for name, p in (config.get("pairs") or {}).items():
        out.setdefault(PairRef(p["instances"], p["semantic"]), name)
    return out


def _class_mask(result: dict, side: Side) -> np.ndarray | None:
    """Boolean mask of the side's classes over the result's class list (None: all classes)."""
    if side.classes == "all":
        return None
    info = result.get("details", {}).get("classes")
    if not info:
        return None if side.classes == "all" else np.zeros(0, bool)
    if side.classes == "class":
        return np.array([n == side.class_name for n in info["names"]], bool)
    thing = np.array(info["is_thing"], bool)
    return thing if side.classes == "things" else ~thing


def _mean_of(values: list, mask: np.ndarray | None) -> float | None:
    """Mean of the non-missing values under ``mask`` (the per-class lists of the details)."""
    if mask is not None and len(mask) != len(values):
        return None
    v = [x for i, x in enumerate(values) if x is not None and (mask is None or mask[i])]
    return float(np.mean(v)) if v else None


def raw_value(result: dict, side: Side) -> float | None:
    """The side's metric in its own unit (a fraction, or a parameter count) from one gathered result."""
    metrics, details = result.get("metrics", {}), result.get("details", {})
    if side.metric == "boundary_miou":
        within = details.get("boundary", {}).get("within") or []
        if not within:
            return None
        v = (within[0] if side.bin == "near" else within[-1]).get("miou")
        return None if v is None else float(v)
    if side.classes == "all":
        v = metrics.get(CLAIM_METRICS[side.metric].key)
        return None if v is None else float(v)
    if side.metric in ("miou", "macc") and side.classes in ("things", "stuff"):
        v = metrics.get(f"miou_{side.classes}") if side.metric == "miou" else None
        if v is not None:
            return float(v)
    if side.metric == "pq" and side.classes in ("things", "stuff"):
        v = metrics.get(f"pq_{side.classes}")
        return None if v is None else float(v)
    if side.metric == "pq_dagger" and side.classes == "things":
        v = metrics.get("pq_things")  # PQ†_c = PQ_c for thing classes (Seamless Sec. 4)
        return None if v is None else float(v)
    mask = _class_mask(result, side)
    if side.metric in ("miou", "macc"):
        return _mean_of(details.get("semantic", {}).get("iou" if side.metric == "miou" else "acc") or [], mask)
    per_class = details.get("panoptic", {}).get("per_class") or {}
    key = "pq" if side.metric == "pq" else "pq_dagger"
    return _mean_of([e.get(key) for e in per_class.values()], mask)


def _results_of(index: Mapping[Key, dict], dataset: str, split: str, model: str, seed: int) -> list[dict]:
    return [r for (d, s, m, _, sd), r in index.items() if (d, s, m, sd) == (dataset, split, model, seed)]


def side_value(index: Mapping[Key, dict], pairs: Mapping[PairRef, str], side: Side, dataset: str, split: str, seed: int) -> float | None:
    """The side's value in the claim's unit (metric value x `MetricInfo.scale`), or None when missing."""
    info = CLAIM_METRICS[side.metric]
    model = side.model
    if isinstance(model, PairRef) and side.metric == "parameters":
        total = 0.0
        for member in side.models:
            found = [raw_value(r, side) for r in _results_of(index, dataset, split, member, seed)]
            found = [v for v in found if v is not None]
            if not found:
                return None
            total += found[0]
        return info.scale * total
    name = pairs.get(model) if isinstance(model, PairRef) else model
    r = index.get((dataset, split, name, side.fusion, seed))
    if r is None:
        return None
    v = raw_value(r, side)
    return None if v is None else info.scale * v


def _bootstrap_side(index, pairs, side: Side, dataset: str, split: str, seeds: tuple[int, ...], sign: float
                    ) -> tuple[cs.BootstrapSide, tuple[str, ...]] | None:  # fmt: skip
    """Per-seed dense per-image statistics of a side (images sorted by name) and the image names;
    None when the metric cannot be resampled or a seed lacks per-image statistics."""
    info = CLAIM_METRICS[side.metric]
    if info.bootstrap is None or side.bin is not None:
        return None
    name = pairs.get(side.model) if isinstance(side.model, PairRef) else side.model
    arrays, image_sets, mask = [], [], None
    for seed in seeds:
        r = index.get((dataset, split, name, side.fusion, seed))
        stats = (r or {}).get("details", {}).get("per_image_stats")
        if not stats:
            return None
        rows = stats[info.bootstrap]
        width = 3 if info.bootstrap == "semantic" else 4
        dense = dense_per_image(rows, int(stats["num_classes"]), width)
        order = np.argsort(np.asarray(stats["images"], dtype=object).astype(str), kind="stable")
        arrays.append(dense[order])
        image_sets.append(tuple(sorted(map(str, stats["images"]))))
        mask = _class_mask(r, side)
        if mask is not None and len(mask) != dense.shape[1]:
            return None
    if len(set(image_sets)) > 1:
        return None
    statistic = {"miou": cs.miou_statistic, "macc": cs.macc_statistic, "pq": cs.pq_statistic}[side.metric](mask)
    return cs.BootstrapSide(tuple(arrays), statistic, sign, info.scale), image_sets[0] if image_sets else ()


# --------------------------------------------------------------------------- what a claim needs


def claim_needs(claim: Claim, config: Mapping, dataset: str | None = None) -> list[str]:
    """What the config lacks for ``claim`` (models, pairs, fusion methods), as config edits; with
    ``dataset``, also the models its ``datasets.NAME.models`` subset leaves out."""
    models = list(config.get("models") or [])
    methods = list((config.get("fusion") or {}).get("methods") or [])
    pairs = pair_names(config)
    missing = [m for m in claim.models() if m not in models]
    needs = [f"models: + {', '.join(missing)}"] if missing else []
    run_here = dataset_models(config, dataset) if dataset else models
    left_out = [m for m in claim.models() if m in models and m not in run_here]
    if left_out:
        needs.append(f"datasets.{dataset}.models: + {', '.join(left_out)}")
    for p in claim.pairs():
        if p not in pairs:
            needs.append(f"pairs: {{NAME: {{instances: {p.instances}, semantic: {p.semantic}}}}}")
    for side in claim.sides:
        if side.fusion != "semantic" and side.fusion not in methods:
            needs.append(f"fusion.methods: + {side.fusion}")
    return list(dict.fromkeys(needs))


def _seeds(config: Mapping) -> list[int]:
    return [int(s) for s in config.get("seeds") or [0]]


def evaluate_claim(claim: Claim, index: Mapping[Key, dict], config: Mapping, dataset: str, split: str, kind: str,
                   resamples: int = cs.BOOTSTRAP_RESAMPLES) -> ClaimRow:  # fmt: skip
    """One claim on one (dataset, split)."""
    needs = claim_needs(claim, config, dataset)
    if needs:
        return ClaimRow(claim, dataset, split, kind, needs="; ".join(needs))
    pairs = pair_names(config)
    signs = (1.0, -1.0, -1.0, 1.0)  # A - B - (C - D)
    seeds, effects, missing = [], [], []
    for seed in _seeds(config):
        values = [side_value(index, pairs, s, dataset, split, seed) for s in claim.sides]
        if any(v is None for v in values):
            missing.append(seed)
            continue
        seeds.append(seed)
        effects.append(float(sum(sign * v for sign, v in zip(signs, values))))
    notes = []
    if missing:
        notes.append(f"no value in seed(s) {missing}")
    if not seeds:
        return ClaimRow(claim, dataset, split, kind, needs=f"metrics of {', '.join(s.label() for s in claim.sides)} (none found)", notes=tuple(notes))
    summary = cs.seed_summary(effects)
    boot = None
    sides = [_bootstrap_side(index, pairs, s, dataset, split, tuple(seeds), sign) for s, sign in zip(claim.sides, signs)]
    if all(s is not None for s in sides) and len({img for _, img in sides}) == 1:
        boot = cs.paired_bootstrap([s for s, _ in sides], resamples=resamples)
    else:
        notes.append("no per-image bootstrap for this metric" if any(
            CLAIM_METRICS[s.metric].bootstrap is None or s.bin for s in claim.sides) else "per-image statistics missing or on different images")
    return ClaimRow(claim, dataset, split, kind, tuple(seeds), tuple(effects), summary, boot,
                    cs.verdict(claim.direction, summary, claim.margin), notes=tuple(notes))  # fmt: skip


def evaluate_claims(results: Iterable[dict], config: Mapping, resamples: int | None = None) -> list[ClaimRow]:
    """Every claim on every (dataset, eval split) whose kind it applies to, then a ``not run`` row for
    each claim that applies to no configured dataset (see the module docstring)."""
    index = index_results(results)
    claims_cfg = config.get("claims") or {}
    resamples = int(claims_cfg.get("bootstrap_resamples", cs.BOOTSTRAP_RESAMPLES)) if resamples is None else resamples
    overrides = claims_cfg.get("dataset_kinds") or {}
    rows: list[ClaimRow] = []
    used: set[str] = set()
    kinds = []
    for name, d in (config.get("datasets") or {}).items():
        kind = dataset_kind(name, d, overrides).kind
        kinds.append(kind)
        for split in d.get("eval_splits") or ["val"]:
            for claim in CLAIMS:
                if claim.applies_to(kind):
                    used.add(claim.id)
                    rows.append(evaluate_claim(claim, index, config, name, split, kind, resamples))
    for claim in CLAIMS:
        if claim.id not in used:
            wanted = " or ".join(k for k in claim.kinds)
            rows.append(ClaimRow(claim, None, None, None, needs=f"a {wanted} dataset (configured kinds: {sorted(set(kinds)) or 'none'})"))
    return rows


# --------------------------------------------------------------------------- run notes and rendering


def run_notes(config: Mapping) -> list[str]:
    """What the reader must know to read the verdicts: stage-1 sharing, frozen parts, seeds, statistics."""
    seeds = _seeds(config)
    notes = []
    if config.get("shared_stage1"):
        notes.append(f"Stage 1: one Mask R-CNN per dataset, trained with seed {seeds[0]} and shared by every seed's stage 2 "
                     "(`shared_stage1: true`): the spread over seeds is the heads' only; `maskrcnn_imp` repeats the same model.")  # fmt: skip
    else:
        notes.append("Stage 1: one Mask R-CNN per dataset and seed: the spread over seeds includes the detector's.")
    freeze = set((config.get("stage2") or {}).get("freeze") or [])
    joint = {"panoptic_ppm", "panoptic_minidl"} & set(config.get("models") or [])
    if "backbone" in freeze and joint:
        notes.append(
            f"Stage 2 keeps {', '.join(sorted(freeze))} frozen: joint models (`panoptic_ppm`, `panoptic_minidl`) and the "
            "semantic-only networks of the 'independent' pairs train the same head on the same stage-1 features, so the "
            "JSIS and Seamless joint-vs-independent claims compare heads' training runs, not shared vs separate backbones."
        )
    if len(seeds) < cs.MIN_SEEDS:
        notes.append(f"{len(seeds)} seed(s) configured: every verdict that ran is '{cs.NEEDS_SEEDS}' (effects still shown).")
    notes.append(
        f"Effect = A − B per seed on the same data (percentage points unless stated). Ours: mean ± sd over seeds and the "
        f"{100 * cs.LEVEL:.0f} % Student-t CI (scipy.stats.ttest_1samp). Bootstrap: {100 * cs.LEVEL:.0f} % percentile "
        "interval of the mean effect, resampling images and seeds (same images for A and B). Verdict: holds / contradicted "
        f"when the t CI excludes 0 on the claimed / other side (equivalence: CI inside / outside ±margin), else inconclusive; "
        f"'{cs.NEEDS_SEEDS}' below {cs.MIN_SEEDS} seeds. Ratio: our mean effect / the paper's."
    )
    return notes


def _num(v: float | None, digits: int = 2, signed: bool = True) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def ours_cell(row: ClaimRow) -> str:
    s = row.summary
    if s.n == 0:
        return "–"
    text = _num(s.mean) + ("" if s.sd is None else f" ± {s.sd:.2f}")
    if s.lo is not None:
        text += f" [{_num(s.lo)}, {_num(s.hi)}]"
    return text


def paper_cell(claim: Claim) -> str:
    text = "not given" if claim.paper_effect is None else _num(claim.paper_effect)
    if claim.margin is not None:
        text += f" (±{claim.margin:g})"
    return text


def verdict_cell(row: ClaimRow) -> str:
    if row.verdict == cs.NOT_RUN:
        return f"not run (needs {row.needs})"
    return row.verdict


def _comparison(claim: Claim) -> str:
    text = f"{claim.a.label()} − {claim.b.label()}"
    if claim.contrast:
        text = f"({text}) − ({claim.contrast[0].label()} − {claim.contrast[1].label()})"
    return text


def claims_frame(rows: list[ClaimRow]) -> pd.DataFrame:
    """``claims.csv``: one row per (dataset, split, claim), fixed columns, per-seed effects as ``seed:effect;...``."""
    out = []
    for r in rows:
        c, s = r.claim, r.summary
        out.append({
            "dataset": r.dataset, "split": r.split, "kind": r.kind, "claim": c.id, "paper": c.paper, "source": c.source,
            "statement": c.statement, "comparison": _comparison(c), "direction": c.direction, "margin": c.margin,
            "unit": c.unit, "paper_effect": c.paper_effect, "n_seeds": s.n, "mean": s.mean, "sd": s.sd, "ci_lo": s.lo,
            "ci_hi": s.hi, "bootstrap_lo": r.bootstrap[0] if r.bootstrap else None,
            "bootstrap_hi": r.bootstrap[1] if r.bootstrap else None, "ratio": r.ratio, "verdict": r.verdict,
            "needs": r.needs, "seed_effects": ";".join(f"{sd}:{e:.6g}" for sd, e in zip(r.seeds, r.effects)),
            "notes": "; ".join(r.notes), "paper_note": c.note,
        })  # fmt: skip
    return pd.DataFrame(out)


def claims_markdown(rows: list[ClaimRow], notes: list[str], config_hash: str = "") -> str:
    """``claims.md``: per (dataset, split) one table row per claim; then claims that applied to no dataset."""
    lines = ["# The papers' claims on this run\n"]
    if config_hash:
        lines.append(f"config hash `{config_hash}`.\n")
    lines += [f"- {n}" for n in notes] + [""]
    header = ("| claim | paper | statement | paper's effect | ours: mean ± sd [95 % CI] | n seeds | bootstrap 95 % CI | "
              "ours / paper | verdict |\n|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    groups: dict[tuple, list[ClaimRow]] = {}
    for r in rows:
        groups.setdefault((r.dataset, r.split, r.kind), []).append(r)
    for (dataset, split, kind), group in groups.items():
        if dataset is None:
            lines.append("## Claims for data this run does not have\n")
        else:
            lines.append(f"## {dataset} / {split} ({kind})\n")
        lines.append(header)
        for r in group:
            c = r.claim
            unit = "" if c.unit == "points" else f" ({c.unit})"
            boot = "–" if r.bootstrap is None else f"[{_num(r.bootstrap[0])}, {_num(r.bootstrap[1])}]"
            lines.append(
                f"| `{c.id}` | {c.source} | {c.statement}{unit} | {paper_cell(c)} | {ours_cell(r)} | {r.summary.n} | "
                f"{boot} | {_num(r.ratio, signed=False)} | {verdict_cell(r)} |"
            )
        lines.append("")
    lines.append("## What each claim compares\n")
    lines.append("| claim | effect | paper's numbers |\n|---|---|---|")
    for c in CLAIMS:
        lines.append(f"| `{c.id}` | {_comparison(c)} | {c.note} |")
    extra = [(r, n) for r in rows for n in r.notes]
    if extra:
        lines.append("\n## Left out\n")
        lines += [f"- `{r.claim.id}` on {r.dataset} / {r.split}: {n}" for r, n in extra]
    return "\n".join(lines) + "\n"


def verdict_counts(rows: list[ClaimRow]) -> dict[str, Any]:
    """Verdict -> number of rows (for the aggregate's log line and provenance)."""
    out: dict[str, Any] = {v: 0 for v in cs.VERDICTS}
    for r in rows:
        out[r.verdict] += 1
    return out
