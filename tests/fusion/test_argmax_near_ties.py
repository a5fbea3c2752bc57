"""BilinearField.argmax equals resize_bilinear(prob).argmax(axis=0) when two channels are within
float32 rounding of each other (found by mutation testing: the unmixed-cell shortcut kept the
corner's class where interpolation rounded the two to a tie, which argmax gives the lower index)."""

import numpy as np

from segfusion.fusion.common import BilinearField
from segfusion.resize import resize_bilinear


def test_one_ulp_apart_channels():
    # channel 1 is channel 0 plus one float32 step: the low-res argmax is 1, but at output row 2
    # interpolation rounds both to the same value and the full-resolution argmax is 0
    p = np.array([[[0.6369617]], [[np.nextafter(np.float32(0.6369617), np.float32(1))]]], np.float32)
    expected = resize_bilinear(p, (3, 1)).argmax(axis=0)
    np.testing.assert_array_equal(BilinearField(p, (3, 1)).argmax(), expected)


def test_random_near_ties_equal_the_full_resolution_argmax():
    rng = np.random.default_rng(0)
    for case in range(300):
        c, h, w = rng.integers(2, 5), rng.integers(1, 5), rng.integers(1, 5)
        base = rng.random((1, h, w), dtype=np.float32)
        steps = rng.integers(0, 3, size=(c, h, w))  # channels a few float32 steps apart
        p = base * (1 + steps.astype(np.float32) * np.finfo(np.float32).eps)
        p = p.astype(np.float32)
        out = (int(h * rng.integers(1, 4)), int(w * rng.integers(1, 4)))
        expected = resize_bilinear(p, out).argmax(axis=0)
        np.testing.assert_array_equal(BilinearField(p, out).argmax(), expected, err_msg=f"case {case}")


def test_all_zero_channels_stay_on_the_shortcut():
    # an IMP canvas is mostly zeros: exact ties (gap 0) need no recomputation and give channel 0
    p = np.zeros((3, 4, 4), np.float32)
    np.testing.assert_array_equal(BilinearField(p, (8, 8)).argmax(), np.zeros((8, 8), np.uint8))
