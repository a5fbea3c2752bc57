"""The compiled distance transform equals scipy's distance_transform_edt bit for bit."""

import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt

from segfusion.metrics import distance
from segfusion.metrics.boundary import boundary_distance


@pytest.fixture
def compiled_always(monkeypatch):
    if not distance.HAS_NUMBA:
        pytest.fail("numba is a dependency of segfusion and must import")
    monkeypatch.setattr(distance, "COMPILED_MIN_PIXELS", 0)


@pytest.mark.parametrize("shape, density", [((1, 1), 1.0), ((1, 9), 0.2), ((9, 1), 0.2), ((7, 13), 0.05), ((40, 31), 0.01),
                                            ((64, 64), 0.3), ((33, 70), 0.001)])  # fmt: skip
def test_compiled_equals_scipy(compiled_always, shape, density):
    rng = np.random.default_rng(sum(shape))
    for _ in range(5):
        feature = rng.random(shape) < density
        if not feature.any():
            feature[rng.integers(shape[0]), rng.integers(shape[1])] = True
        np.testing.assert_array_equal(distance.distance_to(feature), distance_transform_edt(~feature))


def test_hand_case(compiled_always):
    # one feature pixel at (1, 2) of a 3x4 grid: squared distances (y - 1)^2 + (x - 2)^2
    feature = np.zeros((3, 4), bool)
    feature[1, 2] = True
    yy, xx = np.mgrid[:3, :4]
    np.testing.assert_array_equal(distance.distance_to(feature), np.sqrt((yy - 1) ** 2 + (xx - 2) ** 2))


def test_features_only_in_far_columns_and_rows(compiled_always):
    # columns without any feature take their distance from other columns' parabolas
    feature = np.zeros((20, 50), bool)
    feature[0, 0] = feature[19, 49] = True
    np.testing.assert_array_equal(distance.distance_to(feature), distance_transform_edt(~feature))


def test_boundary_distance_uses_the_same_values_at_full_size():
    gt = np.zeros((512, 600), np.uint8)  # above COMPILED_MIN_PIXELS: the compiled path
    gt[100:300, 50:400] = 1
    gt[350:360, 500:590] = 2
    assert gt.size >= distance.COMPILED_MIN_PIXELS
    b = np.zeros(gt.shape, bool)
    b[1:] |= gt[1:] != gt[:-1]
    b[:-1] |= gt[1:] != gt[:-1]
    b[:, 1:] |= gt[:, 1:] != gt[:, :-1]
    b[:, :-1] |= gt[:, 1:] != gt[:, :-1]
    np.testing.assert_array_equal(boundary_distance(gt), distance_transform_edt(~b))


def _add_one(x):
    return x + 1


def test_compiled_on_first_call_compiles_with_numba_once():
    # the decorator runs at import for the kernel; called here directly so that it is tested
    import numba

    wrapped = distance._compiled_on_first_call(_add_one)
    cell = dict(zip(wrapped.__code__.co_freevars, wrapped.__closure__))["compiled"]
    assert cell.cell_contents is None  # nothing compiled before the first call
    assert wrapped(np.int64(2)) == 3
    dispatcher = cell.cell_contents
    assert isinstance(dispatcher, numba.core.registry.CPUDispatcher)
    assert dispatcher.targetoptions.get("nogil") is True and dispatcher._cache is not None
    assert wrapped(np.int64(5)) == 6 and cell.cell_contents is dispatcher  # compiled once
