"""Config `pairs`, `shared_stage1` and `claims`: validated before any job, errors name the key path."""

import copy

import pytest

from segfusion.config import ConfigError, validate_config
from tests.conftest import MICRO_CONFIG, REPO

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def _cfg(**extra):
    cfg = copy.deepcopy(MICRO_CONFIG)
    cfg.update(extra)
    return cfg


def test_a_valid_pair_and_the_defaults():
    cfg = validate_config(_cfg(pairs={"indep": {"instances": "maskrcnn_imp", "semantic": "panoptic_fpn"}}), SCHEMA)
    assert cfg["shared_stage1"] is False and cfg["claims"] == {"dataset_kinds": {}, "bootstrap_resamples": 1000}


@pytest.mark.parametrize(
    "pairs, message",
    [
        ({"p": {"instances": "maskrcnn_imp", "semantic": "panoptic_fpnn"}}, r"pairs\.p\.semantic: 'panoptic_fpnn' is not in models \(did you mean panoptic_fpn\?\)"),
        ({"p": {"instances": "maskrcnn_imp"}}, r"pairs\.p.*semantic"),
        ({"panoptic_fpn": {"instances": "maskrcnn_imp", "semantic": "panoptic_fpn_imp"}}, r"pairs\.panoptic_fpn: the pair's name is also a model"),
        ({"p": {"instances": "panoptic_fpn", "semantic": "panoptic_fpn"}}, "the same model"),
        ({"p": {"instances": "maskrcnn_imp", "semantic": "panoptic_fpn", "extra": 1}}, "extra"),
        ({"bad-name": {"instances": "maskrcnn_imp", "semantic": "panoptic_fpn"}}, "bad-name"),
    ],
)
def test_pair_errors_name_the_key(pairs, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(_cfg(pairs=pairs), SCHEMA)


def test_a_pair_needs_a_detector_for_its_instances():
    cfg = _cfg(models=["semantic_fpn", "panoptic_fpn"], pairs={"p": {"instances": "semantic_fpn", "semantic": "panoptic_fpn"}})
    with pytest.raises(ConfigError, match=r"pairs\.p\.instances: 'semantic_fpn' has no detector"):
        validate_config(cfg, SCHEMA)


def test_claims_config_is_checked():
    with pytest.raises(ConfigError, match=r"claims\.dataset_kinds\.nope: no such dataset"):
        validate_config(_cfg(claims={"dataset_kinds": {"nope": "street"}}), SCHEMA)
    with pytest.raises(ConfigError, match="dataset_kinds"):
        validate_config(_cfg(claims={"dataset_kinds": {"micro": "moon"}}), SCHEMA)


def test_dataset_models_restrict_models_and_pairs_per_dataset():
    from segfusion.config import dataset_models, dataset_pairs

    cfg = _cfg(pairs={"indep": {"instances": "maskrcnn_imp", "semantic": "panoptic_fpn"}})
    name = next(iter(cfg["datasets"]))
    cfg["datasets"]["other"] = {**copy.deepcopy(cfg["datasets"][name]), "models": ["panoptic_fpn", "maskrcnn_imp"]}
    cfg["datasets"]["only_fpn"] = {**copy.deepcopy(cfg["datasets"][name]), "models": ["panoptic_fpn"]}
    cfg = validate_config(cfg, SCHEMA)
    assert dataset_models(cfg, name) == list(cfg["models"])  # null: every model
    assert dataset_models(cfg, "other") == [m for m in cfg["models"] if m in ("maskrcnn_imp", "panoptic_fpn")]  # config order
    assert dataset_pairs(cfg, name) == dataset_pairs(cfg, "other") == ["indep"]
    assert dataset_models(cfg, "only_fpn") == ["panoptic_fpn"] and dataset_pairs(cfg, "only_fpn") == []


def test_dataset_models_must_be_configured_models():
    cfg = _cfg()
    name = next(iter(cfg["datasets"]))
    cfg["datasets"][name]["models"] = ["panoptic_fpnn"]
    with pytest.raises(ConfigError, match=rf"datasets\.{name}\.models: 'panoptic_fpnn' is not in models \(did you mean panoptic_fpn\?\)"):
        validate_config(cfg, SCHEMA)
