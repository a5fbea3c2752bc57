"""Claims statistics: the seed summary and the paired bootstrap against direct computations; verdicts."""

import numpy as np
import pytest
import scipy.stats

from segfusion import claim_statistics as cs
from segfusion.metrics.semantic import SemanticConfusion
from segfusion.metrics.statistics import dense_per_image


def test_seed_summary_is_the_student_t_interval():
    x = np.array([1.0, 2.5, 0.7, 3.1])
    s = cs.seed_summary(x)
    half = scipy.stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    assert s.n == 4 and s.mean == pytest.approx(x.mean()) and s.sd == pytest.approx(x.std(ddof=1))
    assert (s.lo, s.hi) == pytest.approx((x.mean() - half, x.mean() + half))
    assert cs.seed_summary([2.0]) == cs.SeedSummary(1, 2.0, None, None, None)
    assert cs.seed_summary([]).n == 0
    assert (cs.seed_summary([1.5, 1.5, 1.5]).lo, cs.seed_summary([1.5, 1.5, 1.5]).hi) == (1.5, 1.5)
    with pytest.raises(ValueError, match="finite"):
        cs.seed_summary([1.0, float("nan")])


@pytest.mark.parametrize(
    "effects, direction, margin, expected",
    [
        ([2.0, 2.2, 1.9], "greater", None, cs.HOLDS),
        ([-2.0, -2.2, -1.9], "greater", None, cs.CONTRADICTED),
        ([2.0, -1.0, 0.5], "greater", None, cs.INCONCLUSIVE),
        ([-2.0, -2.2, -1.9], "less", None, cs.HOLDS),
        ([2.0, 2.2, 1.9], "less", None, cs.CONTRADICTED),
        ([0.1, -0.1, 0.05], "equivalent", 1.0, cs.HOLDS),
        ([5.0, 5.2, 4.9], "equivalent", 1.0, cs.CONTRADICTED),
        ([0.5, 1.5, 1.0], "equivalent", 1.0, cs.INCONCLUSIVE),
        ([2.0, 2.2], "greater", None, cs.NEEDS_SEEDS),
        ([9.0], "equivalent", 1.0, cs.NEEDS_SEEDS),
        ([], "greater", None, cs.NOT_RUN),
    ],
)
def test_verdicts(effects, direction, margin, expected):
    assert cs.verdict(direction, cs.seed_summary(effects), margin) == expected


def test_verdict_rejects_bad_arguments():
    with pytest.raises(ValueError, match="direction"):
        cs.verdict("bigger", cs.seed_summary([1, 2, 3]))
    with pytest.raises(ValueError, match="margin"):
        cs.verdict("equivalent", cs.seed_summary([1, 2, 3]))


def test_magnitude_ratio():
    assert cs.magnitude_ratio(1.0, 4.0) == 0.25
    assert cs.magnitude_ratio(1.0, 0.0) is None and cs.magnitude_ratio(None, 2.0) is None and cs.magnitude_ratio(1.0, None) is None


def _semantic_rows(rng, n_images, c, h=6, w=7):
    """Per-image [class, tp, gt, pred] rows and the images' maps (as evaluation.py builds them)."""
    from segfusion.evaluation import _semantic_row

    rows, maps = [], []
    for _ in range(n_images):
        gt = rng.integers(0, c, (h, w))
        pred = np.where(rng.random((h, w)) < 0.6, gt, rng.integers(0, c, (h, w)))
        one = SemanticConfusion(c)
        one.update(gt, pred)
        rows.append(_semantic_row(one.confusion))
        maps.append((gt, pred))
    return rows, maps


def test_statistics_of_unit_weights_are_the_metrics():
    """With every image once, the bootstrap statistics equal SemanticConfusion's mIoU / mAcc (class subsets too)."""
    rng = np.random.default_rng(0)
    c = 5
    thing = np.array([False, False, True, True, True])
    rows, maps = _semantic_rows(rng, 4, c)
    acc = SemanticConfusion(c, is_thing=tuple(thing))
    for gt, pred in maps:
        acc.update(gt, pred)
    r = acc.result()
    sums = dense_per_image(rows, c, 3).sum(axis=0)[None]
    assert cs.miou_statistic()(sums)[0] == pytest.approx(r["miou"])
    assert cs.miou_statistic(thing)(sums)[0] == pytest.approx(r["miou_things"])
    assert cs.miou_statistic(~thing)(sums)[0] == pytest.approx(r["miou_stuff"])
    assert cs.macc_statistic()(sums)[0] == pytest.approx(r["macc"])


def test_pq_statistic_follows_panopticapi():
    s = np.array([[[2, 1, 1, 1.6], [0, 0, 0, 0.0], [0, 2, 0, 0.0]]], float)  # class 1 absent
    assert cs.pq_statistic()(s)[0] == pytest.approx((1.6 / 3 + 0.0) / 2)
    assert cs.pq_statistic(np.array([True, True, False]))(s)[0] == pytest.approx(1.6 / 3)


def test_paired_bootstrap_equals_a_direct_computation():
    rng = np.random.default_rng(1)
    c, n, seeds = 4, 6, 3
    a = [dense_per_image(_semantic_rows(rng, n, c)[0], c, 3) for _ in range(seeds)]
    b = [dense_per_image(_semantic_rows(rng, n, c)[0], c, 3) for _ in range(seeds)]
    sides = [cs.BootstrapSide(tuple(a), cs.miou_statistic(), 1.0), cs.BootstrapSide(tuple(b), cs.miou_statistic(), -1.0)]
    got = cs.paired_bootstrap(sides, resamples=200, seed=5)

    # direct: the same draws, one replicate at a time, with SemanticConfusion-free loops
    weights, drawn = cs.bootstrap_weights(n, seeds, 200, 5)

    def miou(stats, w):
        tp, gt, pred = (w[:, None, None] * stats).sum(axis=0).T
        denom = gt + pred - tp
        return np.mean([tp[k] / denom[k] for k in range(c) if denom[k] > 0])

    values = []
    for r in range(200):
        per_seed = [100 * (miou(a[s], weights[r]) - miou(b[s], weights[r])) for s in range(seeds)]
        values.append(np.mean([per_seed[j] for j in drawn[r]]))
    assert got == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])))
    # the images drawn are a multiset of the N images
    assert (weights.sum(axis=1) == n).all()


def test_paired_bootstrap_of_identical_sides_is_zero_and_rejects_misaligned_inputs():
    rng = np.random.default_rng(2)
    a = tuple(dense_per_image(_semantic_rows(rng, 5, 3)[0], 3, 3) for _ in range(2))
    same = [cs.BootstrapSide(a, cs.miou_statistic(), 1.0), cs.BootstrapSide(a, cs.miou_statistic(), -1.0)]
    assert cs.paired_bootstrap(same, resamples=50) == (0.0, 0.0)
    with pytest.raises(ValueError, match="seed counts"):
        cs.paired_bootstrap([same[0], cs.BootstrapSide(a[:1], cs.miou_statistic(), -1.0)])
    with pytest.raises(ValueError, match="image counts"):
        cs.paired_bootstrap([same[0], cs.BootstrapSide((a[0][:4], a[1][:4]), cs.miou_statistic(), -1.0)])
