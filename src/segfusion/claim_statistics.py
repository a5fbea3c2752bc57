"""Pure statistics of the claims (DESIGN.md "Claims"): effects over seeds, their 95 % CI, the
paired bootstrap over images x seeds and the verdict. No I/O.

It lives beside `segfusion.metrics` rather than in it: the workflow's evaluate jobs depend on
every file of ``metrics/``, so an edit here would rerun every evaluation.

* **Over seeds** (`seed_summary`): the effect of a claim in seed s is the paired difference
  A_s - B_s on the same data. Mean, sample standard deviation (ddof 1) and the two-sided
  Student-t interval ``mean ± t_{n-1, 0.975} sd / sqrt(n)`` (``scipy.stats.ttest_1samp(...)
  .confidence_interval``). With one seed there is no interval; with zero spread the interval
  is the point.
* **Paired bootstrap** (`paired_bootstrap`), the second view: each replicate draws the seeds
  with replacement and, independently, the images with replacement (one draw shared by every
  seed and both sides: the same test images), recomputes each side's dataset-level metric
  from the summed per-image class statistics with the metric's own rules, and averages the
  per-seed paired effects over the drawn seeds; the interval is the percentile interval.
  It covers test-set sampling and, coarsely with few seeds, training variance.
* **Verdict** (`verdict`): with fewer than `MIN_SEEDS` seeds, ``needs ≥ 3 seeds``; else, for a
  claimed increase (decrease), ``holds`` when the t interval excludes 0 on the claimed side,
  ``contradicted`` when it excludes 0 on the other side, else ``inconclusive``. For an
  equivalence claim with margin m: ``holds`` when the interval lies inside [-m, m],
  ``contradicted`` when it lies entirely outside it, else ``inconclusive`` (a 95 % interval,
  i.e. stricter than the 90 % interval of a two one-sided test at 5 %).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import scipy.stats

from segfusion.metrics.statistics import class_iou

LEVEL = 0.95
MIN_SEEDS = 3
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0

HOLDS, CONTRADICTED, INCONCLUSIVE = "holds", "contradicted", "inconclusive"
NEEDS_SEEDS = f"needs ≥ {MIN_SEEDS} seeds"
NOT_RUN = "not run"
VERDICTS = (HOLDS, CONTRADICTED, INCONCLUSIVE, NEEDS_SEEDS, NOT_RUN)


@dataclass(frozen=True)
class SeedSummary:
    """Effects over seeds: n, mean, sd (ddof 1; None with n < 2) and the Student-t interval
    (None with n < 2)."""

    n: int
    mean: float | None
    sd: float | None
    lo: float | None
    hi: float | None
    level: float = LEVEL


def seed_summary(effects: Sequence[float], level: float = LEVEL) -> SeedSummary:
    """Mean, sd and the two-sided Student-t ``level`` interval of per-seed effects (see the module docstring)."""
    if not 0 < level < 1:
        raise ValueError(f"seed_summary: level must be in (0, 1), got {level}")
    x = np.asarray(list(effects), dtype=np.float64)
    if x.size and not np.isfinite(x).all():
        raise ValueError(f"seed_summary: effects must be finite, got {x.tolist()}")
    n = int(x.size)
    if n == 0:
        return SeedSummary(0, None, None, None, None, level)
    mean = float(x.mean())
    if n == 1:
        return SeedSummary(1, mean, None, None, None, level)
    sd = float(x.std(ddof=1))
    if sd == 0.0:
        return SeedSummary(n, mean, 0.0, mean, mean, level)
    ci = scipy.stats.ttest_1samp(x, 0.0).confidence_interval(level)
    return SeedSummary(n, mean, sd, float(ci.low), float(ci.high), level)


def verdict(direction: str, summary: SeedSummary, margin: float | None = None, min_seeds: int = MIN_SEEDS) -> str:
    """The verdict of a claim from its per-seed summary (see the module docstring).

    direction: ``greater`` / ``less`` (A - B > 0 / < 0) or ``equivalent`` (needs ``margin``).
    Zero seeds is ``not run``.
    """
    if direction not in ("greater", "less", "equivalent"):
        raise ValueError(f"verdict: unknown direction {direction!r}")
    if summary.n == 0:
        return NOT_RUN
    if summary.n < min_seeds:
        return NEEDS_SEEDS
    lo, hi = summary.lo, summary.hi
    if direction == "equivalent":
        if margin is None or margin <= 0:
            raise ValueError(f"verdict: an equivalence claim needs a margin > 0, got {margin}")
        if -margin <= lo and hi <= margin:
            return HOLDS
        if lo > margin or hi < -margin:
            return CONTRADICTED
        return INCONCLUSIVE
    sign = 1.0 if direction == "greater" else -1.0
    lo, hi = sorted((sign * lo, sign * hi))
    if lo > 0:
        return HOLDS
    if hi < 0:
        return CONTRADICTED
    return INCONCLUSIVE


def magnitude_ratio(ours: float | None, paper: float | None) -> float | None:
    """Our mean effect over the paper's (None when either is missing or the paper's is 0)."""
    if ours is None or paper is None or paper == 0:
        return None
    return float(ours / paper)


# --------------------------------------------------------------------------- metrics from summed per-image statistics

Statistic = Callable[[np.ndarray], np.ndarray]
"""Summed per-image class statistics (R, C, W) -> one metric value per resample (R,), NaN where undefined."""


def _masked_mean(values: np.ndarray, present: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if mask is not None:
        present = present & np.asarray(mask, dtype=bool)
    n = present.sum(axis=-1)
    total = np.where(present, values, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def miou_statistic(mask: np.ndarray | None = None) -> Statistic:
    """mIoU over the classes of ``mask`` (all when None) from (R, C, 3) sums of ``tp, gt_pixels,
    predicted_pixels`` (the rules of `SemanticConfusion`: classes with GT + P = 0 excluded)."""

    def stat(s: np.ndarray) -> np.ndarray:
        iou = class_iou(s[..., 0], s[..., 1], s[..., 2])
        return _masked_mean(np.nan_to_num(iou), ~np.isnan(iou), mask)

    return stat


def macc_statistic(mask: np.ndarray | None = None) -> Statistic:
    """mAcc (mean over classes with ground truth of TP / GT) from (R, C, 3) semantic sums."""

    def stat(s: np.ndarray) -> np.ndarray:
        gt = s[..., 1]
        present = gt > 0
        acc = s[..., 0] / np.where(present, gt, 1.0)
        return _masked_mean(acc, present, mask)

    return stat


def pq_statistic(mask: np.ndarray | None = None) -> Statistic:
    """PQ over the classes of ``mask`` from (R, C, 4) sums of ``tp, fp, fn, iou_sum`` (panopticapi
    rules: PQ_c = iou_sum / (TP + FP/2 + FN/2) over classes with TP + FP + FN > 0)."""

    def stat(s: np.ndarray) -> np.ndarray:
        tp, fp, fn, iou = s[..., 0], s[..., 1], s[..., 2], s[..., 3]
        denom = tp + 0.5 * fp + 0.5 * fn
        present = (tp + fp + fn) > 0
        return _masked_mean(iou / np.where(present, denom, 1.0), present, mask)

    return stat


@dataclass(frozen=True)
class BootstrapSide:
    """One side of a comparison for the bootstrap: per-seed per-image statistics and how to score them.

    per_seed: one (N, C, W) array per seed, rows in the same image order for every seed and side;
    statistic: `Statistic` of the sums; sign: +1 for A (and C), -1 for B (and D); scale: effect units.
    """

    per_seed: tuple[np.ndarray, ...]
    statistic: Statistic
    sign: float = 1.0
    scale: float = 100.0


def bootstrap_weights(n_images: int, n_seeds: int, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The draws of `paired_bootstrap`: image multiplicities (R, N) and drawn seed indices (R, S),
    from ``numpy.random.default_rng(seed)`` (images first, then seeds)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_images, size=(resamples, n_images))
    weights = np.zeros((resamples, n_images), dtype=np.float64)
    np.add.at(weights, (np.arange(resamples)[:, None], idx), 1.0)
    seeds = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    return weights, seeds


def paired_bootstrap(
    sides: Sequence[BootstrapSide],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = LEVEL,
) -> tuple[float, float] | None:
    """Percentile ``level`` interval of the mean paired effect, resampling images and seeds (see the
    module docstring); None without images, seeds or any defined replicate."""
    if not 0 < level < 1:
        raise ValueError(f"paired_bootstrap: level must be in (0, 1), got {level}")
    if not sides or resamples < 1:
        return None
    n_seeds = {len(s.per_seed) for s in sides}
    if len(n_seeds) != 1:
        raise ValueError(f"paired_bootstrap: sides have different seed counts {sorted(n_seeds)}")
    n_seeds = n_seeds.pop()
    n_images = {a.shape[0] for s in sides for a in s.per_seed}
    if len(n_images) > 1:
        raise ValueError(f"paired_bootstrap: sides or seeds cover different image counts {sorted(n_images)}")
    if n_seeds == 0 or not n_images or (n := n_images.pop()) == 0:
        return None
    weights, drawn = bootstrap_weights(n, n_seeds, resamples, seed)
    effect = np.zeros((n_seeds, resamples))  # per seed, per replicate
    for side in sides:
        for s, stats in enumerate(side.per_seed):
            c, w = stats.shape[1], stats.shape[2]
            sums = (weights @ stats.reshape(n, c * w)).reshape(resamples, c, w)
            effect[s] += side.sign * side.scale * side.statistic(sums)
    replicate = effect[drawn, np.arange(resamples)[:, None]].mean(axis=1)
    replicate = replicate[~np.isnan(replicate)]
    if replicate.size == 0:
        return None
    lo, hi = np.percentile(replicate, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)
