"""The claims registry is consistent with the model, fusion, metric, format and flavour registries."""

import pytest

from segfusion.claims import (
    CLAIM_METRICS,
    CLAIMS,
    DATASET_KINDS,
    FORMAT_KINDS,
    Claim,
    PairRef,
    Side,
    dataset_kind,
)
from segfusion.datasets.registry import FORMATS
from segfusion.datasets.synthetic import FLAVOURS
from segfusion.evaluation import UNIT_INTERVAL_KEYS
from segfusion.fusion import FUSION_METHODS
from segfusion.metrics.instance import AP_KEYS
from segfusion.specs import MODEL_PRESETS

# Every flat key gather_states can write for a whole class list.
GATHERED_KEYS = {*UNIT_INTERVAL_KEYS, "parameters", "flops"} | {
    f"{k}{kind}{suffix}" for k in AP_KEYS for kind in ("_box", "_mask") for suffix in ("", "_before_fusion")
}


def _fusions(model: str | PairRef) -> set[str]:
    """What the workflow fuses for a model (`fusions_for` in common.smk): detector-less and head-less
    models only their semantic output; pairs and models with both, every method."""
    if isinstance(model, PairRef):
        return set(FUSION_METHODS)
    v = MODEL_PRESETS[model]
    return set(FUSION_METHODS) if v.detector and v.trains_stage2 else {"semantic"}


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.id)
def test_every_side_names_registered_models_fusions_and_metrics(claim):
    for side in claim.sides:
        for model in side.models:
            assert model in MODEL_PRESETS, (claim.id, model)
        if isinstance(side.model, PairRef):
            assert MODEL_PRESETS[side.model.instances].detector, claim.id
        assert side.fusion in FUSION_METHODS and side.fusion in _fusions(side.model), (claim.id, side.label())
        info = CLAIM_METRICS[side.metric]
        assert info.key is None or info.key in GATHERED_KEYS, side.metric
    if claim.paper_effect is not None and claim.direction != "equivalent":
        assert (claim.paper_effect > 0) == (claim.direction == "greater"), claim.id
    if claim.direction == "equivalent":
        assert abs(claim.paper_effect) <= claim.margin, claim.id


def test_the_issues_eight_claims_are_all_there():
    ids = [c.id for c in CLAIMS]
    assert len(ids) == len(set(ids))
    sources = " ".join(c.source for c in CLAIMS)
    for ref in ("IMP Table 1", "IMP Table 4", "Table 3 (ModaNet)", "IMP Fig. 5", "Costea Table 1", "JSIS Table 3", "Seamless Sec. 5", "Seamless Sec. 4"):
        assert ref in sources, ref
    by_id = {c.id: c for c in CLAIMS}
    assert by_id["imp_t1_p2_miou"].paper_effect == 9.45 and by_id["imp_t1_fpn_macc"].paper_effect == 4.44
    assert by_id["imp_t4_things"].paper_effect == 3.2 and by_id["seamless_t1_pq"].margin == 1.0
    assert by_id["imp_fig5_boundary"].contrast is not None


def test_kinds_cover_the_formats_and_flavours():
    assert set(FORMAT_KINDS) == set(FORMATS)
    assert set(FLAVOURS) <= set(DATASET_KINDS) and set(FORMAT_KINDS.values()) <= set(DATASET_KINDS)
    assert dataset_kind("s", {"synthesize": {"flavour": "clothing"}, "format": "cityscapes"}).kind == "clothing"
    assert dataset_kind("c", {"format": "cityscapes", "synthesize": None}).kind == "street"
    assert dataset_kind("c", {"format": "cityscapes"}, {"c": "general"}).kind == "general"


def test_sides_and_claims_reject_inconsistent_definitions():
    with pytest.raises(ValueError, match="unknown metric"):
        Side("panoptic_fpn", "semantic", "mIoU")
    with pytest.raises(ValueError, match="class subsets"):
        Side("panoptic_fpn", "semantic", "ap_mask", classes="things")
    with pytest.raises(ValueError, match="bin"):
        Side("panoptic_fpn", "semantic", "miou", bin="near")
    a, b = Side("x", "semantic", "miou"), Side("y", "semantic", "miou")
    with pytest.raises(ValueError, match="margin"):
        Claim("c", "P", "T", "s", a, b, "equivalent", 0.0, ("any",))
    with pytest.raises(ValueError, match="units"):
        Claim("c", "P", "T", "s", a, Side("y", "semantic", "parameters"), "greater", 1.0, ("any",))
    with pytest.raises(ValueError, match="kinds"):
        Claim("c", "P", "T", "s", a, b, "greater", 1.0, ("moon",))
