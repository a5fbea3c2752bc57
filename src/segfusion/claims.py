"""The papers' claims as tested hypotheses (DESIGN.md "Claims"): a pure registry, no I/O.

Each `Claim` compares two `Side`\\ s, A and B, each a (model, fusion, metric) with an optional
class subset or boundary bin; its effect in one seed is the paired difference A - B on the
same data and seed (`segfusion.report.claims` computes it, `segfusion.claim_statistics`
turns the per-seed effects into a mean, a 95 % CI and a verdict). Numbers are the papers'
own (``../shared/papers/*.txt``), in percentage points unless ``unit`` says otherwise; where
a paper's text and its table disagree, the table's difference is the effect and the text's
number is in ``note``.

A side's model is a model name (config ``models``) or a `PairRef`: the "independent"
networks of JSIS and Seamless, i.e. the instances of one model fused with the semantic
output of another (config ``pairs``), found in the config by its members, not its name.

Registries here: `CLAIM_METRICS` (what a side can measure), `CLASS_SUBSETS`, `BINS`,
`DIRECTIONS`, `DATASET_KINDS` / `FORMAT_KINDS` (what data a claim applies to) and `CLAIMS`.
`tests/test_claims.py` holds them consistent with the model, fusion and metric registries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

# --------------------------------------------------------------------------- what a side measures


@dataclass(frozen=True)
class MetricInfo:
    """One measurable quantity of a gathered metrics JSON.

    key:       the flat ``metrics`` key for the whole class list (None: derived only);
    scale:     effect unit per metric unit (100: fractions -> percentage points);
    unit:      the effect's unit, as printed;
    subsets:   class subsets the metric can be restricted to (``"class"`` = one named class);
    bootstrap: which per-image statistics recompute it in the paired bootstrap
               (``"semantic"``: TP, GT, predicted pixels per class; ``"panoptic"``: TP, FP,
               FN, IoU sum per class), or None when it cannot be resampled per image.
    """

    key: str | None
    scale: float = 100.0
    unit: str = "points"
    subsets: tuple[str, ...] = ("all",)
    bootstrap: str | None = None


CLASS_SUBSETS = ("all", "things", "stuff", "class")
"""Class subsets of a side: every class, thing classes, stuff classes, or one named class
(``Side.class_name``)."""

BINS = ("near", "all")
"""Boundary bins of ``boundary_miou`` (IMP Fig. 5 reading, `segfusion.metrics.boundary`):
``near`` = pixels within the first bin edge of a ground-truth boundary (config
``evaluate.boundary_bins``; 2 px by default), ``all`` = every pixel (the last "within" entry)."""

CLAIM_METRICS: Mapping[str, MetricInfo] = {
    "miou": MetricInfo("miou", subsets=CLASS_SUBSETS, bootstrap="semantic"),
    "macc": MetricInfo("macc", subsets=CLASS_SUBSETS, bootstrap="semantic"),
    "pq": MetricInfo("pq", subsets=CLASS_SUBSETS, bootstrap="panoptic"),
    "pq_dagger": MetricInfo("pq_dagger", subsets=("all", "things", "stuff", "class")),
    "ap_mask": MetricInfo("ap_mask"),
    "ap50_mask": MetricInfo("ap50_mask"),
    "ap_mask_before_fusion": MetricInfo("ap_mask_before_fusion"),
    "ap50_mask_before_fusion": MetricInfo("ap50_mask_before_fusion"),
    "parameters": MetricInfo("parameters", scale=1e-6, unit="M parameters"),
    "boundary_miou": MetricInfo(None),
}
"""The registry of claim metrics: name -> `MetricInfo`. Keys are those of
`segfusion.evaluation.gather_states` (``boundary_miou`` reads ``details.boundary.within``)."""

DIRECTIONS = ("greater", "less", "equivalent")
"""``greater``: A - B > 0; ``less``: A - B < 0; ``equivalent``: |A - B| <= the claim's margin."""

DATASET_KINDS = ("street", "clothing", "general")
"""Kinds of data a claim applies to; a claim's ``kinds`` may also hold ``"any"``."""

FORMAT_KINDS: Mapping[str, str] = {
    "cityscapes": "street",
    "coco_panoptic": "general",
    "modanet": "clothing",
    "vcp": "clothing",
    "maps": "general",
}
"""The kind of a dataset of each raw format (`segfusion.datasets.registry.FORMATS`); synthetic
data take their generator flavour (street / clothing); config ``claims.dataset_kinds`` overrides."""


@dataclass(frozen=True)
class PairRef:
    """An "independent" pair: the instances of model ``instances`` fused with the semantic output
    of model ``semantic`` (config ``pairs: {NAME: {instances, semantic}}``, any NAME)."""

    instances: str
    semantic: str

    def __str__(self) -> str:
        return f"pair({self.instances} instances + {self.semantic} semantic)"


@dataclass(frozen=True)
class Side:
    """One side of a comparison: ``metric`` of ``model``'s output fused with ``fusion``.

    classes:    a `CLASS_SUBSETS` entry; ``"class"`` needs ``class_name``;
    bin:        a `BINS` entry, for ``boundary_miou`` only.
    """

    model: str | PairRef
    fusion: str
    metric: str
    classes: str = "all"
    class_name: str | None = None
    bin: str | None = None

    def __post_init__(self) -> None:
        if self.metric not in CLAIM_METRICS:
            raise ValueError(f"Side: unknown metric {self.metric!r}; valid: {sorted(CLAIM_METRICS)}")
        info = CLAIM_METRICS[self.metric]
        if self.classes not in info.subsets:
            raise ValueError(f"Side: metric {self.metric!r} takes class subsets {list(info.subsets)}, not {self.classes!r}")
        if (self.classes == "class") != (self.class_name is not None):
            raise ValueError("Side: classes='class' and class_name go together")
        if (self.metric == "boundary_miou") != (self.bin is not None):
            raise ValueError(f"Side: a boundary bin goes with boundary_miou only (metric {self.metric!r}, bin {self.bin!r})")
        if self.bin is not None and self.bin not in BINS:
            raise ValueError(f"Side: unknown bin {self.bin!r}; valid: {list(BINS)}")

    @property
    def models(self) -> tuple[str, ...]:
        """The configured models this side needs (both members of a pair)."""
        m = self.model
        return (m.instances, m.semantic) if isinstance(m, PairRef) else (m,)

    def label(self) -> str:
        what = self.metric
        if self.classes == "class":
            what += f"[{self.class_name}]"
        elif self.classes != "all":
            what += f"[{self.classes}]"
        if self.bin:
            what += f"[{self.bin}]"
        return f"{self.model} / {self.fusion} / {what}"


@dataclass(frozen=True)
class Claim:
    """One claim of a paper, as a paired comparison.

    id:           stable identifier (claims.csv, the forest plot);
    paper:        short paper name (IMP, Costea, JSIS, Seamless);
    source:       table, figure or section, with the paper's dataset;
    statement:    the claim in one line;
    a, b:         the compared sides; the effect is A - B;
    contrast:     optional second pair (C, D): the effect is (A - B) - (C - D) (IMP Fig. 5:
                  the gain near boundaries minus the gain over all pixels);
    direction:    a `DIRECTIONS` entry;
    paper_effect: the paper's effect in ``unit`` of A's metric, None when the paper gives none;
    margin:       half-width of the equivalence region (``equivalent`` only), in the same unit;
    kinds:        dataset kinds it applies to (`DATASET_KINDS` or ``"any"``);
    note:         what the numbers are, discrepancies, our choices.
    """

    id: str
    paper: str
    source: str
    statement: str
    a: Side
    b: Side
    direction: str
    paper_effect: float | None
    kinds: tuple[str, ...]
    margin: float | None = None
    contrast: tuple[Side, Side] | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"claim {self.id}: unknown direction {self.direction!r}; valid: {list(DIRECTIONS)}")
        if (self.direction == "equivalent") != (self.margin is not None):
            raise ValueError(f"claim {self.id}: a margin goes with direction 'equivalent' only")
        if self.margin is not None and self.margin <= 0:
            raise ValueError(f"claim {self.id}: margin must be > 0, got {self.margin}")
        bad = set(self.kinds) - {*DATASET_KINDS, "any"}
        if not self.kinds or bad:
            raise ValueError(f"claim {self.id}: kinds {self.kinds} must be among {[*DATASET_KINDS, 'any']}")
        units = {CLAIM_METRICS[s.metric].unit for s in self.sides}
        if len(units) != 1:
            raise ValueError(f"claim {self.id}: sides measure in different units {sorted(units)}")

    @property
    def sides(self) -> tuple[Side, ...]:
        return (self.a, self.b, *(self.contrast or ()))

    @property
    def unit(self) -> str:
        return CLAIM_METRICS[self.a.metric].unit

    def applies_to(self, kind: str) -> bool:
        return "any" in self.kinds or kind in self.kinds

    def models(self) -> tuple[str, ...]:
        """Every configured model the claim needs, in first-use order."""
        return tuple(dict.fromkeys(m for s in self.sides for m in s.models))

    def pairs(self) -> tuple[PairRef, ...]:
        return tuple(dict.fromkeys(s.model for s in self.sides if isinstance(s.model, PairRef)))


# --------------------------------------------------------------------------- the claims

_IMP_T1 = "IMP Table 1 (Varied Clothing Dataset, R50)"
_MRCNN = "ap50_mask_before_fusion"
INDEPENDENT_PPM = PairRef("maskrcnn_imp", "semantic_ppm")
"""JSIS Sec. 4.1 "independent": Mask R-CNN alone (stage 1, the instances of ``maskrcnn_imp``) and
a semantic-only network with the JSIS PPM head."""
INDEPENDENT_MINIDL = PairRef("maskrcnn_imp", "semantic_minidl")
"""Seamless Sec. 5 "Ours Independent": Mask R-CNN alone and a semantic-only MiniDL network."""


def _sem(model: str | PairRef, metric: str = "miou", **kw) -> Side:
    """The semantic output (``semantic`` fusion: the head's own argmax)."""
    return Side(model, "semantic", metric, **kw)


CLAIMS: tuple[Claim, ...] = (
    # 1. IMP Table 1, rows 4-7.
    Claim("imp_t1_p2_miou", "IMP", _IMP_T1, "IMP raises Panoptic-P2's mIoU",
          _sem("panoptic_p2_imp"), _sem("panoptic_p2"), "greater", 9.45, ("clothing",),
          note="46.59 vs 37.14"),
    Claim("imp_t1_p2_macc", "IMP", _IMP_T1, "IMP raises Panoptic-P2's mAcc",
          _sem("panoptic_p2_imp", "macc"), _sem("panoptic_p2", "macc"), "greater", 10.42, ("clothing",),
          note="59.24 vs 48.82; the text says +1.42"),
    Claim("imp_t1_fpn_miou", "IMP", _IMP_T1, "IMP raises Panoptic-FPN's mIoU",
          _sem("panoptic_fpn_imp"), _sem("panoptic_fpn"), "greater", 2.02, ("clothing",),
          note="47.03 vs 45.01"),
    Claim("imp_t1_fpn_macc", "IMP", _IMP_T1, "IMP raises Panoptic-FPN's mAcc",
          _sem("panoptic_fpn_imp", "macc"), _sem("panoptic_fpn", "macc"), "greater", 4.44, ("clothing",),
          note="61.52 vs 57.08"),
    # 2. IMP Table 4 (Cityscapes).
    Claim("imp_t4_things", "IMP", "IMP Table 4 (Cityscapes, R50)", "IMP raises the thing classes' mIoU",
          _sem("panoptic_fpn_imp", classes="things"), _sem("panoptic_fpn", classes="things"), "greater", 3.2, ("street",),
          note="text: +3.2 without augmentation (the table's rows give +3.4), +4.2 with IMP's augmentation"),
    Claim("imp_t4_stuff", "IMP", "IMP Table 4 (Cityscapes, R50)", "IMP leaves the stuff classes' mIoU about unchanged",
          _sem("panoptic_fpn_imp", classes="stuff"), _sem("panoptic_fpn", classes="stuff"), "equivalent", -0.12, ("street",),
          margin=1.0, note="mean of the 11 stuff rows' differences without augmentation (-0.44 with it); the ±1 point margin is ours"),
    # 3. IMP Tables 1 and 3: Mask R-CNN-IMP without a semantic head.
    Claim("imp_t1_canvas_vs_semantic_fpn", "IMP", f"{_IMP_T1}; Sec. 4.1", "Mask R-CNN-IMP, with no semantic head, beats Semantic-FPN's mIoU",
          _sem("maskrcnn_imp"), _sem("semantic_fpn"), "greater", 1.25, ("clothing",), note="43.91 vs 42.66"),
    Claim("imp_t1_canvas_vs_semantic_p2", "IMP", f"{_IMP_T1}; Table 3 (ModaNet)", "Mask R-CNN-IMP, with no semantic head, beats Semantic-P2's mIoU",
          _sem("maskrcnn_imp"), _sem("semantic_p2"), "greater", 6.91, ("clothing",), note="43.91 vs 37.00 (ModaNet: +1.63)"),
    Claim("imp_t1_canvas_vs_panoptic_p2", "IMP", f"{_IMP_T1}; Table 3 (ModaNet)", "Mask R-CNN-IMP, with no semantic head, beats Panoptic-P2's mIoU",
          _sem("maskrcnn_imp"), _sem("panoptic_p2"), "greater", 6.77, ("clothing",), note="43.91 vs 37.14 (ModaNet: +0.30)"),
    # 4. IMP Fig. 5.
    Claim("imp_fig5_boundary", "IMP", "IMP Fig. 5 (Varied Clothing Dataset)", "IMP's mIoU gain is larger near object boundaries than over all pixels",
          _sem("panoptic_fpn_imp", "boundary_miou", bin="near"), _sem("panoptic_fpn", "boundary_miou", bin="near"), "greater", None, ("clothing",),
          contrast=(_sem("panoptic_fpn_imp", "boundary_miou", bin="all"), _sem("panoptic_fpn", "boundary_miou", bin="all")),
          note="effect = gain within the first boundary bin minus gain over all pixels; the paper gives curves, no number"),
    # 5. Costea Table 1 (Cityscapes).
    Claim("costea_t1_head", "Costea", "Costea Table 1 (Cityscapes, R50-FPN)", "the ASP + RP head beats the baseline FPN-style head on mIoU",
          _sem("panoptic_asp_rp"), _sem("panoptic_fpn"), "greater", 1.3, ("street",), note="72.9 vs 71.6; the text says +1.5"),
    Claim("costea_t1_fusion_miou", "Costea", "Costea Table 1 (Cityscapes, R50-FPN)", "the Costea fusion raises mIoU over the unfused semantic output",
          Side("panoptic_asp_rp", "costea", "miou"), _sem("panoptic_asp_rp"), "greater", 3.1, ("street",), note="76.0 vs 72.9; the text says +3"),
    Claim("costea_t1_fusion_ap", "Costea", "Costea Table 1 (Cityscapes, R50-FPN)", "the Costea fusion raises mask AP over the unfused detections",
          Side("panoptic_asp_rp", "costea", "ap_mask"), Side("panoptic_asp_rp", "costea", "ap_mask_before_fusion"), "greater", 0.6, ("street",),
          note="37.8 vs 37.2; the text says +1"),
    # 6. JSIS Table 3 (Mapillary Vistas): joint vs independent, same heuristic.
    Claim("jsis_t3_miou", "JSIS", "JSIS Table 3 (Mapillary Vistas)", "joint training beats a semantic-only network on mIoU",
          _sem("panoptic_ppm"), _sem("semantic_ppm"), "greater", 1.1, ("street",), note="34.7 vs 33.6"),
    Claim("jsis_t3_ap50", "JSIS", "JSIS Table 3 (Mapillary Vistas)", "joint training beats Mask R-CNN alone on mask AP50",
          _sem("panoptic_ppm", _MRCNN), _sem("maskrcnn_imp", _MRCNN), "greater", 1.9, ("street",),
          note="8.4 vs 6.5; AP of the raw detections"),
    Claim("jsis_t3_pq", "JSIS", "JSIS Table 3 (Mapillary Vistas)", "joint training beats independent networks on PQ, fused with the same heuristic",
          Side("panoptic_ppm", "jsis", "pq"), Side(INDEPENDENT_PPM, "jsis", "pq"), "greater", 2.4, ("street",), note="17.4 vs 15.0"),
    # 7. Seamless Sec. 5.1 / Table 1 (Cityscapes): combined vs independent.
    Claim("seamless_t1_pq", "Seamless", "Seamless Sec. 5.1 / Table 1 (Cityscapes)", "one combined network is as good as two independent ones on PQ (within ±1)",
          Side("panoptic_minidl", "seamless", "pq"), Side(INDEPENDENT_MINIDL, "seamless", "pq"), "equivalent", 0.0, ("street",),
          margin=1.0, note="59.8 vs 59.8 (IDD: 46.9 vs 47.2)"),
    Claim("seamless_t1_pq_dagger", "Seamless", "Seamless Sec. 5.1 / Table 1 (Cityscapes)", "one combined network is as good as two independent ones on PQ† (within ±1)",
          Side("panoptic_minidl", "seamless", "pq_dagger"), Side(INDEPENDENT_MINIDL, "seamless", "pq_dagger"), "equivalent", 0.0, ("street",),
          margin=1.0, note="59.0 vs 59.0 (IDD: 48.5 vs 48.8)"),
    Claim("seamless_params", "Seamless", "Seamless Sec. 5.4", "one combined network has fewer parameters than two independent ones",
          Side("panoptic_minidl", "seamless", "parameters"), Side(INDEPENDENT_MINIDL, "seamless", "parameters"), "less", -26.63, ("street",),
          note="51.43 M vs 78.06 M; a pair's parameters are the sum of its two models'"),
    # 8. Seamless Sec. 4: PQ† vs PQ on the same outputs.
    Claim("seamless_s4_pq_dagger_stuff", "Seamless", "Seamless Sec. 4, Fig. 3", "PQ over-penalises stuff: on the same outputs PQ†_St exceeds PQ_St",
          Side("panoptic_fpn", "seamless", "pq_dagger", classes="stuff"), Side("panoptic_fpn", "seamless", "pq", classes="stuff"), "greater", None, ("any",),
          note="the paper argues it, with no stuff-only number (Table 1, all classes: PQ† 59.0 vs PQ 59.8)"),
)  # fmt: skip
"""The registry of claims, in the issue's order (1-8)."""

CLAIMS_BY_ID: Mapping[str, Claim] = {c.id: c for c in CLAIMS}
if len(CLAIMS_BY_ID) != len(CLAIMS):
    raise RuntimeError("claims: duplicate claim ids")


@dataclass(frozen=True)
class DatasetKind:
    """The kind of one configured dataset and where it came from (for the report)."""

    kind: str
    reason: str = field(default="")


def dataset_kind(name: str, dataset: Mapping, overrides: Mapping[str, str] | None = None) -> DatasetKind:
    """A config dataset's kind: ``claims.dataset_kinds.{name}``, else the synthetic flavour, else
    the format's (`FORMAT_KINDS`); ``general`` for a format without one."""
    if overrides and name in overrides:
        return DatasetKind(overrides[name], "claims.dataset_kinds")
    synth = dataset.get("synthesize")
    if synth:
        return DatasetKind(synth.get("flavour", "street"), "synthetic flavour")
    fmt = dataset.get("format")
    return DatasetKind(FORMAT_KINDS.get(fmt, "general"), f"format {fmt}")
