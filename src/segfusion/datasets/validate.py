"""`segfusion validate-dataset`: consistency checks of a canonical split."""

from __future__ import annotations

import os

import numpy as np

from segfusion.datasets.canonical import CanonicalSplit
from segfusion.io.images import BadImageError


def validate_split(path: str | os.PathLike) -> list[str]:
    """Return one message per problem (empty when the split is consistent).

    Checks: image/label pairing and sizes, class ids, RGB ids vs segments_info, areas and
    bboxes, duplicate segment ids.
    """
    split = CanonicalSplit(path)
    problems: list[str] = []
    n = split.classes.num_classes
    for rec in split.images:
        try:
            img = split.image(rec)
            sem = split.semantic(rec)
            pan = split.panoptic(rec)
        except (BadImageError, ValueError, OSError) as err:
            problems.append(str(err))
            continue
        where = f"{split.root}/panoptic/{rec.name}.png"
        if sem.shape != img.shape[:2] or pan.segment_ids.shape != img.shape[:2]:
            problems.append(f"{where}: sizes differ: image {img.shape[:2]}, semantic {sem.shape}, panoptic {pan.segment_ids.shape}")
            continue
        bad = np.unique(sem[(sem != 255) & (sem >= n)])
        if len(bad):
            problems.append(f"{split.root}/semantic/{rec.name}.png: class indices {bad.tolist()} outside 0..{n - 1}")
        if not np.array_equal(pan.semantic, sem):
            problems.append(f"{split.root}/semantic/{rec.name}.png: disagrees with the panoptic map")
        ids = [s.id for s in pan.segments]
        if len(ids) != len(set(ids)):
            problems.append(f"{where}: duplicate segment ids")
        for s in pan.segments:
            m = pan.segment_ids == s.id
            area = int(m.sum())
            ys, xs = np.nonzero(m)
            bbox = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
            if area != s.area:
                problems.append(f"{where}: segment {s.id} area {s.area} in JSON, {area} in the PNG")
            if tuple(s.bbox) != bbox:
                problems.append(f"{where}: segment {s.id} bbox {s.bbox} in JSON, {bbox} in the PNG")
    return problems
