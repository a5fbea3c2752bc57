"""Fusion of instance and semantic predictions into panoptic outputs (DESIGN.md, "Fusion methods").

``fuse(method, instances, semantic, classes, **params) -> Panoptic`` runs one of
`FUSION_METHODS`: ``kirillov`` and ``seamless`` (greedy by score, `greedy`), ``jsis``
(`jsis`), ``costea`` (`costea`) and ``semantic`` (no fusion, `semantic`). All are pure
functions of their inputs; parameters default to the papers' values.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from segfusion.fusion import costea, greedy, jsis, semantic
from segfusion.fusion.common import validate_inputs
from segfusion.specs import Rule, SpecError, check_mapping
from segfusion.types import ClassInfo, Instances, Panoptic, SemanticPrediction

FusionFunction = Callable[..., Panoptic]

FUSION_METHODS: Mapping[str, FusionFunction] = {
    "semantic": semantic.semantic_argmax,
    "kirillov": greedy.kirillov,
    "seamless": greedy.seamless,
    "jsis": jsis.jsis,
    "costea": costea.costea,
}
"""The registry of fusion methods: name -> function ``(instances, semantic, classes, **params) -> Panoptic``.

The config schema's method enums, the CLI's ``--method`` choices and the sweeps' names all
come from here."""

PARAMETER_RULES: Mapping[str, Rule] = {
    "score_threshold": Rule("float", lo=0, hi=1),
    "overlap_threshold": Rule("float", lo=0, hi=1),
    "mask_threshold": Rule("float", lo=0, hi=1),
    "stuff_area": Rule("float", lo=0, nullable=True),
    "stuff_area_fraction": Rule("float", lo=0, hi=1, nullable=True),
    "background_threshold": Rule("float", lo=0, hi=1, nullable=True),
    "background_class": Rule("int", lo=0, nullable=True),
}
"""Type and range of every keyword parameter of the fusion methods, by name (the methods
share their parameter names; a test holds this table equal to their signatures)."""


def method_params(method: str) -> dict[str, Any]:
    """The parameters of ``method`` and their defaults (the papers' values)."""
    function = _lookup(method)
    return {
        name: p.default
        for name, p in inspect.signature(function).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def check_params(method: str, params: Mapping[str, Any], where: str | None = None) -> dict[str, Any]:
    """``params`` of ``method`` checked against its signature and `PARAMETER_RULES`; returns them normalised.

    Unknown names, wrong types and values out of range are a `SpecError` (a ValueError) that
    names the key path (``where``, default ``fusion.params.{method}``), the value and the valid
    choices, e.g. ``fusion.params.kirillov.overlap_treshold: unknown parameter (did you mean
    overlap_threshold?)``.
    """
    where = where or f"fusion.params.{method}"
    valid = method_params(method)
    out = check_mapping(params, {k: PARAMETER_RULES[k] for k in valid}, where, what="unknown parameter")
    if out.get("stuff_area") is not None and out.get("stuff_area_fraction") is not None:
        raise SpecError(f"{where}: give stuff_area or stuff_area_fraction, not both")
    return out


def fuse(
    method: str, instances: Instances, semantic: SemanticPrediction, classes: ClassInfo, **params: Any
) -> Panoptic:
    """Fuse one image's ``instances`` and ``semantic`` prediction with ``method``.

    Unknown methods and parameters, wrong types and out-of-range values are a ValueError
    naming them and the valid ones (`check_params`); so are inconsistent inputs (image sizes,
    channel count) and instance labels that are not thing classes.
    """
    params = check_params(method, params, where=f"fusion {method}")
    validate_inputs(instances, semantic, classes)
    return FUSION_METHODS[method](instances, semantic, classes, **params)


def _lookup(method: str) -> FusionFunction:
    try:
        return FUSION_METHODS[method]
    except KeyError:
        raise ValueError(f"unknown fusion method {method!r}; valid: {sorted(FUSION_METHODS)}") from None


__all__ = ["FUSION_METHODS", "PARAMETER_RULES", "check_params", "fuse", "method_params"]
