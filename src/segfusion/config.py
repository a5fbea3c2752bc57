"""Workflow config validation: JSON schema with defaults filled in, and errors that name the key.

Snakemake's own `validate` does not follow ``$ref`` when filling defaults, so the workflow
calls `validate_config` instead (workflow/rules/common.smk). Unknown keys are rejected at
every level (``additionalProperties: false``); the message names the key, its location
and the nearest allowed key.
"""

from __future__ import annotations

import copy
import difflib
import os

import yaml


class ConfigError(ValueError):
    """A config value or key that the schema rejects."""


_MISSING = object()


def _resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def fill_defaults(instance, schema: dict, root: dict) -> None:
    """Insert schema defaults into ``instance`` (in place), recursively through objects and $ref."""
    schema = _resolve(schema, root)
    if not isinstance(instance, dict):
        return
    props = schema.get("properties", {})
    for key, sub in props.items():
        # A default beside a $ref wins over the referenced schema's own default.
        default = sub["default"] if "default" in sub else _resolve(sub, root).get("default", _MISSING)
        sub = _resolve(sub, root)
        if key not in instance and default is not _MISSING:
            instance[key] = copy.deepcopy(default)
        if key in instance:
            fill_defaults(instance[key], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in props:
                fill_defaults(value, extra, root)


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _message(err, root: dict) -> str:
    if err.validator == "additionalProperties":
        schema = _resolve(err.schema, root)
        allowed = sorted(schema.get("properties", {}))
        unknown = sorted(set(err.instance) - set(allowed))
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, allowed, n=1)
            hints.append(f"unknown key {key!r} at {_where(err.absolute_path)}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        return "; ".join(hints) + f"; allowed keys: {allowed}"
    return f"{_where(err.absolute_path)}: {err.message}"


def registries() -> dict[str, list[str]]:
    """The registries whose names the schema's ``x-registry`` markers stand for."""
    from segfusion.claims import DATASET_KINDS
    from segfusion.datasets.registry import FORMATS
    from segfusion.datasets.synthetic import FLAVOURS
    from segfusion.fusion import FUSION_METHODS
    from segfusion.specs import BACKENDS, DEVICES, FROZEN_TRUNK_MODES, HEADS, NO_HEAD, NORMS

    return {
        "norms": list(NORMS),
        "frozen_trunk_modes": list(FROZEN_TRUNK_MODES),
        "devices": list(DEVICES),
        "backends": list(BACKENDS),
        "fusion_methods": list(FUSION_METHODS),
        "formats": list(FORMATS),
        "heads": [*HEADS, NO_HEAD],
        "flavours": list(FLAVOURS),
        "dataset_kinds": list(DATASET_KINDS),
    }


def _inject(node, names: dict[str, list[str]]):
    """Replace every ``x-registry: NAME`` with ``enum`` (and ``x-registry-properties: NAME`` with one
    property per name), recursively."""
    if isinstance(node, list):
        return [_inject(v, names) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _inject(v, names) for k, v in node.items() if k not in ("x-registry", "x-registry-properties")}
    if "x-registry" in node:
        out["enum"] = list(names[node["x-registry"]])
    if "x-registry-properties" in node:
        template = node["x-registry-properties"]
        out["properties"] = {n: copy.deepcopy(template["each"]) for n in names[template["registry"]]}
    if out.get("x-default-registry"):
        out["default"] = list(names[out.pop("x-default-registry")])
    return out


def load_schema(schema_path: str | os.PathLike) -> dict:
    """The config schema with its registry-backed enums filled in from the registries."""
    with open(schema_path) as fh:
        return _inject(yaml.safe_load(fh), registries())


MOVED_KEYS = {
    f"architecture.{key}": f"inference.{key}"
    for key in ("test_min_size", "box_score_thresh", "detections_per_image", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test")
}
"""Keys of earlier configs and where they live now (test-time settings belong to prediction)."""


def _check_moved_keys(config: dict, source: str) -> None:
    for old, new in MOVED_KEYS.items():
        section, key = old.split(".")
        if isinstance(config.get(section), dict) and key in config[section]:
            raise ConfigError(f"{source}: {old} moved to {new} (test-time settings belong to prediction, not to training)")


def validate_config(config: dict, schema_path: str | os.PathLike, source: str = "config") -> dict:
    """Fill defaults into ``config`` (in place) and validate it; raise ConfigError naming the key.

    After the schema, every spec the workflow will build is built once (`check_specs`), so
    fusion parameters, sweeps and training options fail here, before any job runs.
    """
    import jsonschema

    _check_moved_keys(config, source)
    schema = load_schema(schema_path)
    fill_defaults(config, schema, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(f"{source}: " + " | ".join(_message(e, schema) for e in errors[:5]))
    _check_synthetic_splits(config, source)
    try:
        check_specs(config)
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None
    return config


def training_processes(config: dict) -> int:
    """Data-parallel processes of every training job (config ``train``)."""
    train = config["train"]
    processes = train["nnodes"] * train["nproc_per_node"]
    if train["launcher"] == "none" and processes != 1:
        raise ConfigError("config train: nproc_per_node and nnodes > 1 need launcher: torchrun")
    return processes


def check_specs(config: dict) -> None:
    """Build every spec of a (defaults-filled) config once; raise SpecError naming the key path."""
    from segfusion import sweeps
    from segfusion.specs import (
        FusionSpec,
        InferenceSpec,
        ModelSpec,
        PairSpec,
        PredictSpec,
        SpecError,
        TrainSpec,
        did_you_mean,
        resolve_variant,
    )

    ModelSpec.from_dict(config["architecture"])
    InferenceSpec.from_dict(config["inference"])
    PredictSpec.from_dict(config["predict"])
    processes = training_processes(config)
    for stage in ("stage1", "stage2"):
        TrainSpec.from_dict(config[stage], stage).check_processes(processes, stage)
    variants = {name: resolve_variant(name, config["custom_models"]) for name in config["models"]}
    for name, pair in config.get("pairs", {}).items():
        PairSpec.from_dict(name, pair, variants)
    for name, d in config["datasets"].items():
        for model in d.get("models") or []:
            if model not in variants:
                hint = did_you_mean(model, variants)
                raise SpecError(f"datasets.{name}.models: {model!r} is not in models{hint}; models: {list(config['models'])}")
    for name in config.get("claims", {}).get("dataset_kinds", {}):
        if name not in config["datasets"]:
            raise SpecError(f"claims.dataset_kinds.{name}: no such dataset; datasets: {sorted(config['datasets'])}")
    fusion = config["fusion"]
    for name in sweeps.expand(fusion["methods"], config["sweeps"]):
        method = sweeps.parse_variant(name)[0]
        FusionSpec.for_variant(name, fusion["params"].get(method, {}))
    for method, params in fusion["params"].items():
        FusionSpec.from_dict(method, params)


def dataset_models(config: dict, dataset: str) -> list[str]:
    """The models run on ``dataset``: its ``models`` subset, else every configured model, in the
    order of the top-level ``models``."""
    subset = config["datasets"][dataset].get("models")
    return [m for m in config["models"] if subset is None or m in subset]


def dataset_pairs(config: dict, dataset: str) -> list[str]:
    """The pairs run on ``dataset``: those whose instances and semantic models both run there."""
    models = set(dataset_models(config, dataset))
    return [name for name, p in (config.get("pairs") or {}).items() if {p["instances"], p["semantic"]} <= models]


def validation_split(dataset: dict) -> str:
    """The split validated during training: ``val_split``, else the first eval split."""
    return dataset.get("val_split") or dataset["eval_splits"][0]


def used_splits(dataset: dict) -> list[str]:
    """Every split of a dataset the workflow reads: train, eval and validation, in that order."""
    names = [dataset["train_split"], *dataset["eval_splits"], validation_split(dataset)]
    return list(dict.fromkeys(names))


def selection_warnings(config: dict) -> list[str]:
    """Warnings for checkpoint selection on evaluated data (keep_best with val_split unset or evaluated)."""
    out = []
    for stage in ("stage1", "stage2"):
        if not config.get(stage, {}).get("keep_best"):
            continue
        for name, dataset in config.get("datasets", {}).items():
            split = validation_split(dataset)
            if split in dataset["eval_splits"]:
                out.append(
                    f"{stage}.keep_best selects checkpoints on split {split!r} of dataset {name!r}, which is "
                    f"also evaluated: its metrics are optimistic. Set datasets.{name}.val_split to a held-out split."
                )
    return out


def _check_synthetic_splits(config: dict, source: str) -> None:
    """A synthetic dataset must say how many images each split it is used for gets."""
    for name, dataset in config.get("datasets", {}).items():
        spec = dataset.get("synthesize")
        if not spec:
            continue
        missing = [s for s in used_splits(dataset) if s not in spec["num"]]
        if missing:
            raise ConfigError(
                f"{source}: datasets.{name}.synthesize.num has no image count for split(s) {missing} "
                f"(used as train_split, eval_splits or val_split); it has {sorted(spec['num'])}"
            )
