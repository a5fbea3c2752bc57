"""Edge cases of Costea et al.'s fusion (segfusion/fusion/costea.py): void semantic input
(rule 5) and the method's name in its parameter errors."""

from __future__ import annotations

import numpy as np
import pytest

from segfusion.fusion.costea import costea
from segfusion.types import Instances, SemanticPrediction

from .helpers import CAR, PERSON, ROAD, SKY, check_invariants, class_map, instances_from, street_classes

CLASSES = street_classes()
V = 255


def test_void_input_is_neither_background_nor_foreground() -> None:
    # semantic (2 x 4), '.' = all-zero probabilities (void input):
    #   r c c .        instance (car, 0.9) covers (0, 1) (car foreground) and (1, 2) (void)
    #   r c . .
    # Rule 2 keeps only (0, 1); region growing reaches (0, 2) and (1, 1) through car
    # foreground but not the void pixels; void pixels take no stuff class and, being no
    # category's foreground, form no unreached segment (a person, the other category, or car).
    prob = np.zeros((6, 2, 4), np.float32)
    prob[ROAD] = [[0.9, 0.05, 0.05, 0], [0.9, 0.05, 0, 0]]
    prob[CAR] = [[0.05, 0.9, 0.9, 0], [0.05, 0.9, 0, 0]]
    prob[SKY] = [[0.05, 0.05, 0.05, 0], [0.05, 0.05, 0, 0]]
    masks = np.zeros((1, 2, 4), np.float32)
    masks[0, 0, 1] = masks[0, 1, 2] = 1.0
    pan = costea(instances_from(masks, [CAR], [0.9]), SemanticPrediction(prob, (2, 4)), CLASSES, stuff_area=0)
    check_invariants(pan, CLASSES, (2, 4))
    np.testing.assert_array_equal(class_map(pan), [[ROAD, CAR, CAR, V], [ROAD, CAR, V, V]])
    assert [(s.class_index, s.area, s.score) for s in pan.segments] == [(CAR, 3, pytest.approx(0.9)), (ROAD, 2, 1.0)]
    assert PERSON not in {s.class_index for s in pan.segments}


def test_void_only_input_gives_an_empty_panoptic() -> None:
    prob = np.zeros((6, 2, 3), np.float32)
    pan = costea(Instances.empty((2, 3)), SemanticPrediction(prob, (2, 3)), CLASSES, stuff_area=0)
    assert pan.segments == ()
    assert not pan.segment_ids.any()


def test_both_area_forms_are_rejected_by_name() -> None:
    sem = SemanticPrediction(np.full((6, 2, 3), 1 / 6, np.float32), (2, 3))
    with pytest.raises(ValueError, match=r"^fusion 'costea': give stuff_area or stuff_area_fraction, not both$"):
        costea(Instances.empty((2, 3)), sem, CLASSES, stuff_area=1, stuff_area_fraction=0.5)
