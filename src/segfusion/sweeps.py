"""Fusion parameter sweeps: grid points as fusion-variant names.

A sweep point is a fusion *variant* named ``{method}@{param}={value}``, e.g.
``kirillov@overlap_threshold=0.3``. The name is the ``{fusion}`` wildcard of the workflow,
so each point gets its own fuse/evaluate jobs on the cached predictions, and the
aggregate recovers method, parameter and value from the name alone.
"""

from __future__ import annotations

import re

_VARIANT = re.compile(r"^(?P<method>[a-z_]+)@(?P<param>[a-z_]+)=(?P<value>[-+0-9.eE]+)$")
WILDCARD_PATTERN = r"[a-z_]+(@[a-z_]+=[-+0-9.eE]+)?"


def variant_name(method: str, param: str, value: float) -> str:
    return f"{method}@{param}={value!r}" if isinstance(value, float) else f"{method}@{param}={value}"


def parse_variant(name: str) -> tuple[str, dict]:
    """``kirillov@overlap_threshold=0.3`` -> ("kirillov", {"overlap_threshold": 0.3}); plain names -> (name, {})."""
    m = _VARIANT.match(name)
    if not m:
        if "@" in name:
            raise ValueError(f"malformed fusion variant {name!r}; expected method@param=value")
        return name, {}
    value = float(m["value"])
    return m["method"], {m["param"]: int(value) if value.is_integer() and "." not in m["value"] and "e" not in m["value"].lower() else value}


def expand(methods: list[str], sweeps: dict) -> list[str]:
    """The configured methods plus one variant per swept value (``sweeps: {method: {param: [values]}}``)."""
    out = list(methods)
    for method, grid in sweeps.items():
        for param, values in grid.items():
            out += [variant_name(method, param, v) for v in values]
    return out
