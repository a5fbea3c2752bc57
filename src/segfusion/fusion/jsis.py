"""JSIS-Net merging heuristics (de Geus, Meletis, Dubbelman, Sec. 2.2).

1. Instances with score ``>= 0.5`` are used, masks binarised as ``prob >= 0.5``. The paper
   gives no score threshold; we take the Panoptic baseline's 0.5 (Sec. 2.2.2 says it
   follows [8]'s heuristics).
2. Overlapping instance masks (Sec. 2.2.1): a pixel inside several binarised masks goes to
   the instance with the highest mask probability at that pixel; on equal probabilities
   the higher-scoring instance wins (ties in score: input order).
3. Things vs. stuff (Sec. 2.2.2): thing classes are removed from the semantic prediction,
   so every pixel takes its most probable *stuff* class; instance pixels then overwrite
   that stuff map.
4. Stuff area (Sec. 2.2.2): a stuff class with fewer than the area threshold (4096 px at
   1024×2048) pixels in that output is replaced, pixel-wise, by "the next best scoring
   stuff class above this threshold". We read "above this threshold" as the classes whose
   area in that output reaches the threshold, and do it in one pass: the survivors are
   fixed first, then each pixel of a removed class takes its most probable survivor.
   Survivors only gain pixels, so no class drops under the threshold afterwards and no
   iteration is needed. With no survivor, those pixels are void.
5. A pixel where the semantic input is void (all-zero probabilities) takes no stuff class:
   it stays void unless an instance covers it.
6. Every instance that keeps at least one pixel is a segment with its own id and score.
"""

from __future__ import annotations

import numpy as np

from segfusion.fusion.common import (
    BilinearField,
    SegmentCanvas,
    ranked_instances,
    stuff_area_threshold,
)
from segfusion.inference.paste import instance_crop
from segfusion.types import IGNORE_INDEX, ClassInfo, Instances, Panoptic, SemanticPrediction


def jsis(
    instances: Instances,
    semantic: SemanticPrediction,
    classes: ClassInfo,
    *,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    stuff_area: float | None = None,
    stuff_area_fraction: float | None = None,
) -> Panoptic:
    """JSIS-Net fusion (module docstring, rules 1-6).

    Parameters: score_threshold=0.5 (kept if ``>=``), mask_threshold=0.5 (``prob >=``),
    and stuff_area (px) or stuff_area_fraction (of H·W, default 4096 / (1024·2048)).
    """
    min_area = stuff_area_threshold("jsis", semantic.image_size, stuff_area, stuff_area_fraction)
    canvas = SegmentCanvas(semantic.image_size)
    best = np.zeros(semantic.image_size, np.float32)
    for i in ranked_instances(instances, score_threshold, inclusive=True).tolist():
        prob, (y0, x0) = instance_crop(instances, i)
        window = (slice(y0, y0 + prob.shape[0]), slice(x0, x0 + prob.shape[1]))
        wins = (prob >= mask_threshold) & (prob > best[window])
        if not wins.any():
            continue
        best[window][wins] = prob[wins]
        canvas.ids[window][wins] = canvas.new_segment(
            int(instances.labels[i]), True, float(instances.scores[i])
        )

    stuff_index = classes.stuff_indices
    if len(stuff_index) == 0:
        return canvas.to_panoptic()
    full = BilinearField(semantic.prob, semantic.image_size)
    field = full.channels(stuff_index)
    free = canvas.ids == 0
    void = full.void()
    if void is not None:
        free &= ~void
    rank = np.where(free, field.argmax(need=free), np.uint8(IGNORE_INDEX))  # position in stuff_index
    areas = np.bincount(rank.reshape(-1), minlength=256)[: len(stuff_index)]
    removed = (areas > 0) & (areas < min_area)
    if removed.any():
        lut = np.zeros(256, bool)
        lut[: len(stuff_index)] = removed
        ys, xs = np.nonzero(np.take(lut, rank))
        survivors = areas >= min_area
        if survivors.any():
            p = field.values(ys, xs)
            p[:, ~survivors] = -np.inf
            rank[ys, xs] = p.argmax(axis=1)
        else:
            rank[ys, xs] = IGNORE_INDEX
    class_of_rank = np.full(256, IGNORE_INDEX, np.uint8)
    class_of_rank[: len(stuff_index)] = stuff_index
    is_thing = classes.is_thing_array
    canvas.paint_classes(np.take(class_of_rank, rank), allowed=~is_thing, is_thing=is_thing)
    return canvas.to_panoptic()
