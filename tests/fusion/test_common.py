"""Shared fusion machinery: `BilinearField`, `SegmentCanvas`, parameters, validation, and
the linear-time `segment_stats` the fusion output relies on."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segfusion.fusion import FUSION_METHODS, fuse, method_params
from segfusion.fusion.common import (
    DEFAULT_STUFF_AREA_FRACTION,
    BilinearField,
    SegmentCanvas,
    _block_any,
    _runs,
    stuff_area_threshold,
)
from segfusion.resize import _axis_weights, resize_bilinear
from segfusion.types import Instances, SemanticPrediction, segment_stats

from .helpers import CAR, ROAD, street_classes


@st.composite
def fields(draw):
    c = draw(st.integers(1, 9))
    h, w = draw(st.integers(1, 10)), draw(st.integers(1, 10))
    height, width = draw(st.integers(1, 45)), draw(st.integers(1, 45))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    prob = rng.random((c, h, w)).astype(np.float32)
    if draw(st.booleans()):
        prob = np.round(prob * 3) / 3  # exact ties
    need = rng.random((height, width)) < draw(st.sampled_from([0.0, 0.3, 1.0]))
    return prob, (height, width), need


@settings(max_examples=150, deadline=None)
@given(fields())
def test_field_is_exactly_resize_bilinear(case) -> None:
    prob, size, need = case
    ref = resize_bilinear(prob, size)
    field = BilinearField(prob, size)
    np.testing.assert_array_equal(field.argmax(), ref.argmax(axis=0))
    got = field.argmax(need=need)
    np.testing.assert_array_equal(got[need], ref.argmax(axis=0)[need])
    arg, top = field.argmax_and_max()
    np.testing.assert_array_equal(arg, ref.argmax(axis=0))
    np.testing.assert_array_equal(top, ref.max(axis=0))
    ys, xs = np.nonzero(np.ones(size, bool))
    np.testing.assert_array_equal(field.values(ys, xs), ref[:, ys, xs].T)
    np.testing.assert_array_equal(field.rows(1, 3), ref[:, 1:3])


def test_field_channels_and_groups() -> None:
    rng = np.random.default_rng(0)
    prob = rng.random((5, 6, 7)).astype(np.float32)
    field = BilinearField(prob, (20, 30))
    np.testing.assert_array_equal(
        field.channels([4, 1]).argmax(), resize_bilinear(prob[[4, 1]], (20, 30)).argmax(0)
    )
    grouped = field.grouped([[0], [1, 2, 3], [4]])
    np.testing.assert_allclose(
        grouped.values(np.array([3]), np.array([5]))[0],
        [resize_bilinear(prob, (20, 30))[list(g), 3, 5].sum() for g in ([0], [1, 2, 3], [4])],
        rtol=1e-6,
    )


def test_field_on_a_realistic_stride4_map() -> None:
    """Large mixed regions, 19 channels: the candidate shortcut and its fallback both run."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 19, (6, 8)).repeat(6, 0).repeat(6, 1)
    logits = 3 * np.eye(19)[labels].transpose(2, 0, 1) + rng.normal(0, 1.5, (19, 36, 48))
    prob = (np.exp(logits) / np.exp(logits).sum(0)).astype(np.float32)
    np.testing.assert_array_equal(
        BilinearField(prob, (144, 192)).argmax(), resize_bilinear(prob, (144, 192)).argmax(0)
    )


@pytest.mark.parametrize(("n_in", "n_out"), [(256, 1024), (7, 30), (5, 17), (3, 12), (2, 8), (4, 4)])
def test_block_any_matches_reduceat(n_in: int, n_out: int) -> None:
    rng = np.random.default_rng(n_out)
    mask = rng.random((n_out, 9)) < 0.05
    start, count = _runs(_axis_weights(n_in, n_out)[0], n_in)
    np.testing.assert_array_equal(
        _block_any(mask, start, count, axis=0), np.logical_or.reduceat(mask, start, axis=0)
    )
    np.testing.assert_array_equal(
        _block_any(mask.T, start, count, axis=1), np.logical_or.reduceat(mask.T, start, axis=1)
    )


def _naive_stats(seg: np.ndarray) -> dict:
    out = {}
    for sid in np.unique(seg):
        if sid == 0:
            continue
        ys, xs = np.nonzero(seg == sid)
        out[int(sid)] = (len(ys), (int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1))
    return out


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 20), st.integers(1, 20), st.sampled_from([1, 5, 1000, 10**6]), st.integers(0, 2**32 - 1)
)
def test_segment_stats_matches_naive(h: int, w: int, scale: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    seg = (rng.integers(0, 6, (h, w)) * scale).astype(np.int32)
    if scale == 5:
        seg -= 3  # negative ids go through np.unique
    got = segment_stats(seg)
    assert got == _naive_stats(seg)
    assert list(got) == sorted(got)


def test_canvas_renumbers_and_drops_empty_segments() -> None:
    canvas = SegmentCanvas((2, 3))
    a = canvas.new_segment(CAR, True, 0.9)
    canvas.new_segment(CAR, True, 0.8)  # never painted
    canvas.ids[0, :2] = a
    labels = np.full((2, 3), 255, np.uint8)
    labels[1] = ROAD
    classes = street_classes()
    areas = canvas.paint_classes(labels, ~classes.is_thing_array, classes.is_thing_array)
    assert areas[ROAD] == 3
    pan = canvas.to_panoptic()
    assert [(s.id, s.class_index, s.area) for s in pan.segments] == [(1, CAR, 2), (2, ROAD, 3)]
    assert pan.segments[0].score == pytest.approx(0.9)


def test_stuff_area_threshold() -> None:
    assert stuff_area_threshold("m", (1024, 2048), None, None) == 4096
    assert stuff_area_threshold("m", (10, 10), None, None) == pytest.approx(100 * DEFAULT_STUFF_AREA_FRACTION)
    assert stuff_area_threshold("m", (10, 10), 7, None) == 7
    assert stuff_area_threshold("m", (10, 10), None, 0.5) == 50
    with pytest.raises(ValueError, match="not both"):
        stuff_area_threshold("m", (10, 10), 7, 0.5)
    with pytest.raises(ValueError, match="stuff_area_fraction"):
        stuff_area_threshold("m", (10, 10), None, 2.0)


def _tiny_inputs(labels=(CAR,), size=(4, 5)):
    classes = street_classes()
    n = len(labels)
    inst = Instances(
        boxes=np.tile([0, 0, 2, 2], (n, 1)),
        scores=np.full(n, 0.9),
        labels=np.array(labels),
        image_size=size,
        mask_prob=np.ones((n, 28, 28)),
    )
    sem = SemanticPrediction(np.full((classes.num_classes, 2, 2), 1 / 6, np.float32), size)
    return inst, sem, classes


def test_unknown_method_and_parameters_are_named() -> None:
    inst, sem, classes = _tiny_inputs()
    with pytest.raises(ValueError, match=r"unknown fusion method 'nope'.*costea"):
        fuse("nope", inst, sem, classes)
    with pytest.raises(ValueError, match=r"jsis.thresh: unknown parameter.*score_threshold"):
        fuse("jsis", inst, sem, classes, thresh=0.3)
    with pytest.raises(ValueError, match="not both"):
        fuse("kirillov", inst, sem, classes, stuff_area=10, stuff_area_fraction=0.1)
    assert set(method_params("costea")) == {
        "score_threshold",
        "mask_threshold",
        "stuff_area",
        "stuff_area_fraction",
    }


@pytest.mark.parametrize("method", list(FUSION_METHODS))
def test_stuff_instance_labels_are_rejected(method: str) -> None:
    inst, sem, classes = _tiny_inputs(labels=(CAR, ROAD))
    with pytest.raises(ValueError, match=r"0 \(road\)"):
        fuse(method, inst, sem, classes)


def test_inconsistent_inputs_are_rejected() -> None:
    inst, sem, classes = _tiny_inputs()
    with pytest.raises(ValueError, match="image of size"):
        fuse("kirillov", inst, SemanticPrediction(sem.prob, (8, 8)), classes)
    with pytest.raises(ValueError, match="channels"):
        fuse("kirillov", inst, SemanticPrediction(sem.prob[:4], sem.image_size), classes)


def test_fusion_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, segfusion.fusion; assert 'torch' not in sys.modules and 'scipy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
