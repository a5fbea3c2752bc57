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
    return config
