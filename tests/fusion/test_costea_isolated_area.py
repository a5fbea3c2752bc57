"""Costea's isolated foreground segments (rule 4: reached by no instance) have a minimum area,
the stuff-area threshold (a documented choice; the paper states none): a component of exactly
``stuff_area`` pixels becomes a segment, one pixel fewer stays void."""

from __future__ import annotations

import numpy as np
import pytest

from segfusion.fusion import fuse

from .helpers import (
    CAR,
    ROAD,
    check_invariants,
    class_map,
    instances_from,
    masks_from,
    semantic_from,
    street_classes,
)

CLASSES = street_classes()
LEGEND = {"r": {ROAD: 0.9}, "c": {CAR: 0.9}}
V = 255
T = 4  # stuff_area in pixels


@pytest.mark.parametrize(
    ("row", "kept"),
    [
        ("ccrrcccc", True),  # isolated car blob of exactly T pixels: a new car segment
        ("ccrrrccc", False),  # T - 1 pixels: void
    ],
)
def test_isolated_segment_at_the_area_threshold(row: str, kept: bool) -> None:
    picture = f"rrrrrrrr\n{row}"
    sem = semantic_from(picture, LEGEND)
    inst = instances_from(masks_from(["........\n##......"]), [CAR], [0.9])
    pan = fuse("costea", inst, sem, CLASSES, stuff_area=T)
    check_invariants(pan, CLASSES, sem.image_size)
    blob = np.array([c == "c" for c in row])
    blob[:2] = False  # the left blob is the instance's
    cm = class_map(pan)
    assert (cm[1, blob] == (CAR if kept else V)).all()
    assert (cm[1, :2] == CAR).all() and (cm[0] == ROAD).all()
    cars = [s for s in pan.segments if s.class_index == CAR]
    assert sorted(s.area for s in cars) == ([2, T] if kept else [2])
    # segment ids stay consecutive: a dropped component takes no id
    assert sorted(s.id for s in pan.segments) == list(range(1, len(pan.segments) + 1))


def test_isolated_segments_follow_the_area_fraction() -> None:
    """``stuff_area_fraction`` sets the same threshold: 4 / 16 of a 2×8 image is 4 pixels."""
    sem = semantic_from("rrrrrrrr\nccrrrccc", LEGEND)
    inst = instances_from(masks_from(["........\n##......"]), [CAR], [0.9])
    pan = fuse("costea", inst, sem, CLASSES, stuff_area_fraction=4 / 16)
    assert (class_map(pan)[1, 5:] == V).all()
