"""Edge cases of the no-fusion method (segfusion/fusion/semantic.py): void input, the
background threshold at equality and its parameter checks."""

from __future__ import annotations

import numpy as np
import pytest

from segfusion.fusion.semantic import semantic_argmax
from segfusion.types import Instances, SemanticPrediction

from .helpers import CAR, ROAD, SKY, check_invariants, class_map, street_classes

CLASSES = street_classes()
V = 255


def test_void_input_pixels_stay_void() -> None:
    # 1 x 3: road, void (all zero), car
    prob = np.zeros((6, 1, 3), np.float32)
    prob[ROAD, 0, 0] = prob[CAR, 0, 2] = 0.9
    prob[SKY, 0, 0] = prob[SKY, 0, 2] = 0.1
    pan = semantic_argmax(Instances.empty((1, 3)), SemanticPrediction(prob, (1, 3)), CLASSES)
    check_invariants(pan, CLASSES, (1, 3))
    np.testing.assert_array_equal(class_map(pan), [[ROAD, V, CAR]])


def test_background_threshold_is_strict() -> None:
    # maxima 0.5, 0.4, 0.9; threshold 0.5: only the 0.4 pixel (max < 0.5) takes the background
    prob = np.zeros((6, 1, 3), np.float32)
    prob[ROAD] = [[0.5, 0.4, 0.1]]
    prob[CAR] = [[0.3, 0.3, 0.9]]
    sem = SemanticPrediction(prob, (1, 3))
    pan = semantic_argmax(Instances.empty((1, 3)), sem, CLASSES, background_threshold=0.5, background_class=SKY)
    np.testing.assert_array_equal(class_map(pan), [[ROAD, SKY, CAR]])
    pan = semantic_argmax(Instances.empty((1, 3)), sem, CLASSES, background_threshold=0.5)
    np.testing.assert_array_equal(class_map(pan), [[ROAD, V, CAR]])


def test_background_parameters_are_checked_with_their_messages() -> None:
    sem = SemanticPrediction(np.full((6, 1, 2), 1 / 6, np.float32), (1, 2))
    empty = Instances.empty((1, 2))
    with pytest.raises(
        ValueError, match=r"^fusion 'semantic': background_class is only used with background_threshold$"
    ):
        semantic_argmax(empty, sem, CLASSES, background_class=0)
    for bad in (6, -1, 100):  # 6 classes: valid indices 0..5
        with pytest.raises(
            ValueError,
            match=rf"^fusion 'semantic': background_class must be a class index in 0\.\.5 or None \(void\); got {bad}$",
        ):
            semantic_argmax(empty, sem, CLASSES, background_threshold=0.5, background_class=bad)
    # the last class is a valid background class: every pixel (max 1/6 < 0.5) takes it
    pan = semantic_argmax(empty, sem, CLASSES, background_threshold=0.5, background_class=5)
    np.testing.assert_array_equal(class_map(pan), [[5, 5]])
