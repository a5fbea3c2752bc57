"""Greedy fusion by descending score: the Panoptic baseline (Kirillov) and Seamless.

Kirillov et al., "Panoptic Segmentation" (the heuristic of panopticapi's
``combine_semantic_and_instance_predictions.py`` and detectron2's
``combine_semantic_and_instance_outputs``) and Porzi et al., "Seamless Scene
Segmentation", Sec. 3.5 ("Fusion") describe the same procedure; one implementation,
`greedy_fusion`, serves both through two presets that differ only in the score rule:

1. instances with score ``>= 0.5`` (Kirillov: detectron2 keeps ``score >= 0.5``) or
   ``> 0.5`` (Seamless) are visited in descending score (stable: ties keep input order);
2. a mask is binarised as ``prob >= 0.5``; an empty mask is skipped;
3. the instance is skipped when more than ``overlap_threshold`` = 0.5 of its mask is already
   taken (Kirillov: ``intersect / mask_area > 0.5``), else it takes its free pixels.
   Seamless keeps it "provided that the [unassigned pixels] cover at least 50 % of the
   instance", i.e. ``free / area >= 0.5``, which is the same rule: both papers *keep* an
   instance with exactly half its mask taken;
4. remaining pixels take the semantic argmax over all classes if it is stuff, void if thing
   or if the semantic input is void there (all-zero probabilities, as panopticapi leaves
   pixels that no stuff segment covers);
5. a stuff class with fewer than the area threshold (4096 px at 1024×2048) pixels left
   becomes void (one segment per stuff class).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from segfusion.fusion.common import (
    BilinearField,
    SegmentCanvas,
    binary_crop,
    ranked_instances,
    stuff_area_threshold,
)
from segfusion.types import IGNORE_INDEX, ClassInfo, Instances, Panoptic, SemanticPrediction


def greedy_fusion(
    instances: Instances,
    semantic: SemanticPrediction,
    classes: ClassInfo,
    *,
    score_threshold: float,
    score_inclusive: bool,
    overlap_threshold: float,
    mask_threshold: float,
    min_stuff_area: float,
) -> Panoptic:
    """The shared greedy procedure (module docstring, rules 1-5).

    score_inclusive: keep ``score >= score_threshold`` (True) or ``>`` (False).
    overlap_threshold: skip an instance when ``taken / area > overlap_threshold``.
    min_stuff_area: in pixels; a stuff class with fewer remaining pixels becomes void.
    """
    canvas = SegmentCanvas(semantic.image_size)
    for i in ranked_instances(instances, score_threshold, score_inclusive).tolist():
        mask, (y0, x0) = binary_crop(instances, i, mask_threshold)
        area = int(mask.sum())
        if area == 0:
            continue
        window = canvas.ids[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
        take = mask & (window == 0)
        if area - int(take.sum()) > overlap_threshold * area:
            continue
        window[take] = canvas.new_segment(int(instances.labels[i]), True, float(instances.scores[i]))
    free = canvas.ids == 0
    field = BilinearField(semantic.prob, semantic.image_size)
    void = field.void()
    if void is not None:
        free &= ~void
    labels = field.argmax(need=free)
    labels = np.where(free, labels, np.uint8(IGNORE_INDEX))
    is_thing = classes.is_thing_array
    canvas.paint_classes(labels, allowed=~is_thing, is_thing=is_thing, min_area=min_stuff_area)
    return canvas.to_panoptic()


def _preset(method: str, score_inclusive: bool) -> Callable[..., Panoptic]:
    """A public fusion function with the papers' defaults around `greedy_fusion`."""

    def fusion(
        instances: Instances,
        semantic: SemanticPrediction,
        classes: ClassInfo,
        *,
        score_threshold: float = 0.5,
        overlap_threshold: float = 0.5,
        mask_threshold: float = 0.5,
        stuff_area: float | None = None,
        stuff_area_fraction: float | None = None,
    ) -> Panoptic:
        return greedy_fusion(
            instances,
            semantic,
            classes,
            score_threshold=score_threshold,
            score_inclusive=score_inclusive,
            overlap_threshold=overlap_threshold,
            mask_threshold=mask_threshold,
            min_stuff_area=stuff_area_threshold(method, semantic.image_size, stuff_area, stuff_area_fraction),
        )

    fusion.__name__ = method
    fusion.__qualname__ = method
    return fusion


kirillov = _preset("kirillov", score_inclusive=True)
kirillov.__doc__ = """Panoptic baseline (Kirillov et al.; detectron2's rule): `greedy_fusion` with score >= 0.5.

Parameters: score_threshold=0.5, overlap_threshold=0.5, mask_threshold=0.5, and
stuff_area (px) or stuff_area_fraction (of H·W, default 4096 / (1024·2048)).
"""

seamless = _preset("seamless", score_inclusive=False)
seamless.__doc__ = """Seamless Scene Segmentation fusion (Porzi et al., Sec. 3.5): `greedy_fusion` with score > 0.5.

Parameters as `kirillov`. Seamless does not state a score threshold in Sec. 3.5; we
take 0.5, strict, as the DESIGN's preset (so the presets differ exactly at score 0.5).
"""
