"""Hand-made cases pinning each method's distinctive rule.

Pictures: one character per pixel. Semantic legends give the probabilities of a pixel
(the rest of the mass is spread over the other classes); masks are '#' = 1.0 unless a
probability legend is given. Semantic predictions are at full resolution here, so the
pictures are exactly what the methods see.
"""

from __future__ import annotations

import numpy as np
import pytest

from segfusion.fusion import FUSION_METHODS, fuse
from segfusion.types import Instances

from .helpers import (
    CAR,
    PERSON,
    ROAD,
    SIDEWALK,
    SKY,
    TRUCK,
    check_invariants,
    class_map,
    grid,
    instances_from,
    masks_from,
    semantic_from,
    street_classes,
)

CLASSES = street_classes()
V = 255  # void in class maps
LEGEND = {
    "r": {ROAD: 0.9},
    "w": {SIDEWALK: 0.9},
    "s": {SKY: 0.9},
    "c": {CAR: 0.9},
    "t": {TRUCK: 0.9},
    "p": {PERSON: 0.9},
}


def expected(picture: str, legend: dict[str, int]) -> np.ndarray:
    return np.vectorize(legend.get)(grid(picture))


# --------------------------------------------------------------------------- greedy


def test_kirillov_and_seamless_differ_exactly_at_score_half() -> None:
    sem = semantic_from(
        """
        rrrrrr
        rcccrr
        rcccrr
        """,
        LEGEND,
    )
    mask = masks_from(
        [
            """
            ......
            .###..
            .###..
            """
        ]
    )
    for score, kirillov_keeps, seamless_keeps in [
        (0.5, True, False),
        (0.500001, True, True),
        (0.499999, False, False),
    ]:
        inst = instances_from(mask, [CAR], [score])
        k = fuse("kirillov", inst, sem, CLASSES, stuff_area=0)
        s = fuse("seamless", inst, sem, CLASSES, stuff_area=0)
        assert bool(class_map(k)[1, 1] == CAR) == kirillov_keeps
        assert bool(class_map(s)[1, 1] == CAR) == seamless_keeps
        # a dropped instance leaves thing-argmax pixels void
        assert class_map(s)[1, 1] in (CAR, V)


@pytest.mark.parametrize("method", ["kirillov", "seamless"])
def test_greedy_overlap_rule(method: str) -> None:
    """A keeps 4 px; B has exactly half taken (kept, takes 2); C has 3 of 4 taken (dropped).

    A  ####....      B  ..####..      C  ...###..
       ........         ........         .....#..
    """
    sem = semantic_from("rrrrrrrr\nrrrrrrrr", LEGEND)
    masks = masks_from(["####....\n........", "..####..\n........", "...###..\n.....#.."])
    pan = fuse(
        method, instances_from(masks, [CAR, TRUCK, PERSON], [0.9, 0.8, 0.7]), sem, CLASSES, stuff_area=0
    )
    things = [(s.class_index, s.area) for s in pan.segments if s.is_thing]
    assert things == [(CAR, 4), (TRUCK, 2)]
    np.testing.assert_array_equal(class_map(pan)[0], [CAR] * 4 + [TRUCK] * 2 + [ROAD] * 2)
    np.testing.assert_array_equal(class_map(pan)[1], [ROAD] * 8)


def test_greedy_uncovered_things_and_small_stuff_become_void() -> None:
    """'s' (2 px of sky) is under stuff_area=3; 'c' (car) has no instance."""
    pic = """
        rrrrrrrr
        rrrrsscc
        """
    pan = fuse("kirillov", Instances.empty((2, 8)), semantic_from(pic, LEGEND), CLASSES, stuff_area=3)
    np.testing.assert_array_equal(class_map(pan), expected(pic, {"r": ROAD, "s": V, "c": V}))


# --------------------------------------------------------------------------- jsis


def test_jsis_overlap_goes_to_the_higher_mask_probability() -> None:
    """A (score 0.9, prob 0.6) and B (score 0.6, prob 0.9) overlap in columns 2-3.

    A  aaaa..    B  ..bbbb    jsis: A A B B B B    kirillov: A A A A B B
    """
    sem = semantic_from("rrrrrr", LEGEND)
    masks = masks_from(["aaaa..", "..bbbb"], probs=[{"a": 0.6}, {"b": 0.9}])
    inst = instances_from(masks, [CAR, TRUCK], [0.9, 0.6])
    np.testing.assert_array_equal(
        class_map(fuse("jsis", inst, sem, CLASSES, stuff_area=0))[0], [CAR] * 2 + [TRUCK] * 4
    )
    np.testing.assert_array_equal(
        class_map(fuse("kirillov", inst, sem, CLASSES, stuff_area=0))[0], [CAR] * 4 + [TRUCK] * 2
    )
    # equal probabilities: the higher score wins
    tie = instances_from(
        masks_from(["aaaa..", "..bbbb"], probs=[{"a": 0.7}, {"b": 0.7}]), [CAR, TRUCK], [0.9, 0.6]
    )
    np.testing.assert_array_equal(
        class_map(fuse("jsis", tie, sem, CLASSES, stuff_area=0))[0], [CAR] * 4 + [TRUCK] * 2
    )


def test_jsis_removes_things_from_the_semantic_prediction() -> None:
    """Thing-argmax pixels without an instance take their most probable stuff class."""
    legend = dict(LEGEND, x={CAR: 0.7, SIDEWALK: 0.2})
    pic = """
        rrrxx
        wwwww
        """
    sem = semantic_from(pic, legend)
    pan = fuse("jsis", Instances.empty((2, 5)), sem, CLASSES, stuff_area=0)
    np.testing.assert_array_equal(class_map(pan), expected(pic, {"r": ROAD, "x": SIDEWALK, "w": SIDEWALK}))
    assert all(not s.is_thing for s in pan.segments)


def test_jsis_small_stuff_takes_the_next_best_surviving_class() -> None:
    """Sidewalk (2 px) is under stuff_area=3; its pixels go to their own next-best class.

    rrrrXY    X: sidewalk .5, sky .3   -> sky
    ssssrr    Y: sidewalk .5, road .3  -> road
    """
    legend = dict(LEGEND, X={SIDEWALK: 0.5, SKY: 0.3, ROAD: 0.1}, Y={SIDEWALK: 0.5, ROAD: 0.3, SKY: 0.1})
    pan = fuse(
        "jsis", Instances.empty((2, 6)), semantic_from("rrrrXY\nssssrr", legend), CLASSES, stuff_area=3
    )
    np.testing.assert_array_equal(class_map(pan), [[ROAD] * 4 + [SKY, ROAD], [SKY] * 4 + [ROAD] * 2])


def test_jsis_replacement_skips_classes_that_are_removed_too() -> None:
    """Sky (1 px) and sidewalk (1 px) are both under the threshold: X's next best, sky,
    is removed too, so X takes road, the best survivor."""
    legend = dict(LEGEND, X={SIDEWALK: 0.5, SKY: 0.3, ROAD: 0.1})
    pan = fuse("jsis", Instances.empty((2, 4)), semantic_from("rrrX\nrrsr", legend), CLASSES, stuff_area=3)
    np.testing.assert_array_equal(class_map(pan), [[ROAD] * 4, [ROAD] * 4])
    # nothing survives: void
    pan = fuse("jsis", Instances.empty((2, 4)), semantic_from("rrrX\nrrsr", legend), CLASSES, stuff_area=100)
    assert (class_map(pan) == V).all()


def test_jsis_instances_overwrite_stuff_and_get_unique_ids() -> None:
    sem = semantic_from("rrrr\nrrrr", LEGEND)
    masks = masks_from(["##..\n....", "..##\n...."])
    pan = fuse("jsis", instances_from(masks, [CAR, CAR], [0.9, 0.8]), sem, CLASSES, stuff_area=0)
    cars = [s for s in pan.segments if s.class_index == CAR]
    assert len(cars) == 2 and len({s.id for s in cars}) == 2
    assert [round(s.score, 3) for s in cars] == [0.9, 0.8]


# --------------------------------------------------------------------------- costea


def test_costea_keeps_instance_pixels_only_on_their_category() -> None:
    """A truck instance over a car region ('c'), a person region ('p') and road.

    semantic   mask        result
    rrrrrrrr   ........    r r r r r r r r
    rccccppr   .#######    r T T T T P P r     T: the truck instance (object-level class
    rccccppr   .#######    r T T T T P P r        kept over the semantic sub-category)
    rrrrrrrr   ........    r r r r r r r r     P: unreached person segment, new id
    """
    sem = semantic_from("rrrrrrrr\nrccccppr\nrccccppr\nrrrrrrrr", LEGEND)
    mask = masks_from(["........\n.#######\n.#######\n........"])
    pan = fuse("costea", instances_from(mask, [TRUCK], [0.9]), sem, CLASSES, stuff_area=0)
    T, P, r = TRUCK, PERSON, ROAD
    np.testing.assert_array_equal(
        class_map(pan),
        [[r] * 8, [r, T, T, T, T, P, P, r], [r, T, T, T, T, P, P, r], [r] * 8],
    )
    person = next(s for s in pan.segments if s.class_index == PERSON)
    truck = next(s for s in pan.segments if s.class_index == TRUCK)
    assert person.id != truck.id and person.area == 4
    assert person.score == pytest.approx(0.9)  # mean probability of 'person' over the segment
    assert truck.score == pytest.approx(0.9)


def test_costea_region_growing_follows_paths_not_straight_lines() -> None:
    """Uncovered car pixels join the nearest instance along 4-connected car pixels.

    semantic    A at (0,2), B at (2,6)     (0,4) is 2 px from A as the crow flies but
    ccc.ccc     . . A . . . .              6 steps along car pixels; 4 steps from B.
    ccc.ccc     . . . . . . .
    ccccccc     . . . . . . B              result: left arm A, bottom row up to col 3 A
    """
    sem = semantic_from("ccc.ccc\nccc.ccc\nccccccc", dict(LEGEND, **{".": {ROAD: 0.9}}))
    masks = masks_from(["..#....\n.......\n.......", ".......\n.......\n......#"])
    pan = fuse("costea", instances_from(masks, [CAR, CAR], [0.9, 0.8]), sem, CLASSES, stuff_area=0)
    a, b, r = 1, 2, pan.segment_ids[0, 3]
    np.testing.assert_array_equal(
        pan.segment_ids,
        [[a, a, a, r, b, b, b], [a, a, a, r, b, b, b], [a, a, a, a, b, b, b]],
    )
    assert pan.segment(a).class_index == CAR and pan.segment(b).class_index == CAR


def test_costea_equidistant_pixels_go_to_the_higher_score() -> None:
    """ccccccccc with A (0.8) at column 0 and B (0.9) at column 8: column 4 is 4 steps
    from both and joins B, the higher-scoring instance."""
    sem = semantic_from("ccccccccc", LEGEND)
    masks = masks_from(["#........", "........#"])
    pan = fuse("costea", instances_from(masks, [CAR, TRUCK], [0.8, 0.9]), sem, CLASSES, stuff_area=0)
    np.testing.assert_array_equal(class_map(pan)[0], [CAR] * 4 + [TRUCK] * 5)


def test_costea_unreached_segment_takes_the_best_subcategory_over_the_segment() -> None:
    """The right blob is cut off from the instance by road. Per pixel, 'u' says car and 'v'
    truck; summed over the blob truck wins (2·.40 + .60 = 1.40 > 2·.45 + .30 = 1.20), so
    the blob is one truck segment with score 1.40 / 3.

    ccc.uuv
    """
    legend = dict(LEGEND, **{".": {ROAD: 0.9}, "u": {CAR: 0.45, TRUCK: 0.40}, "v": {TRUCK: 0.60, CAR: 0.30}})
    sem = semantic_from("ccc.uuv", legend)
    masks = masks_from(["#......"])
    pan = fuse("costea", instances_from(masks, [CAR], [0.9]), sem, CLASSES, stuff_area=0)
    np.testing.assert_array_equal(class_map(pan)[0], [CAR] * 3 + [ROAD] + [TRUCK] * 3)
    blob = pan.segment(int(pan.segment_ids[0, 5]))
    assert blob.is_thing and blob.area == 3 and blob.score == pytest.approx(1.4 / 3, rel=1e-5)


def test_costea_foreground_is_decided_at_category_level() -> None:
    """'x' has road as its most probable class (.4) but vehicle as its most probable
    category (car .3 + truck .3): Costea grows the car into it, Kirillov calls it road."""
    legend = dict(LEGEND, x={ROAD: 0.4, CAR: 0.3, TRUCK: 0.3})
    sem = semantic_from("ccxx\nrrrr", legend)
    inst = instances_from(masks_from(["#...\n...."]), [CAR], [0.9])
    np.testing.assert_array_equal(class_map(fuse("costea", inst, sem, CLASSES, stuff_area=0))[0], [CAR] * 4)
    np.testing.assert_array_equal(
        class_map(fuse("kirillov", inst, sem, CLASSES, stuff_area=0))[0], [CAR, V, ROAD, ROAD]
    )


def test_costea_applies_the_stuff_area_rule() -> None:
    pic = "rrrrrs"
    pan = fuse("costea", Instances.empty((1, 6)), semantic_from(pic, LEGEND), CLASSES, stuff_area=2)
    np.testing.assert_array_equal(class_map(pan)[0], [ROAD] * 5 + [V])


# --------------------------------------------------------------------------- semantic


def test_semantic_is_the_argmax_with_one_segment_per_class() -> None:
    pic = "rrcc\nccpp"
    masks = masks_from(["##..\n...."])
    pan = fuse("semantic", instances_from(masks, [TRUCK], [0.9]), semantic_from(pic, LEGEND), CLASSES)
    np.testing.assert_array_equal(class_map(pan), expected(pic, {"r": ROAD, "c": CAR, "p": PERSON}))
    assert [(s.class_index, s.is_thing, s.area, s.score) for s in pan.segments] == [
        (ROAD, False, 2, 1.0),
        (CAR, True, 4, 1.0),
        (PERSON, True, 2, 1.0),
    ]


def test_semantic_background_threshold() -> None:
    legend = dict(LEGEND, q={CAR: 0.3, TRUCK: 0.25})
    sem = semantic_from("ccqq", legend)
    pan = fuse(
        "semantic", Instances.empty((1, 4)), sem, CLASSES, background_threshold=0.5, background_class=ROAD
    )
    np.testing.assert_array_equal(class_map(pan)[0], [CAR, CAR, ROAD, ROAD])
    # without a background class, those pixels are void
    pan = fuse("semantic", Instances.empty((1, 4)), sem, CLASSES, background_threshold=0.5)
    np.testing.assert_array_equal(class_map(pan)[0], [CAR, CAR, V, V])
    with pytest.raises(ValueError, match="background_class"):
        fuse("semantic", Instances.empty((1, 4)), sem, CLASSES, background_threshold=0.5, background_class=99)


# --------------------------------------------------------------------------- all methods


@pytest.mark.parametrize("method", list(FUSION_METHODS))
def test_empty_instances(method: str) -> None:
    """No instances: car pixels are void for the greedy methods, take the most probable stuff
    class in JSIS (sky here, not the first stuff class), and stay car (semantic argmax, Costea's
    unreached foreground)."""
    pic = "rrss\nrrcc"
    legend = dict(LEGEND, c={CAR: 0.9, SKY: 0.05})  # on car pixels sky is the best stuff class
    pan = fuse(
        method,
        Instances.empty((2, 4)),
        semantic_from(pic, legend),
        CLASSES,
        **({} if method == "semantic" else {"stuff_area": 0}),
    )
    check_invariants(pan, CLASSES, (2, 4))
    cm = class_map(pan)
    assert cm[0, 0] == ROAD and cm[0, 3] == SKY
    car_pixels = {"kirillov": V, "seamless": V, "jsis": SKY, "costea": CAR, "semantic": CAR}[method]
    np.testing.assert_array_equal(cm, [[ROAD, ROAD, SKY, SKY], [ROAD, ROAD, car_pixels, car_pixels]])
    # one segment per class; the car pixels form one segment (no instance splits them)
    assert sorted(s.class_index for s in pan.segments) == sorted({ROAD, SKY} | ({car_pixels} - {V}))


@pytest.mark.parametrize("method", list(FUSION_METHODS))
def test_all_void_thing_only_prediction(method: str) -> None:
    """Only thing classes predicted and no instances: greedy leaves everything void."""
    sem = semantic_from("cc\ncc", LEGEND)
    pan = fuse(method, Instances.empty((2, 2)), sem, CLASSES)
    check_invariants(pan, CLASSES, (2, 2))
    if method in ("kirillov", "seamless"):
        assert pan.segments == ()


@pytest.mark.parametrize("method", [m for m in FUSION_METHODS if m != "semantic"])
def test_box_masks_reaching_outside_the_image(method: str) -> None:
    """Boxes half outside the image (top-left, bottom-right) and one fully outside."""
    sem = semantic_from("cccccc\ncccccc\ncccccc\ncccccc", LEGEND)
    inst = Instances(
        boxes=np.array([[-4, -4, 2, 2], [3, 2, 12, 9], [20, 20, 30, 30]], np.float32),
        scores=np.array([0.9, 0.8, 0.7]),
        labels=np.array([CAR, TRUCK, CAR]),
        image_size=(4, 6),
        mask_prob=np.ones((3, 28, 28), np.float32),
    )
    pan = fuse(method, inst, sem, CLASSES, stuff_area=0)
    check_invariants(pan, CLASSES, (4, 6))
    cm = class_map(pan)
    assert cm[0, 0] == CAR and cm[3, 5] == TRUCK
    assert len([s for s in pan.segments if s.is_thing]) >= 2
