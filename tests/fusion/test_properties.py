"""Property tests of every fusion method on random small inputs (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segfusion.fusion import FUSION_METHODS, fuse
from segfusion.fusion.common import stuff_area_threshold
from segfusion.inference.paste import masks_to_image
from segfusion.types import ClassInfo, Instances, SemanticPrediction

from .helpers import bench_module, check_invariants, same_panoptic, street_classes

CLASSES = street_classes()
FUSED = [m for m in FUSION_METHODS if m != "semantic"]
SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def scenes(draw, distinct_scores: bool = False) -> tuple[Instances, SemanticPrediction, ClassInfo]:
    """Random instances and probabilities on images up to 40 × 60.

    Semantic probabilities at any stride (including 1 and finer than the image), sometimes
    peaked, sometimes coarsely quantised (ties), sometimes all stuff or all things. Masks
    box-relative (boxes reaching outside the image, tiny boxes) or image-relative; scores
    on a grid that contains 0.5 exactly, unless ``distinct_scores``.
    """
    height = draw(st.integers(1, 40))
    width = draw(st.integers(1, 60))
    h = draw(st.sampled_from([height, max(height // 4, 1), draw(st.integers(1, 12))]))
    w = draw(st.sampled_from([width, max(width // 4, 1), draw(st.integers(1, 16))]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    c = CLASSES.num_classes
    style = draw(st.sampled_from(["smooth", "peaked", "quantised", "all_stuff", "all_thing"]))
    logits = rng.normal(0, 1, (c, h, w))
    if style == "peaked":
        logits += 6 * np.eye(c)[rng.integers(0, c, (h, w))].transpose(2, 0, 1)
    prob = np.exp(logits)
    if style == "all_stuff":
        prob[CLASSES.is_thing_array] = 0
    if style == "all_thing":
        prob[~CLASSES.is_thing_array] = 0
    prob /= prob.sum(0)
    if style == "quantised":
        prob = np.round(prob * 4) / 4
    semantic = SemanticPrediction(prob.astype(np.float32), (height, width))

    n = draw(st.integers(0, 7))
    things = CLASSES.thing_indices
    if distinct_scores:
        scores = rng.permutation(np.linspace(0.05, 0.95, 19))[:n]
    else:
        scores = rng.choice([0.2, 0.5, 0.5, 0.6, 0.8, 0.95], n)
    x0 = rng.uniform(-0.3 * width, width, n)
    y0 = rng.uniform(-0.3 * height, height, n)
    bw = rng.uniform(0, 0.8 * width + 2, n)
    bh = rng.uniform(0, 0.8 * height + 2, n)
    boxes = np.stack([x0, y0, x0 + bw, y0 + bh], 1)
    m = draw(st.sampled_from([28, 5]))
    mask_prob = rng.random((n, m, m)).astype(np.float32)
    if draw(st.booleans()):
        mask_prob = np.round(mask_prob * 2) / 2  # many exact 0.5 and equal probabilities
    inst = Instances(
        boxes=boxes,
        scores=scores,
        labels=rng.choice(things, n),
        image_size=(height, width),
        mask_prob=mask_prob,
    )
    if draw(st.booleans()):
        inst = Instances(
            boxes=boxes,
            scores=scores,
            labels=inst.labels,
            image_size=(height, width),
            mask_image=masks_to_image(inst),
        )
    return inst, semantic, CLASSES


@SETTINGS
@given(scenes(), st.sampled_from(list(FUSION_METHODS)))
def test_partition_ids_and_class_flags(scene, method: str) -> None:
    inst, sem, classes = scene
    pan = fuse(method, inst, sem, classes)
    check_invariants(pan, classes, sem.image_size)


@SETTINGS
@given(scenes(), st.sampled_from(FUSED), st.sampled_from([None, 0, 3, 40]))
def test_no_small_stuff_survives(scene, method: str, stuff_area) -> None:
    inst, sem, classes = scene
    params = {} if stuff_area is None else {"stuff_area": stuff_area}
    pan = fuse(method, inst, sem, classes, **params)
    limit = stuff_area_threshold(method, sem.image_size, stuff_area, None)
    for s in pan.segments:
        if not s.is_thing:
            assert s.area >= limit


@SETTINGS
@given(scenes(distinct_scores=True), st.sampled_from(["kirillov", "seamless"]))
def test_greedy_instances_keep_their_share(scene, method: str) -> None:
    inst, sem, classes = scene
    pan = fuse(method, inst, sem, classes)
    masks = masks_to_image(inst, threshold=0.5)
    by_score = {round(float(s), 6): i for i, s in enumerate(inst.scores)}
    for s in pan.segments:
        if s.is_thing:
            i = by_score[round(s.score, 6)]
            pixels = pan.segment_ids == s.id
            assert s.class_index == inst.labels[i]
            assert inst.scores[i] >= 0.5 if method == "kirillov" else inst.scores[i] > 0.5
            assert not (pixels & ~masks[i]).any()
            assert 2 * s.area >= masks[i].sum()


@SETTINGS
@given(scenes(distinct_scores=True), st.sampled_from(FUSED), st.integers(0, 2**32 - 1))
def test_independent_of_instance_order(scene, method: str, seed: int) -> None:
    inst, sem, classes = scene
    order = np.random.default_rng(seed).permutation(len(inst))
    assert same_panoptic(fuse(method, inst, sem, classes), fuse(method, inst.select(order), sem, classes))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenes(), st.sampled_from(list(FUSION_METHODS)))
def test_equals_plain_reference(scene, method: str) -> None:
    """The fast implementations equal the benchmark's full-resolution references."""
    inst, sem, classes = scene
    reference = bench_module().REFERENCES[method]
    assert same_panoptic(fuse(method, inst, sem, classes), reference(inst, sem, classes))
