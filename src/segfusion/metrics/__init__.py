"""Mergeable evaluation accumulators (DESIGN.md, "Metrics").

Every accumulator has ``update(...)`` (one image), ``merge(other)`` (in place; merging the
shard accumulators gives exactly the accumulator of the whole split), ``result() -> dict``,
``state() -> dict`` (JSON-able) and ``from_state(dict)``.

* `SemanticConfusion`: mIoU, mAcc, pixel accuracy (Cityscapes pixel-level rules).
* `PanopticQuality`: PQ / SQ / RQ (panopticapi rules) and PQ† (Seamless, Sec. 4).
* `BoundaryAccuracy`: mIoU / mAcc by distance to the ground-truth boundary (IMP, Fig. 5).
* `InstanceAP`: box and mask AP through pycocotools' COCOeval.

No torch here; scipy and pycocotools are imported lazily, when first needed.
"""

from segfusion.metrics.boundary import BoundaryAccuracy
from segfusion.metrics.instance import InstanceAP
from segfusion.metrics.panoptic import PanopticQuality
from segfusion.metrics.semantic import SemanticConfusion

__all__ = ["SemanticConfusion", "PanopticQuality", "BoundaryAccuracy", "InstanceAP", "accumulator_from_state"]


def accumulator_from_state(state: dict):
    """Rebuild any accumulator from its ``state()`` dict (dispatch on ``state["type"]``)."""
    kinds = {c.kind: c for c in (SemanticConfusion, PanopticQuality, BoundaryAccuracy, InstanceAP)}
    kind = state.get("type") if isinstance(state, dict) else None
    if kind not in kinds:
        raise ValueError(
            f"accumulator_from_state: unknown state type {kind!r}; expected one of {sorted(kinds)}"
        )
    return kinds[kind].from_state(state)
