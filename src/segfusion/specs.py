"""Typed specs: the one seam from config to objects (DESIGN.md "Specs"). No torch here.

The workflow passes config sub-trees to the CLI untouched; the CLI turns them into the specs
below with ``from_dict`` and hands the specs to builders and loops. Nothing else reshapes
config.

* `ModelVariant` / `MODEL_PRESETS` / `HEADS`: which network (detector, semantic head, IMP);
  `HEADS` is the registry of semantic-head kinds.
* `ModelSpec`: the network's shape (config ``architecture``). It is stored in model files.
* `InferenceSpec`: the test-time detector settings (config ``inference``). They belong to
  prediction (the predict params and the cache's ``config_hash``), never to training, so
  changing ``box_score_thresh`` reruns prediction and what follows, never training.
* `Schedule`, `Augmentation`, `TrainSpec`: one training stage (config ``stage1`` /
  ``stage2``) plus the seed.
* `PredictSpec`: the predict job (config ``predict``) without the test-time settings.

Every spec has ``from_dict(d, where)``, which rejects unknown keys, wrong types and values out
of range with a `SpecError` naming the key path, the value and the valid choices; and
``to_dict()`` / ``hash()`` (a stable 16-hex digest of the canonical JSON).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar, Mapping


class SpecError(ValueError):
    """A config value that a spec rejects; the message starts with the key path."""


# --------------------------------------------------------------------------- value checks


@dataclass(frozen=True)
class Rule:
    """What one spec field accepts.

    kind:     "int", "float" (ints accepted), "bool", "str", "int_list", "dict", "str_list"
    lo, hi:   inclusive bounds of numbers (of every item for lists)
    nullable: None is allowed
    choices:  allowed values (strings, or items of a str_list)
    length:   exact list length; min_length: the least list length
    """

    kind: str
    lo: float | None = None
    hi: float | None = None
    nullable: bool = False
    choices: tuple | None = None
    length: int | None = None
    min_length: int = 0

    def describe(self) -> str:
        if self.choices is not None:
            text = f"one of {list(self.choices)}"
        else:
            text = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
                    "int_list": "a list of integers", "dict": "a mapping", "str_list": "a list of names"}[self.kind]
        if self.lo is not None or self.hi is not None:
            lo = "-inf" if self.lo is None else f"{self.lo:g}"
            hi = "inf" if self.hi is None else f"{self.hi:g}"
            text += f" in [{lo}, {hi}]"
        if self.length is not None:
            text += f" of length {self.length}"
        elif self.min_length:
            text += f" of length >= {self.min_length}"
        return text + (" or null" if self.nullable else "")

    def check(self, value: Any, where: str) -> Any:
        """The value, normalised (lists become tuples, ints become floats for "float"), or SpecError."""
        if value is None:
            if self.nullable:
                return None
            raise SpecError(f"{where}: null is not allowed; expected {self.describe()}")
        bad = SpecError(f"{where}: {value!r} is not {self.describe()}")
        if self.kind in ("int_list", "str_list"):
            if not isinstance(value, (list, tuple)):
                raise bad
            item = Rule("int" if self.kind == "int_list" else "str", self.lo, self.hi, choices=self.choices)
            out = tuple(item.check(v, f"{where}[{i}]") for i, v in enumerate(value))
            if (self.length is not None and len(out) != self.length) or len(out) < self.min_length:
                raise bad
            return out
        if self.kind == "dict":
            if not isinstance(value, Mapping):
                raise bad
            return dict(value)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise bad
            return value
        if self.kind == "str":
            if not isinstance(value, str) or (self.choices is not None and value not in self.choices):
                raise bad
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if self.kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise bad
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise bad
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise bad
        return value


def did_you_mean(name: str, choices) -> str:
    """`` (did you mean X?)`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def unknown_key_error(where: str, key: str, allowed, what: str = "unknown key") -> SpecError:
    """``where.key: unknown key (did you mean ...?); valid: [...]``."""
    return SpecError(f"{where}.{key}: {what}{did_you_mean(key, allowed)}; valid: {sorted(allowed)}")


def check_mapping(d: Any, rules: Mapping[str, Rule], where: str, what: str = "unknown key") -> dict:
    """Check every key of ``d`` against ``rules``; returns the normalised values of the keys present."""
    if d is None:
        return {}
    if not isinstance(d, Mapping):
        raise SpecError(f"{where}: expected a mapping, got {d!r}")
    out = {}
    for key, value in d.items():
        if key not in rules:
            raise unknown_key_error(where, str(key), rules, what)
        out[key] = rules[key].check(value, f"{where}.{key}")
    return out


def stable_hash(obj: Any) -> str:
    """16 hex digits of the SHA-256 of the canonical JSON of ``obj``."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=list).encode()).hexdigest()[:16]


class _Spec:
    """``from_dict`` / ``to_dict`` / ``hash`` for frozen dataclasses with a ``RULES`` table."""

    RULES: ClassVar[dict[str, Rule]] = {}
    WHERE: ClassVar[str] = ""

    @classmethod
    def from_dict(cls, d: Mapping | None, where: str | None = None):
        where = where or cls.WHERE
        return cls(**check_mapping(d, cls.RULES, where))

    def to_dict(self) -> dict:
        def plain(v):
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return v

        return {k: plain(v) for k, v in asdict(self).items()}

    def hash(self) -> str:
        return stable_hash(self.to_dict())


def _check_rules_cover_fields(cls) -> type:
    """Class decorator: every dataclass field has a rule (and vice versa); a typo fails at import."""
    names = {f.name for f in fields(cls)}
    if names != set(cls.RULES):
        raise TypeError(f"{cls.__name__}: fields {sorted(names)} and rules {sorted(cls.RULES)} differ")
    return cls


def spec_defaults(cls) -> dict:
    """Default values of a spec's fields (what ``from_dict({})`` gives)."""
    out = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


# --------------------------------------------------------------------------- model variants

HEADS: Mapping[str, str] = {
    "fpn": "FPNHead",  # Panoptic FPN semantic branch (Kirillov et al.; IMP Fig. 4)
    "p2": "P2Head",  # one 3x3 conv tower on P2 only (IMP Table 1, "P2")
    "asp_rp": "ASPRPHead",  # Costea et al.: atrous spatial pyramid + refinement pyramid
    "minidl": "MiniDLHead",  # Seamless (Porzi et al.) MiniDL modules
    "ppm": "PPMHead",  # JSIS-Net pyramid pooling module (PSPNet style)
}
"""The registry of semantic-head kinds: name -> class in `segfusion.models.heads`."""

NO_HEAD = "none"
"""The head kind of ``maskrcnn_imp``: no learned head, the IMP canvas is the output."""


@dataclass(frozen=True)
class ModelVariant:
    """Which network: ``{detector, head, imp}`` (DESIGN.md "Model variants")."""

    detector: bool
    head: str
    imp: bool

    def __post_init__(self) -> None:
        if self.head not in (*HEADS, NO_HEAD):
            raise SpecError(f"unknown head {self.head!r}; choose one of {[*HEADS, NO_HEAD]}")
        if self.imp and not self.detector:
            raise SpecError("imp needs a detector (the canvas comes from its detections)")
        if self.head == NO_HEAD and not (self.detector and self.imp):
            raise SpecError("head 'none' is only valid for maskrcnn_imp (detector + imp)")

    @property
    def trains_stage2(self) -> bool:
        """maskrcnn_imp has no learned head: its stage 2 is its stage 1 (IMP Fig. 3a)."""
        return self.head != NO_HEAD

    @classmethod
    def from_dict(cls, d: Mapping, where: str = "variant") -> "ModelVariant":
        rules = {"detector": Rule("bool"), "head": Rule("str", choices=(*HEADS, NO_HEAD)), "imp": Rule("bool")}
        values = check_mapping(d, rules, where)
        missing = sorted(set(rules) - set(values))
        if missing:
            raise SpecError(f"{where}: missing keys {missing}")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


MODEL_PRESETS: dict[str, ModelVariant] = {
    "maskrcnn_imp": ModelVariant(detector=True, head=NO_HEAD, imp=True),
    "semantic_p2": ModelVariant(detector=False, head="p2", imp=False),
    "semantic_fpn": ModelVariant(detector=False, head="fpn", imp=False),
    "panoptic_p2": ModelVariant(detector=True, head="p2", imp=False),
    "panoptic_p2_imp": ModelVariant(detector=True, head="p2", imp=True),
    "panoptic_fpn": ModelVariant(detector=True, head="fpn", imp=False),
    "panoptic_fpn_imp": ModelVariant(detector=True, head="fpn", imp=True),
}
"""The registry of named models: the IMP paper's ablation (Table 1 / Fig. 3) and, for every
other head kind, ``panoptic_{head}`` with and without ``_imp`` and the detector-less
``semantic_{head}`` (the "independent" semantic network of JSIS Table 3 / Seamless Table 1,
fused with a detector's instances through config ``pairs``)."""
for _head in HEADS:
    MODEL_PRESETS.setdefault(f"semantic_{_head}", ModelVariant(detector=False, head=_head, imp=False))
    MODEL_PRESETS.setdefault(f"panoptic_{_head}", ModelVariant(detector=True, head=_head, imp=False))
    MODEL_PRESETS.setdefault(f"panoptic_{_head}_imp", ModelVariant(detector=True, head=_head, imp=True))


def resolve_variant(name: str, custom: Mapping | None = None) -> ModelVariant:
    """A named preset, or a user-defined ``{detector, head, imp}`` from config ``custom_models``."""
    custom = custom or {}
    if name in custom:
        return ModelVariant.from_dict(custom[name], where=f"custom_models.{name}")
    if name in MODEL_PRESETS:
        return MODEL_PRESETS[name]
    hint = did_you_mean(name, [*MODEL_PRESETS, *custom])
    raise SpecError(f"unknown model {name!r}{hint}; presets: {sorted(MODEL_PRESETS)}; custom: {sorted(custom)}")


# --------------------------------------------------------------------------- network shape

BACKBONES = ("tiny", "resnet18", "resnet34", "resnet50", "resnet101")
"""Backbone names `segfusion.models.backbones.build_backbone` accepts."""

INFERENCE_KEYS_OF_V1_MODELS = (
    "test_min_size", "box_score_thresh", "detections_per_image", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test",
)  # fmt: skip
"""Test-time keys that model files of format 1 stored in their ``arch`` (now `InferenceSpec`)."""


NORMS = ("auto", "bn", "frozen_bn", "sync_bn")
"""Normalisation of the ResNet backbones (`ModelSpec.norm`)."""


@_check_rules_cover_fields
@dataclass(frozen=True)
class ModelSpec(_Spec):
    """The network's shape (config ``architecture``). Defaults: the demo's tiny CPU model.

    ``min_size`` (training short sides, multi-scale when several) and ``max_size`` are the
    detector transform's training sizes; test sizes are `InferenceSpec`'s.
    """

    backbone: str = "tiny"
    fpn_channels: int = 64
    head_channels: int = 64
    min_size: tuple[int, ...] = (128,)
    max_size: int = 256
    anchor_sizes: tuple[int, ...] = (8, 16, 32, 64, 128)
    rpn_pre_nms_top_n_train: int = 300
    rpn_post_nms_top_n_train: int = 150
    rpn_batch_size_per_image: int = 64
    box_batch_size_per_image: int = 128
    box_head_dim: int = 256
    mask_head_layers: tuple[int, ...] = (64, 64)
    pretrained: str | None = None  # local path of a Mask R-CNN or backbone state dict
    class_remap: dict = field(default_factory=dict)  # {our class name: checkpoint class index}
    norm: str = "auto"

    WHERE: ClassVar[str] = "architecture"
    RULES: ClassVar[dict[str, Rule]] = {
        "backbone": Rule("str", choices=BACKBONES),
        "fpn_channels": Rule("int", lo=8),
        "head_channels": Rule("int", lo=8),
        "min_size": Rule("int_list", lo=16, min_length=1),
        "max_size": Rule("int", lo=16),
        "anchor_sizes": Rule("int_list", lo=1, length=5),
        "rpn_pre_nms_top_n_train": Rule("int", lo=1),
        "rpn_post_nms_top_n_train": Rule("int", lo=1),
        "rpn_batch_size_per_image": Rule("int", lo=1),
        "box_batch_size_per_image": Rule("int", lo=1),
        "box_head_dim": Rule("int", lo=8),
        "mask_head_layers": Rule("int_list", lo=8, min_length=1),
        "pretrained": Rule("str", nullable=True),
        "class_remap": Rule("dict"),
        "norm": Rule("str", choices=NORMS),
    }

    @property
    def resolved_norm(self) -> str:
        """``auto``: frozen BatchNorm with pretrained weights (torchvision's and detectron2's
        choice for detection fine-tuning at 1-2 images per GPU, where batch statistics are
        noise), trainable BatchNorm when training from scratch (frozen statistics of a random
        initialisation would be the identity)."""
        if self.norm != "auto":
            return self.norm
        return "frozen_bn" if self.pretrained else "bn"

    @classmethod
    def from_stored(cls, d: Mapping, source: str) -> "ModelSpec":
        """The spec of a model file: format-1 files also stored test-time keys, which are dropped
        (prediction takes them from `InferenceSpec` now)."""
        stored = {k: v for k, v in d.items() if k not in INFERENCE_KEYS_OF_V1_MODELS}
        stored.setdefault("norm", "bn")  # files from before `norm` were built with trainable BatchNorm
        return cls.from_dict(stored, where=f"{source}: arch")


@_check_rules_cover_fields
@dataclass(frozen=True)
class InferenceSpec(_Spec):
    """Test-time detector settings (config ``inference``), applied by ``predict`` to the loaded model.

    test_min_size / test_max_size: the detector transform's test sizes (test_max_size None =
    the model's training ``max_size``); box_score_thresh and detections_per_image:
    torchvision's RoI-head post-processing; rpn_*_test: proposals kept before / after NMS.
    """

    test_min_size: int = 128
    test_max_size: int | None = None
    box_score_thresh: float = 0.05
    detections_per_image: int = 100
    rpn_pre_nms_top_n_test: int = 300
    rpn_post_nms_top_n_test: int = 150

    WHERE: ClassVar[str] = "inference"
    RULES: ClassVar[dict[str, Rule]] = {
        "test_min_size": Rule("int", lo=16),
        "test_max_size": Rule("int", lo=16, nullable=True),
        "box_score_thresh": Rule("float", lo=0, hi=1),
        "detections_per_image": Rule("int", lo=1),
        "rpn_pre_nms_top_n_test": Rule("int", lo=1),
        "rpn_post_nms_top_n_test": Rule("int", lo=1),
    }


DEVICES = ("auto", "cpu", "cuda")
"""Devices of training and prediction: ``auto`` is ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU."""

BACKENDS = ("auto", "gloo", "nccl")
"""torch.distributed backends; ``auto`` is NCCL with CUDA, else Gloo."""


@_check_rules_cover_fields
@dataclass(frozen=True)
class PredictSpec(_Spec):
    """The predict job (config ``predict``): shards of a split, images per forward pass,
    whether IMP models with a head also store their canvas, and the device. The model, its
    inputs and every tensor up to the cache write stay on that device."""

    shards: int = 1
    batch_size: int = 4
    store_canvas: bool = False
    device: str = "auto"

    WHERE: ClassVar[str] = "predict"
    RULES: ClassVar[dict[str, Rule]] = {
        "shards": Rule("int", lo=1),
        "batch_size": Rule("int", lo=1),
        "store_canvas": Rule("bool"),
        "device": Rule("str", choices=DEVICES),
    }


# --------------------------------------------------------------------------- training


@_check_rules_cover_fields
@dataclass(frozen=True)
class Schedule(_Spec):
    """SGD with momentum, linear warm-up and step decay: the Mask R-CNN / Panoptic FPN recipe
    that the IMP paper follows for both stages (Sec. 4.1, lr dropped by 0.1 at fixed iterations)."""

    iterations: int = 100
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 0
    warmup_factor: float = 0.001
    steps: tuple[int, ...] = ()
    gamma: float = 0.1

    WHERE: ClassVar[str] = "schedule"
    RULES: ClassVar[dict[str, Rule]] = {
        "iterations": Rule("int", lo=0),
        "lr": Rule("float", lo=0),
        "momentum": Rule("float", lo=0),
        "weight_decay": Rule("float", lo=0),
        "warmup_iters": Rule("int", lo=0),
        "warmup_factor": Rule("float", lo=0),
        "steps": Rule("int_list", lo=1),
        "gamma": Rule("float", lo=0),
    }

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        if self.lr <= 0 or self.gamma <= 0:
            raise SpecError(f"schedule: lr and gamma must be > 0, got {self.lr} and {self.gamma}")

    def lr_at(self, it: int) -> float:
        factor = self.gamma ** sum(it >= s for s in self.steps)
        if it < self.warmup_iters:
            alpha = it / self.warmup_iters
            factor *= self.warmup_factor * (1 - alpha) + alpha
        return self.lr * factor


@_check_rules_cover_fields
@dataclass(frozen=True)
class Augmentation(_Spec):
    """Training augmentation; all off except the flip by default.

    hflip:        horizontal flip with probability 1/2.
    color_jitter: brightness, contrast and saturation factors drawn uniformly in
                  [1 - color_jitter, 1 + color_jitter] (IMP Sec. 4.3: 0.4).
    hue_jitter:   hue shift drawn in [-hue_jitter, hue_jitter] of the colour circle
                  (IMP Sec. 4.3: 0.4; at most 0.5).
    crop_size:    (h, w) random crop, taken *after* the multi-scale resize (IMP Sec. 4.3: the
                  sample's short side is drawn from ``ModelSpec.min_size``, then the crop),
                  so every training input is exactly (h, w); a dimension smaller than the
                  crop is kept whole (no padding: the detector takes images of any size).
    """

    hflip: bool = True
    color_jitter: float = 0.0
    hue_jitter: float = 0.0
    crop_size: tuple[int, int] | None = None

    WHERE: ClassVar[str] = "augmentation"
    RULES: ClassVar[dict[str, Rule]] = {
        "hflip": Rule("bool"),
        "color_jitter": Rule("float", lo=0, hi=1),
        "hue_jitter": Rule("float", lo=0, hi=0.5),
        "crop_size": Rule("int_list", lo=1, length=2, nullable=True),
    }

    def __post_init__(self) -> None:
        if self.crop_size is not None:
            object.__setattr__(self, "crop_size", tuple(self.crop_size))
        for key in ("color_jitter", "hue_jitter", "crop_size"):
            self.RULES[key].check(getattr(self, key), f"augmentation.{key}")

    @classmethod
    def imp_cityscapes(cls) -> "Augmentation":
        """The IMP Cityscapes setting (Sec. 4.3) minus multi-scale resizing (done by the detector transform)."""
        return cls(hflip=True, color_jitter=0.4, hue_jitter=0.4, crop_size=(512, 1024))


FROZEN_TRUNK_MODES = ("cache", "recompute", "off")
"""How stage 2 runs a frozen trunk (`TrainSpec.frozen_trunk`)."""

FREEZABLE = ("backbone", "rpn", "roi_heads")
"""Parts of the network a stage can keep frozen."""


@_check_rules_cover_fields
@dataclass(frozen=True)
class TrainSpec(_Spec):
    """One training stage (config ``stage1`` / ``stage2``) and its seed.

    batch_size:     global batch (all processes together); must divide by the process count.
    freeze:         parts kept frozen (stage 2's default keeps the detector of stage 1).
    validate_every: validate every K iterations (and after the last); None = only after the
                    last, and only when a validation split is given.
    keep_best:      the final weights are those of the best validation (needs validate_every).
    frozen_trunk:   stage 2 with a frozen detector (`frozen_trunk_blockers`): ``cache`` runs the
                    frozen backbone, RPN and RoI heads once per (image, flip) and keeps their
                    outputs (`segfusion.training.trunk_cache`); ``recompute`` runs them per image
                    every step (bit-identical to ``cache``, slower); ``off`` runs them on the
                    batch every step (the path of unfrozen training; not bit-identical: a
                    convolution over a batch rounds differently from one image at a time).
    trunk_cache_mb: the cache lives in memory up to this size, else in a memory-mapped file
                    in the run directory.
    """

    schedule: Schedule = field(default_factory=Schedule)
    augmentation: Augmentation = field(default_factory=Augmentation)
    batch_size: int = 4
    checkpoint_every: int = 50
    loss_weights: dict = field(default_factory=dict)
    freeze: tuple[str, ...] = ()
    imp_end_to_end: bool = False
    bootstrap_fraction: float = 1.0
    validate_every: int | None = None
    keep_best: bool = False
    frozen_trunk: str = "cache"
    trunk_cache_mb: int = 2048
    seed: int = 0

    RULES: ClassVar[dict[str, Rule]] = {
        "schedule": Rule("dict"),
        "augmentation": Rule("dict"),
        "batch_size": Rule("int", lo=1),
        "checkpoint_every": Rule("int", lo=1),
        "loss_weights": Rule("dict"),
        "freeze": Rule("str_list", choices=FREEZABLE),
        "imp_end_to_end": Rule("bool"),
        "bootstrap_fraction": Rule("float", lo=0, hi=1),
        "validate_every": Rule("int", lo=1, nullable=True),
        "keep_best": Rule("bool"),
        "frozen_trunk": Rule("str", choices=FROZEN_TRUNK_MODES),
        "trunk_cache_mb": Rule("int", lo=0),
        "seed": Rule("int"),
    }

    def __post_init__(self) -> None:
        object.__setattr__(self, "freeze", tuple(self.freeze))
        if self.batch_size < 1 or self.checkpoint_every < 1:
            raise SpecError(f"batch_size and checkpoint_every must be >= 1, got {self.batch_size} and {self.checkpoint_every}")
        if self.validate_every is not None and self.validate_every < 1:
            raise SpecError(f"validate_every must be >= 1 (or null), got {self.validate_every}")
        if self.keep_best and self.validate_every is None:
            raise SpecError("keep_best needs validate_every (and a validation split)")
        if not 0 < self.bootstrap_fraction <= 1:
            raise SpecError(f"bootstrap_fraction must be in (0, 1], got {self.bootstrap_fraction}")

    @classmethod
    def from_dict(cls, d: Mapping | None, where: str = "stage", seed: int | None = None) -> "TrainSpec":
        """A stage's config sub-tree (``schedule`` required); ``seed`` is the run's seed (config ``seeds``)."""
        d = dict(d or {})
        if seed is not None:
            d["seed"] = seed
        values = check_mapping(d, cls.RULES, where)
        if "schedule" not in values:
            raise SpecError(f"{where}.schedule: missing (iterations, lr, ...)")
        for key, value in values["loss_weights"].items() if "loss_weights" in values else ():
            Rule("float", lo=0).check(value, f"{where}.loss_weights.{key}")
        values["schedule"] = Schedule.from_dict(values["schedule"], f"{where}.schedule")
        values["augmentation"] = Augmentation.from_dict(values.get("augmentation"), f"{where}.augmentation")
        try:
            return cls(**values)
        except SpecError as err:
            raise SpecError(f"{where}: {err}") from None

    def frozen_trunk_blockers(self, variant: ModelVariant, model: ModelSpec, image_sizes: set) -> list[str]:
        """Why the frozen-trunk path does not apply to this stage (empty: it applies).

        It needs every part below the head frozen, no gradient through the canvas, and inputs
        that are a pure function of the image and the flip: no colour jitter, no random crop,
        one training scale and one image size.
        """
        blockers = []
        if self.frozen_trunk == "off":
            blockers.append("frozen_trunk is off")
        if not variant.trains_stage2:
            blockers.append("the model has no semantic head")
        needed = {"backbone", "rpn", "roi_heads"} if variant.detector else {"backbone"}
        unfrozen = sorted(needed - set(self.freeze))
        if unfrozen:
            blockers.append(f"not frozen: {unfrozen}")
        if self.imp_end_to_end:
            blockers.append("imp_end_to_end back-propagates through the canvas")
        if self.augmentation.color_jitter or self.augmentation.hue_jitter:
            blockers.append("colour jitter")
        if self.augmentation.crop_size is not None:
            blockers.append("random crop")
        if len(model.min_size) > 1:
            blockers.append(f"multi-scale training (min_size {list(model.min_size)})")
        if len(image_sizes) > 1:
            blockers.append(f"images of {len(image_sizes)} different sizes")
        return blockers

    def trains_detector(self, variant: ModelVariant) -> bool:
        """The detector's losses are computed unless both its RPN and RoI heads are frozen."""
        return variant.detector and not {"rpn", "roi_heads"} <= set(self.freeze)

    def check_processes(self, processes: int, where: str = "stage") -> None:
        """The global batch must split evenly over the data-parallel processes."""
        if self.batch_size % processes:
            raise SpecError(
                f"{where}.batch_size {self.batch_size} is not divisible by the {processes} training processes "
                "(train.nnodes * train.nproc_per_node)"
            )


# --------------------------------------------------------------------------- fusion


@dataclass(frozen=True)
class FusionSpec:
    """One fusion job: a method of `segfusion.fusion.FUSION_METHODS` and its checked keyword parameters."""

    method: str
    params: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, method: str, params: Mapping | None = None, where: str | None = None) -> "FusionSpec":
        """``params`` checked against ``method``'s signature (names, types, ranges; `segfusion.fusion.check_params`)."""
        from segfusion.fusion import FUSION_METHODS, check_params

        if method not in FUSION_METHODS:
            raise unknown_key_error("fusion.methods", method, FUSION_METHODS, "unknown fusion method")
        return cls(method, check_params(method, params or {}, where))

    @classmethod
    def for_variant(cls, name: str, params: Mapping | None = None, defaults: Mapping | None = None) -> "FusionSpec":
        """The job of a fusion variant name (``kirillov`` or a sweep point ``kirillov@overlap_threshold=0.3``).

        params: the method's configured parameters (config ``fusion.params.{method}``); the sweep
        point's value overrides them; ``defaults`` fill in what neither sets.
        """
        from segfusion import sweeps

        method, overrides = sweeps.parse_variant(name)
        configured = {**dict(defaults or {}), **dict(params or {})}
        spec = cls.from_dict(method, configured)  # errors name fusion.params.{method}
        return cls.from_dict(method, {**configured, **overrides}, f"sweeps.{method}") if overrides else spec

    def to_dict(self) -> dict:
        return {"method": self.method, "params": dict(self.params)}

    def hash(self) -> str:
        return stable_hash(self.to_dict())


# --------------------------------------------------------------------------- pairs


@dataclass(frozen=True)
class PairSpec:
    """A pair (config ``pairs.{name}``): the instances of one model's cache fused with the semantic
    output of another's, evaluated like a model (JSIS Sec. 4.1 / Seamless Sec. 5 "independent"
    networks; or an imported detector with an imported semantic model).

    instances: a configured model with a detector; semantic: any configured model (its
    semantic output: a head's probabilities, or the ``maskrcnn_imp`` canvas).
    """

    name: str
    instances: str
    semantic: str

    RULES: ClassVar[dict[str, Rule]] = {"instances": Rule("str"), "semantic": Rule("str")}

    @classmethod
    def from_dict(cls, name: str, d: Mapping | None, variants: Mapping[str, ModelVariant]) -> "PairSpec":
        """``variants``: the configured models (config ``models``) and their variants."""
        where = f"pairs.{name}"
        values = check_mapping(d, cls.RULES, where)
        missing = sorted(set(cls.RULES) - set(values))
        if missing:
            raise SpecError(f"{where}: missing keys {missing} (a pair names an instances model and a semantic model)")
        if name in variants:
            raise SpecError(f"{where}: the pair's name is also a model in models; pairs and models share the {{model}} paths")
        for role, model in values.items():
            if model not in variants:
                hint = did_you_mean(model, variants)
                raise SpecError(f"{where}.{role}: {model!r} is not in models{hint}; models: {sorted(variants)}")
        if not variants[values["instances"]].detector:
            raise SpecError(f"{where}.instances: {values['instances']!r} has no detector, so its cache holds no instances")
        if values["instances"] == values["semantic"]:
            raise SpecError(f"{where}: instances and semantic are the same model {values['instances']!r}; that is the model itself")
        return cls(name, values["instances"], values["semantic"])

    def to_dict(self) -> dict:
        return {"instances": self.instances, "semantic": self.semantic}
