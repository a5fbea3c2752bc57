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
from segfusion.types import ClassInfo, Instances, Panoptic, SemanticPrediction

FusionFunction = Callable[..., Panoptic]

FUSION_METHODS: Mapping[str, FusionFunction] = {
    "kirillov": greedy.kirillov,
    "seamless": greedy.seamless,
    "jsis": jsis.jsis,
    "costea": costea.costea,
    "semantic": semantic.semantic_argmax,
}
"""Method name -> function ``(instances, semantic, classes, **params) -> Panoptic``."""


def method_params(method: str) -> dict[str, Any]:
    """The parameters of ``method`` and their defaults (the papers' values)."""
    function = _lookup(method)
    return {
        name: p.default
        for name, p in inspect.signature(function).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def fuse(
    method: str, instances: Instances, semantic: SemanticPrediction, classes: ClassInfo, **params: Any
) -> Panoptic:
    """Fuse one image's ``instances`` and ``semantic`` prediction with ``method``.

    Unknown methods and parameters are a ValueError naming them and the valid ones; so are
    inconsistent inputs (image sizes, channel count) and instance labels that are not thing
    classes.
    """
    valid = method_params(method)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"fusion {method!r}: unknown parameters {unknown}; valid: {sorted(valid)}")
    validate_inputs(instances, semantic, classes)
    return FUSION_METHODS[method](instances, semantic, classes, **params)


def _lookup(method: str) -> FusionFunction:
    try:
        return FUSION_METHODS[method]
    except KeyError:
        raise ValueError(f"unknown fusion method {method!r}; valid: {sorted(FUSION_METHODS)}") from None


__all__ = ["FUSION_METHODS", "fuse", "method_params"]
