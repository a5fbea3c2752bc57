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


def validate_config(config: dict, schema_path: str | os.PathLike, source: str = "config") -> dict:
    """Fill defaults into ``config`` (in place) and validate it; raise ConfigError naming the key."""
    import jsonschema

    with open(schema_path) as fh:
        schema = yaml.safe_load(fh)
    fill_defaults(config, schema, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(f"{source}: " + " | ".join(_message(e, schema) for e in errors[:5]))
    _check_synthetic_splits(config, source)
    return config


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
