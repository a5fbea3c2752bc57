"""The one place that reads a model config: variants, architecture spec, and `build_model`.

A variant is ``{detector, head, imp}`` (DESIGN.md "Model variants"). Named presets follow
the IMP paper's ablation (Table 1 / Fig. 3); any ``head`` kind may be combined with IMP.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from segfusion.types import ClassInfo

HEADS = ("fpn", "p2", "asp_rp", "minidl", "ppm", "none")


@dataclass(frozen=True)
class ModelVariant:
    detector: bool
    head: str
    imp: bool

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose one of {HEADS}")
        if self.imp and not self.detector:
            raise ValueError("imp needs a detector (the canvas comes from its detections)")
        if self.head == "none" and not (self.detector and self.imp):
            raise ValueError("head 'none' is only valid for maskrcnn_imp (detector + imp)")

    @property
    def trains_stage2(self) -> bool:
        """maskrcnn_imp has no learned head: its stage 2 is its stage 1 (IMP Fig. 3a)."""
        return self.head != "none"


MODEL_PRESETS: dict[str, ModelVariant] = {
    "maskrcnn_imp": ModelVariant(detector=True, head="none", imp=True),
    "semantic_p2": ModelVariant(detector=False, head="p2", imp=False),
    "semantic_fpn": ModelVariant(detector=False, head="fpn", imp=False),
    "panoptic_p2": ModelVariant(detector=True, head="p2", imp=False),
    "panoptic_p2_imp": ModelVariant(detector=True, head="p2", imp=True),
    "panoptic_fpn": ModelVariant(detector=True, head="fpn", imp=False),
    "panoptic_fpn_imp": ModelVariant(detector=True, head="fpn", imp=True),
}
for _head in ("asp_rp", "minidl", "ppm"):
    MODEL_PRESETS[f"panoptic_{_head}"] = ModelVariant(detector=True, head=_head, imp=False)
    MODEL_PRESETS[f"panoptic_{_head}_imp"] = ModelVariant(detector=True, head=_head, imp=True)


def resolve_variant(name: str, custom: dict | None = None) -> ModelVariant:
    """A named preset, or a user-defined ``{detector, head, imp}`` from config ``custom_models``."""
    custom = custom or {}
    if name in custom:
        return ModelVariant(**custom[name])
    if name in MODEL_PRESETS:
        return MODEL_PRESETS[name]
    raise ValueError(f"unknown model {name!r}; presets: {sorted(MODEL_PRESETS)}; custom: {sorted(custom)}")


@dataclass(frozen=True)
class Architecture:
    """Sizes of the network. Defaults are the demo's tiny CPU model; presets carry R50-FPN."""

    backbone: str = "tiny"
    fpn_channels: int = 64
    head_channels: int = 64
    min_size: tuple[int, ...] = (128,)  # training short sides (multi-scale when several)
    test_min_size: int = 128
    max_size: int = 256
    anchor_sizes: tuple[int, ...] = (8, 16, 32, 64, 128)
    rpn_pre_nms_top_n_train: int = 300
    rpn_post_nms_top_n_train: int = 150
    rpn_pre_nms_top_n_test: int = 300
    rpn_post_nms_top_n_test: int = 150
    rpn_batch_size_per_image: int = 64
    box_batch_size_per_image: int = 128
    box_head_dim: int = 256
    mask_head_layers: tuple[int, ...] = (64, 64)
    box_score_thresh: float = 0.05
    detections_per_image: int = 100
    pretrained: str | None = None  # local path to a Mask R-CNN or backbone state dict
    class_remap: dict = field(default_factory=dict)  # {our class name: checkpoint class index} for pretrained heads

    @classmethod
    def from_dict(cls, d: dict) -> "Architecture":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"model architecture: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        for key in ("min_size", "anchor_sizes", "mask_head_layers"):
            if key in d:
                v = d[key]
                d[key] = tuple(v) if isinstance(v, (list, tuple)) else (v,)
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


def build_model(variant: ModelVariant, arch: Architecture, classes: ClassInfo):
    """Build a `PanopticModel` (imports torch)."""
    from segfusion.models.panoptic import PanopticModel

    return PanopticModel(variant, arch, classes)
