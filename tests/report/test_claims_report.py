"""The claims table on hand-made metric tables: holds, contradicted, inconclusive, needs seeds, not run;
pairs, parameter sums, the bootstrap view, claims.md / claims.csv / the forest plot."""

import numpy as np
import pytest

from segfusion import claim_statistics as cs
from segfusion.claims import CLAIMS, CLAIMS_BY_ID
from segfusion.report.aggregate import write_claims
from segfusion.report.claims import claims_frame, claims_markdown, evaluate_claims, run_notes

NAMES = ["road", "sky", "car", "person"]
THING = [False, False, True, True]


def result(model, fusion, seed, miou_things=0.5, miou_stuff=0.5, pq=0.5, parameters=1e6, dataset="d", split="val", stats=None):
    """A gathered metrics JSON with the keys the claims read."""
    iou = [miou_stuff, miou_stuff, miou_things, miou_things]
    details = {
        "semantic": {"iou": iou, "acc": iou},
        "panoptic": {"per_class": {n: {"pq": pq, "pq_dagger": pq} for n in NAMES}},
        "classes": {"names": NAMES, "is_thing": THING},
        "boundary": {"within": [{"hi": 2.0, "miou": miou_things}, {"hi": None, "miou": np.mean(iou)}]},
    }
    if stats is not None:
        details["per_image_stats"] = stats
    return {
        "meta": {"dataset": dataset, "split": split, "model": model, "fusion": fusion, "seed": seed},
        "metrics": {"miou": float(np.mean(iou)), "miou_things": miou_things, "miou_stuff": miou_stuff, "macc": float(np.mean(iou)),
                    "pq": pq, "pq_things": pq, "pq_stuff": pq, "pq_dagger": pq, "parameters": parameters},
        "details": details,
    }  # fmt: skip


def config(models, seeds, pairs=None, flavour="street", methods=("semantic", "kirillov", "seamless", "jsis", "costea")):
    return {
        "datasets": {"d": {"format": "cityscapes", "synthesize": {"flavour": flavour}, "eval_splits": ["val"]}},
        "models": list(models), "seeds": list(seeds), "pairs": pairs or {}, "fusion": {"methods": list(methods)},
        "stage2": {"freeze": ["backbone", "rpn", "roi_heads"]},
    }  # fmt: skip


def rows_by_id(rows, dataset="d"):
    return {r.claim.id: r for r in rows if r.dataset == dataset}


def imp_results(things_delta, seeds=(0, 1, 2), stuff_delta=(0.0, 0.0, 0.0)):
    out = []
    for s, d, sd in zip(seeds, things_delta, stuff_delta):
        out.append(result("panoptic_fpn", "semantic", s, miou_things=0.40, miou_stuff=0.60))
        out.append(result("panoptic_fpn_imp", "semantic", s, miou_things=0.40 + d, miou_stuff=0.60 + sd))
    return out


@pytest.mark.parametrize(
    "deltas, expected",
    [((0.03, 0.031, 0.029), cs.HOLDS), ((-0.03, -0.031, -0.029), cs.CONTRADICTED), ((0.03, -0.02, 0.001), cs.INCONCLUSIVE)],
)
def test_verdict_of_a_claim_from_a_metric_table(deltas, expected):
    rows = rows_by_id(evaluate_claims(imp_results(deltas), config(["panoptic_fpn", "panoptic_fpn_imp"], [0, 1, 2])))
    r = rows["imp_t4_things"]
    assert r.verdict == expected and r.seeds == (0, 1, 2)
    assert r.effects == pytest.approx([100 * d for d in deltas])
    assert r.summary.mean == pytest.approx(100 * np.mean(deltas))
    assert r.ratio == pytest.approx(100 * np.mean(deltas) / 3.2)
    # stuff unchanged within ±1 point: holds with zero stuff deltas
    assert rows["imp_t4_stuff"].verdict == cs.HOLDS and rows["imp_t4_stuff"].summary.mean == pytest.approx(0.0)


def test_fewer_than_three_seeds_needs_seeds_and_shows_the_effect():
    rows = rows_by_id(evaluate_claims(imp_results((0.03, 0.03), seeds=(0, 1)), config(["panoptic_fpn", "panoptic_fpn_imp"], [0, 1])))
    r = rows["imp_t4_things"]
    assert r.verdict == cs.NEEDS_SEEDS and r.summary.n == 2 and r.summary.mean == pytest.approx(3.0)


def test_claims_not_run_say_what_they_need_and_none_is_dropped():
    rows = evaluate_claims(imp_results((0.03, 0.03, 0.03)), config(["panoptic_fpn", "panoptic_fpn_imp"], [0, 1, 2], methods=["semantic", "kirillov"]))
    # every claim appears: street ones on dataset d, clothing ones as 'data this run does not have'
    assert {r.claim.id for r in rows} == {c.id for c in CLAIMS}
    by = rows_by_id(rows)
    assert by["costea_t1_head"].verdict == cs.NOT_RUN and "models: + panoptic_asp_rp" in by["costea_t1_head"].needs
    assert "fusion.methods: + costea" in by["costea_t1_fusion_miou"].needs
    assert "pairs: {NAME: {instances: maskrcnn_imp, semantic: semantic_minidl}}" in by["seamless_t1_pq"].needs
    clothing = [r for r in rows if r.dataset is None]
    assert {r.claim.id for r in clothing} == {c.id for c in CLAIMS if "clothing" in c.kinds}
    assert all(r.verdict == cs.NOT_RUN and "clothing dataset" in r.needs for r in clothing)
    md = claims_markdown(rows, run_notes(config(["panoptic_fpn"], [0, 1, 2])))
    for c in CLAIMS:
        assert f"`{c.id}`" in md
    assert "not run (needs models: + panoptic_asp_rp)" in md and "## Claims for data this run does not have" in md


def test_configured_models_without_metrics_are_not_run():
    rows = rows_by_id(evaluate_claims([], config(["panoptic_fpn", "panoptic_fpn_imp"], [0, 1, 2])))
    assert rows["imp_t4_things"].verdict == cs.NOT_RUN and "none found" in rows["imp_t4_things"].needs


def test_pairs_are_found_by_their_members_and_parameters_add_up():
    pairs = {"indep": {"instances": "maskrcnn_imp", "semantic": "semantic_minidl"}}
    res = []
    for s in (0, 1, 2):
        res += [
            result("panoptic_minidl", "seamless", s, pq=0.50 + 0.001 * s, parameters=3e6),
            result("indep", "seamless", s, pq=0.50, parameters=2e6),  # the pair's own figure is its instances model's
            result("maskrcnn_imp", "semantic", s, parameters=2e6),
            result("semantic_minidl", "semantic", s, parameters=2.5e6),
        ]
    rows = rows_by_id(evaluate_claims(res, config(["maskrcnn_imp", "semantic_minidl", "panoptic_minidl"], [0, 1, 2], pairs)))
    assert rows["seamless_t1_pq"].verdict == cs.HOLDS  # 0.0 to 0.2 points, within ±1
    assert rows["seamless_t1_pq"].effects == pytest.approx([0.0, 0.1, 0.2])
    p = rows["seamless_params"]
    assert p.effects == pytest.approx([3.0 - 4.5] * 3) and p.verdict == cs.HOLDS and p.claim.unit == "M parameters"


def _stats(rng, n_images=5):
    rows = []
    for _ in range(n_images):
        rows.append([[k, int(rng.integers(1, 5)), int(rng.integers(5, 9)), int(rng.integers(5, 9))] for k in range(4)])
    return {"num_classes": 4, "images": [f"i{k}" for k in range(n_images)], "semantic": rows, "panoptic": [[] for _ in rows]}


def test_bootstrap_view_when_per_image_statistics_exist():
    rng = np.random.default_rng(0)
    res = []
    for s in (0, 1, 2):
        res.append(result("panoptic_fpn", "semantic", s, stats=_stats(rng)))
        res.append(result("panoptic_fpn_imp", "semantic", s, miou_things=0.53, stats=_stats(rng)))
    rows = rows_by_id(evaluate_claims(res, config(["panoptic_fpn", "panoptic_fpn_imp"], [0, 1, 2]), resamples=100))
    lo, hi = rows["imp_t4_things"].bootstrap
    assert lo <= hi
    clothing = rows_by_id(evaluate_claims(res, config(["panoptic_fpn", "panoptic_fpn_imp"], [0, 1, 2], flavour="clothing"), resamples=100))
    fig5 = clothing["imp_fig5_boundary"]  # (near gain 3 points) - (all-pixel gain 1.5 points)
    assert fig5.effects == pytest.approx([1.5, 1.5, 1.5]) and fig5.verdict == cs.HOLDS
    assert fig5.bootstrap is None and "no per-image bootstrap" in fig5.notes[0]  # boundary bins are not resampled per image


def test_claims_files_and_forest_plot(tmp_path):
    (tmp_path / "plots").mkdir()
    res = imp_results((0.03, 0.031, 0.029)) + [result("panoptic_fpn", "seamless", s) for s in (0, 1, 2)]
    written = write_claims(res, tmp_path, config(["panoptic_fpn", "panoptic_fpn_imp"], [0, 1, 2]), "abc")
    assert [p.name for p in written] == ["claims-d.png"] and written[0].stat().st_size > 0
    md = (tmp_path / "claims.md").read_text()
    assert "## d / val (street)" in md and "| `imp_t4_things` |" in md and "holds" in md
    import pandas as pd

    df = pd.read_csv(tmp_path / "claims.csv")
    assert set(df.claim) == {c.id for c in CLAIMS}
    row = df[(df.claim == "imp_t4_things") & (df.dataset == "d")].iloc[0]
    assert row.verdict == "holds" and row.n_seeds == 3 and row.paper_effect == 3.2 and row.seed_effects.startswith("0:3")
    assert list(claims_frame([]).columns) == []


def test_run_notes_say_whether_stage1_was_shared():
    cfg = config(["panoptic_ppm"], [0, 1, 2])
    assert any("one Mask R-CNN per dataset and seed" in n for n in run_notes(cfg))
    assert any("joint-vs-independent" in n for n in run_notes(cfg))
    cfg["shared_stage1"] = True
    assert any("shared by every seed" in n for n in run_notes(cfg))
    assert CLAIMS_BY_ID["imp_t4_things"].applies_to("street")


def test_a_model_left_out_of_a_dataset_makes_its_claims_not_run_there():
    cfg = config(["panoptic_fpn", "panoptic_fpn_imp"], [0, 1, 2])
    cfg["datasets"]["d"]["models"] = ["panoptic_fpn"]
    by = rows_by_id(evaluate_claims(imp_results((0.03, 0.03, 0.03)), cfg))
    assert by["imp_t4_things"].verdict == cs.NOT_RUN
    assert by["imp_t4_things"].needs == "datasets.d.models: + panoptic_fpn_imp"
