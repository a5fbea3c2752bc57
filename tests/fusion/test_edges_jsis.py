"""Edge cases of the JSIS-Net fusion (segfusion/fusion/jsis.py): thresholds at equality, empty
masks, a single stuff class, the area fraction, void semantic input."""

from __future__ import annotations

import numpy as np
import pytest

from segfusion.fusion.jsis import jsis
from segfusion.types import ClassInfo, Instances, SemanticPrediction

from .helpers import (
    CAR,
    ROAD,
    SKY,
    TRUCK,
    check_invariants,
    class_map,
    instances_from,
    semantic_from,
    street_classes,
)

CLASSES = street_classes()
V = 255
LEGEND = {"r": {ROAD: 0.9}, "s": {SKY: 0.9, ROAD: 0.06}, "c": {CAR: 0.9}}


def _things(pan) -> list[tuple[int, int, float]]:
    return [(s.class_index, s.area, round(s.score, 6)) for s in pan.segments if s.is_thing]


def test_score_and_mask_thresholds_are_inclusive() -> None:
    # one instance with score exactly 0.5 (kept: >=) and mask probs 0.5, 1, 0.4, 0 on a
    # 1 x 4 road image: pixels 0 (0.5 >= 0.5) and 1 are the car's, 2 and 3 road
    masks = np.array([[[0.5, 1.0, 0.4, 0.0]]], np.float32)
    pan = jsis(instances_from(masks, [CAR], [0.5]), semantic_from("rrrr", LEGEND), CLASSES, stuff_area=0)
    np.testing.assert_array_equal(class_map(pan), [[CAR, CAR, ROAD, ROAD]])
    assert _things(pan) == [(CAR, 2, 0.5)]


def test_an_instance_without_pixels_does_not_stop_the_others() -> None:
    masks = np.zeros((2, 1, 4), np.float32)
    masks[1, 0, 2:] = 1.0  # the first-ranked instance (0.95) has an all-zero mask
    pan = jsis(instances_from(masks, [CAR, TRUCK], [0.95, 0.9]), semantic_from("rrrr", LEGEND), CLASSES, stuff_area=0)
    np.testing.assert_array_equal(class_map(pan), [[ROAD, ROAD, TRUCK, TRUCK]])
    assert _things(pan) == [(TRUCK, 2, 0.9)]


def test_a_single_stuff_class_takes_every_free_pixel() -> None:
    # classes: road (stuff) and car (thing). Things are removed from the semantic prediction,
    # so the car pixel (0, 1) not covered by the instance is road, the only stuff class.
    classes = ClassInfo(
        names=("road", "car"),
        is_thing=(False, True),
        category=("flat", "vehicle"),
        ids=(7, 26),
        colors=((0, 0, 0), (1, 1, 1)),
    )
    prob = np.array([[[0.9, 0.1, 0.1]], [[0.1, 0.9, 0.9]]], np.float32)
    masks = np.array([[[0.0, 0.0, 1.0]]], np.float32)
    pan = jsis(instances_from(masks, [1], [0.9]), SemanticPrediction(prob, (1, 3)), classes, stuff_area=0)
    check_invariants(pan, classes, (1, 3))
    np.testing.assert_array_equal(class_map(pan), [[0, 0, 1]])
    assert [(s.class_index, s.area) for s in pan.segments] == [(1, 1), (0, 2)]


def test_the_area_fraction_is_used() -> None:
    # 1 x 8: one sky pixel, road elsewhere. stuff_area_fraction 0.25 -> 2 px: sky (1 px) is
    # removed and its pixel takes the next best surviving stuff class, road (0.06 > the rest).
    sem = semantic_from("rrrrrrrs", LEGEND)
    pan = jsis(Instances.empty((1, 8)), sem, CLASSES, stuff_area_fraction=0.25)
    np.testing.assert_array_equal(class_map(pan), [[ROAD] * 8])
    # fraction 0.125 -> 1 px: sky is kept
    pan = jsis(Instances.empty((1, 8)), sem, CLASSES, stuff_area_fraction=0.125)
    np.testing.assert_array_equal(class_map(pan), [[ROAD] * 7 + [SKY]])


def test_both_area_forms_are_rejected_by_name() -> None:
    with pytest.raises(ValueError, match=r"^fusion 'jsis': give stuff_area or stuff_area_fraction, not both$"):
        jsis(Instances.empty((1, 8)), semantic_from("rrrrrrrs", LEGEND), CLASSES, stuff_area=1, stuff_area_fraction=0.5)


def test_void_semantic_input_stays_void_unless_an_instance_covers_it() -> None:
    # semantic (2 x 4), '.' = all-zero probabilities (void input):
    #   r r . .        instance (car, 0.9) covers (0, 1) (road) and (0, 3), (1, 3) (void)
    #   r . . .
    prob = np.zeros((6, 2, 4), np.float32)
    prob[ROAD] = [[0.9, 0.9, 0, 0], [0.9, 0, 0, 0]]
    prob[SKY] = [[0.1, 0.1, 0, 0], [0.1, 0, 0, 0]]
    masks = np.zeros((1, 2, 4), np.float32)
    masks[0, 0, 1] = masks[0, 0, 3] = masks[0, 1, 3] = 1.0
    pan = jsis(instances_from(masks, [CAR], [0.9]), SemanticPrediction(prob, (2, 4)), CLASSES, stuff_area=0)
    check_invariants(pan, CLASSES, (2, 4))
    np.testing.assert_array_equal(class_map(pan), [[ROAD, CAR, V, CAR], [ROAD, V, V, CAR]])
    assert sorted((s.class_index, s.area) for s in pan.segments) == [(ROAD, 2), (CAR, 3)]
