"""The spec layer: from_dict rejects unknown keys, wrong types and ranges with the key path;
defaults agree with the schema; hashes are stable; fusion parameters follow the signatures."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from segfusion.config import ConfigError, fill_defaults, load_schema, validate_config
from segfusion.fusion import FUSION_METHODS, PARAMETER_RULES, check_params, method_params
from segfusion.specs import (
    Augmentation,
    FusionSpec,
    InferenceSpec,
    ModelSpec,
    ModelVariant,
    PredictSpec,
    Schedule,
    SpecError,
    TrainSpec,
    resolve_variant,
    spec_defaults,
)

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"

FLAT_SPECS = [ModelSpec, InferenceSpec, PredictSpec, Schedule, Augmentation]


@pytest.mark.parametrize("cls", FLAT_SPECS, ids=lambda c: c.__name__)
def test_every_spec_rejects_unknown_keys_with_a_hint(cls):
    key = sorted(cls.RULES)[0]
    typo = key[:-1] + ("x" if key[-1] != "x" else "y")
    with pytest.raises(SpecError, match=rf"^where\.{typo}: unknown key \(did you mean {key}\?\); valid: \["):
        cls.from_dict({typo: 1}, "where")


def test_train_spec_and_variant_reject_unknown_keys():
    with pytest.raises(SpecError, match=r"^stage2\.schedul: unknown key \(did you mean schedule\?\)"):
        TrainSpec.from_dict({"schedul": {}}, "stage2")
    with pytest.raises(SpecError, match=r"^stage2\.schedule\.itrations: unknown key \(did you mean iterations\?\)"):
        TrainSpec.from_dict({"schedule": {"itrations": 3}}, "stage2")
    with pytest.raises(SpecError, match=r"^stage1\.augmentation\.hflp: unknown key"):
        TrainSpec.from_dict({"schedule": {}, "augmentation": {"hflp": True}}, "stage1")
    with pytest.raises(SpecError, match=r"^custom_models\.mine\.imps: unknown key"):
        resolve_variant("mine", {"mine": {"detector": True, "head": "fpn", "imps": True}})
    with pytest.raises(SpecError, match=r"did you mean panoptic_fpn_imp"):
        resolve_variant("panoptic_fpn_impp")
    with pytest.raises(SpecError, match=r"^fusion\.methods\.kirilov: unknown fusion method \(did you mean kirillov\?\)"):
        FusionSpec.from_dict("kirilov", {})


@pytest.mark.parametrize(
    ("cls", "d", "message"),
    [
        (InferenceSpec, {"box_score_thresh": 2}, r"inference\.box_score_thresh: 2 is not a number in \[0, 1\]"),
        (InferenceSpec, {"detections_per_image": 2.5}, r"inference\.detections_per_image: 2\.5 is not an integer"),
        (InferenceSpec, {"test_min_size": "big"}, r"inference\.test_min_size: 'big' is not an integer in \[16, inf\]"),
        (InferenceSpec, {"test_min_size": True}, r"inference\.test_min_size: True is not an integer"),
        (ModelSpec, {"backbone": "resnet5"}, r"architecture\.backbone: 'resnet5' is not one of \['tiny'"),
        (ModelSpec, {"anchor_sizes": [8, 16]}, r"architecture\.anchor_sizes: \[8, 16\] is not a list of integers in \[1, inf\] of length 5"),
        (ModelSpec, {"min_size": [64, "x"]}, r"architecture\.min_size\[1\]: 'x' is not an integer"),
        (PredictSpec, {"store_canvas": "yes"}, r"predict\.store_canvas: 'yes' is not true or false"),
        (Augmentation, {"hue_jitter": 0.6}, r"augmentation\.hue_jitter: 0\.6 is not a number in \[0, 0\.5\]"),
        (Schedule, {"lr": float("nan")}, r"schedule\.lr: nan is not a number"),
    ],
)
def test_wrong_types_and_ranges_name_the_key_and_the_valid_values(cls, d, message):
    with pytest.raises(SpecError, match=message):
        cls.from_dict(d)


def test_train_spec_cross_checks():
    with pytest.raises(SpecError, match=r"stage2: keep_best needs validate_every"):
        TrainSpec.from_dict({"schedule": {}, "keep_best": True}, "stage2")
    with pytest.raises(SpecError, match=r"stage1\.freeze\[0\]: 'rpm' is not one of"):
        TrainSpec.from_dict({"schedule": {}, "freeze": ["rpm"]}, "stage1")
    with pytest.raises(SpecError, match=r"stage2\.loss_weights\.loss_mask: -1 is not a number in \[0, inf\]"):
        TrainSpec.from_dict({"schedule": {}, "loss_weights": {"loss_mask": -1}}, "stage2")
    with pytest.raises(SpecError, match=r"stage2\.schedule: missing"):
        TrainSpec.from_dict({}, "stage2")
    spec = TrainSpec.from_dict({"schedule": {"iterations": 3}, "batch_size": 6}, "stage2", seed=4)
    assert spec.seed == 4 and spec.schedule.iterations == 3
    spec.check_processes(3)
    with pytest.raises(SpecError, match=r"stage2\.batch_size 6 is not divisible by the 4 training processes"):
        spec.check_processes(4, "stage2")
    detector = ModelVariant(detector=True, head="fpn", imp=True)
    assert spec.trains_detector(detector)
    assert not TrainSpec(freeze=("rpn", "roi_heads")).trains_detector(detector)
    assert TrainSpec(freeze=("backbone", "rpn")).trains_detector(detector)
    assert not spec.trains_detector(ModelVariant(detector=False, head="fpn", imp=False))


@pytest.mark.parametrize("cls", [*FLAT_SPECS, TrainSpec], ids=lambda c: c.__name__)
def test_round_trip_and_stable_hash(cls):
    spec = cls()
    again = cls.from_dict(spec.to_dict()) if cls is not TrainSpec else TrainSpec.from_dict(spec.to_dict())
    assert again == spec and again.hash() == spec.hash() and len(spec.hash()) == 16
    changed = {InferenceSpec: {"box_score_thresh": 0.3}, ModelSpec: {"fpn_channels": 32}, PredictSpec: {"batch_size": 1},
               Schedule: {"lr": 0.5}, Augmentation: {"hflip": False}, TrainSpec: {"batch_size": 2, "schedule": {}}}[cls]
    other = cls.from_dict(changed) if cls is not TrainSpec else TrainSpec.from_dict(changed)
    assert other.hash() != spec.hash()


def _schema_defaults(section: str) -> dict:
    """Defaults the schema fills into an empty ``section`` (a stage2 needs a schedule)."""
    schema = load_schema(SCHEMA)
    config = {"datasets": {"d": {"format": "cityscapes", "raw": "r"}}}
    fill_defaults(config, schema, schema)
    return config[section]


@pytest.mark.parametrize(("cls", "section"), [(ModelSpec, "architecture"), (InferenceSpec, "inference"), (PredictSpec, "predict")])
def test_spec_defaults_equal_the_schema_defaults(cls, section):
    assert cls.from_dict(_schema_defaults(section)) == cls()


def test_schedule_and_augmentation_defaults_equal_the_schema_definitions():
    schema = load_schema(SCHEMA)
    for cls, name in ((Schedule, "schedule"), (Augmentation, "augmentation")):
        props = schema["definitions"][name]["properties"]
        expected = {k: tuple(p["default"]) if isinstance(p["default"], list) else p["default"] for k, p in props.items()}
        assert expected == spec_defaults(cls), name


def test_fusion_parameter_rules_match_every_signature():
    """Every keyword parameter of every method has a rule; nullable exactly when its default is None;
    each paper default passes its rule; and no rule is unused."""
    used = set()
    for method in FUSION_METHODS:
        for name, default in method_params(method).items():
            rule = PARAMETER_RULES[name]
            used.add(name)
            assert rule.nullable == (default is None), (method, name)
            assert rule.check(default, name) == default
            annotation = inspect.signature(FUSION_METHODS[method]).parameters[name].annotation
            assert rule.kind in str(annotation), (method, name, annotation)
    assert used == set(PARAMETER_RULES)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"overlap_treshold": 0.4}, r"^fusion\.params\.kirillov\.overlap_treshold: unknown parameter \(did you mean overlap_threshold\?\)"),
        ({"overlap_threshold": "high"}, r"^fusion\.params\.kirillov\.overlap_threshold: 'high' is not a number in \[0, 1\]"),
        ({"overlap_threshold": None}, r"^fusion\.params\.kirillov\.overlap_threshold: null is not allowed"),
        ({"overlap_threshold": -3}, r"^fusion\.params\.kirillov\.overlap_threshold: -3 is not a number in \[0, 1\]"),
        ({"score_threshold": 2}, r"^fusion\.params\.kirillov\.score_threshold: 2 is not a number in \[0, 1\]"),
        ({"stuff_area": -1}, r"^fusion\.params\.kirillov\.stuff_area: -1 is not a number in \[0, inf\] or null"),
        ({"stuff_area": 10, "stuff_area_fraction": 0.1}, r"^fusion\.params\.kirillov: give stuff_area or stuff_area_fraction, not both"),
    ],
)
def test_fusion_parameter_errors_name_the_key_path(params, message):
    with pytest.raises(SpecError, match=message):
        check_params("kirillov", params)


def test_fusion_spec_of_a_sweep_point():
    spec = FusionSpec.for_variant("kirillov@overlap_threshold=0.3", {"overlap_threshold": 0.6, "stuff_area": 12})
    assert spec.to_dict() == {"method": "kirillov", "params": {"overlap_threshold": 0.3, "stuff_area": 12.0}}
    assert spec.hash() != FusionSpec.for_variant("kirillov", {"overlap_threshold": 0.6, "stuff_area": 12}).hash()
    with pytest.raises(SpecError, match=r"^sweeps\.kirillov\.overlap_treshold: unknown parameter \(did you mean overlap_threshold\?\)"):
        FusionSpec.for_variant("kirillov@overlap_treshold=0.3", {})
    with pytest.raises(SpecError, match=r"^sweeps\.jsis\.score_threshold: 3\.0 is not a number in \[0, 1\]"):
        FusionSpec.for_variant("jsis@score_threshold=3.0", {})
    # a wrong configured value is named where it is configured, even for a sweep point
    with pytest.raises(SpecError, match=r"^fusion\.params\.jsis\.mask_threshold"):
        FusionSpec.for_variant("jsis@score_threshold=0.3", {"mask_threshold": 7})


def _config(**sections):
    config = {"datasets": {"d": {"format": "cityscapes", "raw": "r"}}}
    config.update(sections)
    return config


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"fusion": {"params": {"kirillov": {"overlap_treshold": 0.4}}}}, r"fusion\.params\.kirillov\.overlap_treshold: unknown parameter \(did you mean overlap_threshold\?\)"),
        ({"fusion": {"params": {"costea": {"score_threshold": "0.5"}}}}, r"fusion\.params\.costea\.score_threshold: '0\.5' is not a number"),
        ({"fusion": {"params": {"jsis": {"stuff_area_fraction": 2}}}}, r"fusion\.params\.jsis\.stuff_area_fraction: 2 is not a number in \[0, 1\]"),
        ({"sweeps": {"kirillov": {"overlap_treshold": [0.3]}}}, r"sweeps\.kirillov\.overlap_treshold: unknown parameter \(did you mean overlap_threshold\?\)"),
        ({"sweeps": {"seamless": {"score_threshold": [0.5, 1.5]}}}, r"sweeps\.seamless\.score_threshold: 1\.5 is not a number in \[0, 1\]"),
        ({"architecture": {"box_score_thresh": 0.3}}, r"architecture\.box_score_thresh moved to inference\.box_score_thresh"),
        ({"inference": {"box_score_thresh": 1.3}}, r"inference\.box_score_thresh: 1\.3 is greater than the maximum of 1"),
        ({"stage2": {"schedule": {"iterations": 3}, "keep_best": True}}, r"stage2: keep_best needs validate_every"),
        ({"stage1": {"schedule": {}, "batch_size": 3}, "train": {"launcher": "torchrun", "nproc_per_node": 2}}, r"stage1\.batch_size 3 is not divisible by the 2"),
        ({"models": ["panoptic_fpn_imq"]}, r"unknown model 'panoptic_fpn_imq' \(did you mean panoptic_fpn_imp\?\)"),
    ],
)
def test_config_errors_before_any_job(sections, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(_config(**sections), SCHEMA)


def test_default_config_and_presets_build_every_spec():
    import yaml

    root = SCHEMA.parents[2]
    for path in [root / "config.yaml", *sorted((root / "presets").glob("*.yaml"))]:
        validate_config(yaml.safe_load(path.read_text()), SCHEMA, source=str(path))
