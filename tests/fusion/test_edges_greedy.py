"""Edge cases of the greedy fusion (segfusion/fusion/greedy.py): the presets built by
`_preset` (defaults, names, parameter pass-through), empty masks and void semantic input."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from segfusion.fusion import greedy
from segfusion.types import SemanticPrediction

from .helpers import (
    CAR,
    PERSON,
    ROAD,
    SKY,
    TRUCK,
    check_invariants,
    class_map,
    instances_from,
    masks_from,
    semantic_from,
    street_classes,
)

CLASSES = street_classes()
V = 255
LEGEND = {"r": {ROAD: 0.9}, "s": {SKY: 0.9}}

# 2 x 8 scene. Semantic: sky on the last two pixels of row 0, road elsewhere.
# A (car, 0.9):    ###h....    '#' = 1.0, 'h' = 0.5 (kept: prob >= 0.5), 'l' = 0.49 (dropped)
#                  l.......
# B (truck, 0.8):  ..####..    2 of its 4 pixels taken by A: exactly half, kept, takes 4-5
#                  ........
# C (person, 0.7): ...###..    3 of 4 taken: over the 0.5 overlap threshold, skipped
#                  .....#..
# D (car, 0.5):    ........    score exactly 0.5: kirillov keeps it (>=), seamless not (>)
#                  .##.....
SEM = """
    rrrrrrss
    rrrrrrrr
"""
MASKS = masks_from(
    ["###h....\nl.......", "..####..\n........", "...###..\n.....#..", "........\n.##....."],
    [{"#": 1.0, "h": 0.5, "l": 0.49}, {"#": 1.0}, {"#": 1.0}, {"#": 1.0}],
)
LABELS, SCORES = [CAR, TRUCK, PERSON, CAR], [0.9, 0.8, 0.7, 0.5]


def _expected(keep_d: bool, sky: bool) -> np.ndarray:
    s = SKY if sky else V
    d = CAR if keep_d else ROAD
    return np.array(
        [
            [CAR, CAR, CAR, CAR, TRUCK, TRUCK, s, s],
            [ROAD, d, d, ROAD, ROAD, ROAD, ROAD, ROAD],
        ]
    )


def _things(pan) -> list[tuple[int, int, float]]:
    return [(s.class_index, s.area, round(s.score, 6)) for s in pan.segments if s.is_thing]


@pytest.mark.parametrize("method,inclusive", [("kirillov", True), ("seamless", False)])
def test_preset_defaults_and_name(method: str, inclusive: bool) -> None:
    fusion = greedy._preset(method, score_inclusive=inclusive)
    assert fusion.__name__ == method and fusion.__qualname__ == method
    defaults = {n: p.default for n, p in inspect.signature(fusion).parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert defaults == {
        "score_threshold": 0.5,
        "overlap_threshold": 0.5,
        "mask_threshold": 0.5,
        "stuff_area": None,
        "stuff_area_fraction": None,
    }
    # the defaults at work: the default stuff area (4096 / (1024 * 2048) of 16 px, well under
    # one pixel) keeps the 2 sky pixels; D is kept only by the inclusive score rule
    inst = instances_from(MASKS, LABELS, SCORES)
    pan = fusion(inst, semantic_from(SEM, LEGEND), CLASSES)
    check_invariants(pan, CLASSES, (2, 8))
    np.testing.assert_array_equal(class_map(pan), _expected(keep_d=inclusive, sky=True))
    expected_things = [(CAR, 4, 0.9), (TRUCK, 2, 0.8)] + ([(CAR, 2, 0.5)] if inclusive else [])
    assert _things(pan) == expected_things
    # the module-level presets are these functions
    module_pan = getattr(greedy, method)(inst, semantic_from(SEM, LEGEND), CLASSES)
    np.testing.assert_array_equal(module_pan.segment_ids, pan.segment_ids)


@pytest.mark.parametrize("method,inclusive", [("kirillov", True), ("seamless", False)])
def test_preset_passes_its_parameters(method: str, inclusive: bool) -> None:
    fusion = greedy._preset(method, score_inclusive=inclusive)
    inst = instances_from(MASKS, LABELS, SCORES)
    sem = semantic_from(SEM, LEGEND)
    # stuff_area = 3 px: sky (2 px) becomes void
    pan = fusion(inst, sem, CLASSES, stuff_area=3)
    np.testing.assert_array_equal(class_map(pan), _expected(keep_d=inclusive, sky=False))
    # stuff_area_fraction = 0.25 of 16 px = 4 px: sky void too; 0.125 = 2 px: sky kept
    pan = fusion(inst, sem, CLASSES, stuff_area_fraction=0.25)
    np.testing.assert_array_equal(class_map(pan), _expected(keep_d=inclusive, sky=False))
    pan = fusion(inst, sem, CLASSES, stuff_area_fraction=0.125)
    np.testing.assert_array_equal(class_map(pan), _expected(keep_d=inclusive, sky=True))
    # score_threshold = 0.85: only A is left; it takes its 4 pixels, B's and C's become road
    pan = fusion(inst, sem, CLASSES, score_threshold=0.85, stuff_area=0)
    assert _things(pan) == [(CAR, 4, 0.9)]
    # overlap_threshold = 0.8: C (3 of 4 taken, 0.75) is kept and takes pixel (1, 5)
    pan = fusion(inst, sem, CLASSES, overlap_threshold=0.8, stuff_area=0)
    assert class_map(pan)[1, 5] == PERSON
    # mask_threshold = 0.45: A's 0.49 pixel (1, 0) is A's too
    pan = fusion(inst, sem, CLASSES, mask_threshold=0.45, stuff_area=0)
    assert class_map(pan)[1, 0] == CAR and _things(pan)[0] == (CAR, 5, 0.9)
    with pytest.raises(ValueError, match=rf"^fusion '{method}': give stuff_area or stuff_area_fraction, not both$"):
        fusion(inst, sem, CLASSES, stuff_area=1, stuff_area_fraction=0.5)


@pytest.mark.parametrize("method", ["kirillov", "seamless"])
def test_an_empty_mask_does_not_stop_the_others(method: str) -> None:
    # the best-scoring instance has an all-zero mask: it is skipped, the next one still counts
    masks = np.zeros((2, 2, 4), np.float32)
    masks[1, :, 2:] = 1.0
    inst = instances_from(masks, [CAR, TRUCK], [0.95, 0.9])
    pan = getattr(greedy, method)(inst, semantic_from("rrrr\nrrrr", LEGEND), CLASSES, stuff_area=0)
    assert _things(pan) == [(TRUCK, 4, 0.9)]
    np.testing.assert_array_equal(class_map(pan), [[ROAD, ROAD, TRUCK, TRUCK]] * 2)


@pytest.mark.parametrize("method", ["kirillov", "seamless"])
def test_void_semantic_input_stays_void_unless_an_instance_covers_it(method: str) -> None:
    # semantic (2 x 4), '.' = all-zero probabilities (void input):
    #   r r . .        instance (car, 0.9) covers (0, 1) (road) and (0, 3), (1, 3) (void)
    #   r . . .
    prob = np.zeros((6, 2, 4), np.float32)
    prob[ROAD] = [[0.9, 0.9, 0, 0], [0.9, 0, 0, 0]]
    prob[SKY] = [[0.1, 0.1, 0, 0], [0.1, 0, 0, 0]]
    masks = np.zeros((1, 2, 4), np.float32)
    masks[0, 0, 1] = masks[0, 0, 3] = masks[0, 1, 3] = 1.0
    inst = instances_from(masks, [CAR], [0.9])
    pan = getattr(greedy, method)(inst, SemanticPrediction(prob, (2, 4)), CLASSES, stuff_area=0)
    check_invariants(pan, CLASSES, (2, 4))
    np.testing.assert_array_equal(class_map(pan), [[ROAD, CAR, V, CAR], [ROAD, V, V, CAR]])
    assert sorted((s.class_index, s.area) for s in pan.segments) == [(ROAD, 2), (CAR, 3)]
