"""No fusion: the semantic head's own prediction as a panoptic output (DESIGN.md, `semantic`).

Every pixel takes the argmax class of the upsampled semantic probabilities; every class
present becomes exactly one segment, score 1.0; a pixel whose probabilities are all zero
(a void input, e.g. 255 in an imported label PNG) stays void. Thing classes are *not* split into
instances: each becomes one non-crowd segment with ``is_thing=True`` (so PQ on things
measures what a semantic-only model achieves, and the mIoU is the head's own). Instances
are ignored (only validated).

For the IMP canvas of ``maskrcnn_imp`` (Fu et al.), which has no semantic head, pixels
whose maximum probability is below ``background_threshold`` take ``background_class``, or
become void when ``background_class`` is None (Cityscapes has no background class: the
canvas only covers things, and stuff pixels are left unlabelled).
"""

from __future__ import annotations

import numpy as np

from segfusion.fusion.common import BilinearField, SegmentCanvas
from segfusion.types import ClassInfo, Instances, Panoptic, SemanticPrediction


def semantic_argmax(
    instances: Instances,
    semantic: SemanticPrediction,
    classes: ClassInfo,
    *,
    background_threshold: float | None = None,
    background_class: int | None = None,
) -> Panoptic:
    """Semantic argmax, one segment per class present.

    background_threshold: if set, pixels with ``max prob < background_threshold`` take
        ``background_class`` (a class index), or void (255) when it is None.
    """
    field = BilinearField(semantic.prob, semantic.image_size)
    if background_threshold is None:
        if background_class is not None:
            raise ValueError("fusion 'semantic': background_class is only used with background_threshold")
        labels = field.argmax()
        void = field.void()  # all-zero probabilities: void input stays void
        if void is not None:
            labels[void] = classes.ignore_index
    else:
        if background_class is not None and not 0 <= int(background_class) < classes.num_classes:
            raise ValueError(
                f"fusion 'semantic': background_class must be a class index in "
                f"0..{classes.num_classes - 1} or None (void); got {background_class!r}"
            )
        labels, top = field.argmax_and_max()
        labels = labels.astype(np.uint8)
        labels[top < background_threshold] = (
            classes.ignore_index if background_class is None else int(background_class)
        )
    canvas = SegmentCanvas(semantic.image_size)
    every = np.ones(classes.num_classes, bool)
    canvas.paint_classes(labels, allowed=every, is_thing=classes.is_thing_array)
    return canvas.to_panoptic()
