"""The stuff-area rule at its boundary (issue 15): a stuff class whose remaining area equals
``stuff_area`` is kept, one pixel fewer is not.

Kirillov, Seamless and Costea turn the small class void (`SegmentCanvas.paint_classes`:
kept when ``area >= min_area``); JSIS gives its pixels to the next most probable stuff
class among those whose area reaches the threshold (`jsis`: removed when ``area <
min_area``, survivors ``area >= min_area``). Semantic predictions are at full resolution.
"""

from __future__ import annotations

import numpy as np
import pytest

from segfusion.fusion import fuse

from .helpers import (
    CAR,
    ROAD,
    SIDEWALK,
    SKY,
    check_invariants,
    class_map,
    instances_from,
    masks_from,
    semantic_from,
    street_classes,
)

CLASSES = street_classes()
V = 255
T = 4  # stuff_area in pixels
# on road pixels sky is the second most probable class, sidewalk the third
LEGEND = {
    "r": {ROAD: 0.6, SKY: 0.3, SIDEWALK: 0.05},
    "w": {SIDEWALK: 0.9},
    "s": {SKY: 0.9},
    "c": {CAR: 0.9},
}
CODE = {"r": ROAD, "w": SIDEWALK, "s": SKY, "c": CAR}
METHODS = ["kirillov", "seamless", "jsis", "costea"]

CAR_MASK = """
    ....##
    ....##
    ....##
    """


def _run(method: str, picture: str, mask: str = CAR_MASK):
    sem = semantic_from(picture, LEGEND)
    inst = instances_from(masks_from([mask]), [CAR], [0.9])
    pan = fuse(method, inst, sem, CLASSES, stuff_area=T)
    check_invariants(pan, CLASSES, sem.image_size)
    return pan


def _areas(pan) -> dict[int, int]:
    return {s.class_index: s.area for s in pan.segments if not s.is_thing}


def _rows(*rows: list) -> np.ndarray:
    return np.array(rows, np.int64)


@pytest.mark.parametrize("method", METHODS)
def test_stuff_class_with_exactly_the_threshold_is_kept(method):
    # road 4 = T, sidewalk 4 = T, sky 6, car 6 (the instance)
    pic = """
        rrrrcc
        wwwwcc
        sssscc
        """
    pan = _run(method, pic)
    expected = np.vectorize(CODE.get)(np.array([list(r.strip()) for r in pic.strip().splitlines()]))
    np.testing.assert_array_equal(class_map(pan), expected)
    assert _areas(pan) == {ROAD: T, SIDEWALK: T, SKY: T}


@pytest.mark.parametrize("method", METHODS)
def test_stuff_class_one_pixel_under_the_threshold_is_dropped(method):
    # road 3 = T - 1; sidewalk 5; sky 4 = T (kept, and JSIS' replacement of road)
    pic = """
        rrrwcc
        wwwwcc
        sssscc
        """
    pan = _run(method, pic)
    road_becomes = SKY if method == "jsis" else V
    r = road_becomes
    np.testing.assert_array_equal(
        class_map(pan),
        _rows([r, r, r, SIDEWALK, CAR, CAR], [SIDEWALK] * 4 + [CAR, CAR], [SKY] * 4 + [CAR, CAR]),
    )
    if method == "jsis":
        # the next best survivor is sky (0.3) although sidewalk (0.05) has more pixels
        assert _areas(pan) == {SIDEWALK: 5, SKY: T + 3}
    else:
        assert _areas(pan) == {SIDEWALK: 5, SKY: T}
    assert [s.area for s in pan.segments if s.is_thing] == [6]


@pytest.mark.parametrize("method", ["kirillov", "seamless", "jsis", "costea"])
@pytest.mark.parametrize("taken", [1, 2])
def test_the_area_counted_is_what_the_instances_leave(method, taken):
    """Road is predicted on 5 pixels; the car mask covers ``taken`` of them.

    Kirillov, Seamless and JSIS give those pixels to the instance, so road keeps 5 - taken:
    T (kept) or T - 1 (void / replaced by sky). Costea deletes instance pixels whose
    semantic category is not the instance's (road is background), so road keeps all 5.
    """
    pic = """
        rrrrrc
        wwwwcc
        ssssss
        """
    mask = """
        ....##
        ....##
        ......
        """ if taken == 1 else """
        ...###
        ....##
        ......
        """
    pan = _run(method, pic, mask)
    cm = class_map(pan)
    if method == "costea":
        np.testing.assert_array_equal(cm[0], [ROAD] * 5 + [CAR])
        assert _areas(pan)[ROAD] == 5
        return
    left = 5 - taken
    row0 = [ROAD] * left if left >= T else [SKY if method == "jsis" else V] * left
    np.testing.assert_array_equal(cm[0], row0 + [CAR] * taken + [CAR])
    np.testing.assert_array_equal(cm[1], [SIDEWALK] * 4 + [CAR, CAR])
    assert (ROAD in _areas(pan)) == (left == T)
    if left == T:
        assert _areas(pan)[ROAD] == T
