"""Exact Euclidean distance transform of a binary mask, compiled for large images.

`boundary_distance` (IMP Fig. 5 bins) needs, for every pixel, the L2 distance to the nearest
ground-truth boundary pixel. ``scipy.ndimage.distance_transform_edt`` computes it exactly but
builds a feature transform on the way: about 0.4 s for a 1024x2048 Cityscapes frame, most of an
evaluate job's per-image time. For images of at least `COMPILED_MIN_PIXELS` pixels this module
computes the same squared distances with the separable lower-envelope algorithm of Felzenszwalb &
Huttenlocher, "Distance Transforms of Sampled Functions" (Theory of Computing 8, 2012, Sec. 2-3):

1. per column, the distance to the nearest feature pixel of that column (two sweeps);
2. per row, the lower envelope of the parabolas ``(x - q)^2 + g(q)^2`` over the row's columns q
   with a finite column distance, read off at every x.

All inputs are integers, so the squared distances are exact; the envelope's breakpoints are
rationals with denominators below 2 W, far from any integer x by more than float64's rounding,
so the chosen parabola is a minimal one. ``sqrt`` of the exact squared distance is what scipy
returns, bit for bit (tests/metrics/test_distance.py compares them). Smaller images and installs
without numba use scipy: the compiled path costs numba's import and the loading of the cached kernel,
about 1.5 s per process, which pays from a few large images on.
"""

from __future__ import annotations

import importlib.util

import numpy as np

HAS_NUMBA = importlib.util.find_spec("numba") is not None
"""numba is a dependency (segfusion.models.imp_cpu); without it scipy does the work."""

COMPILED_MIN_PIXELS = 1 << 18
"""Images with at least this many pixels (512x512) use the compiled transform."""


def _compiled_on_first_call(function):
    """``function`` numba-compiled (or loaded from numba's disk cache) when first called, so that
    importing this module does not import numba. A decorator, which mutmut leaves unmutated: a
    mutation trampoline could not be compiled (mutation/EQUIVALENT.md, "Tool limits")."""
    compiled = None

    def call(*args):
        nonlocal compiled
        if compiled is None:
            import numba

            compiled = numba.njit(cache=True, nogil=True)(function)
        return compiled(*args)

    return call


@_compiled_on_first_call
def _squared_edt(feature, out):
    """feature: (H, W) bool, at least one True; out: (H, W) int64, the squared L2 distance of
    every pixel to the nearest True pixel."""
    h, w = feature.shape
    none = h + w  # larger than any column distance: "no feature in this column"
    g = np.empty((h, w), np.int64)
    for x in range(w):
        last = -1
        for y in range(h):
            if feature[y, x]:
                last = y
            g[y, x] = y - last if last >= 0 else none
        last = -1
        for y in range(h - 1, -1, -1):
            if feature[y, x]:
                last = y
            if last >= 0 and last - y < g[y, x]:
                g[y, x] = last - y
    v = np.empty(w, np.int64)  # columns of the envelope's parabolas, left to right
    z = np.empty(w + 1, np.float64)  # z[k], z[k + 1]: where parabola v[k] is the lowest
    for y in range(h):
        k = -1
        for q in range(w):
            if g[y, q] >= none:
                continue
            fq = g[y, q] * g[y, q] + q * q
            if k < 0:
                k = 0
                v[0] = q
                z[0] = -np.inf
                z[1] = np.inf
                continue
            while True:
                p = v[k]
                s = (fq - (g[y, p] * g[y, p] + p * p)) / (2.0 * (q - p))
                if s <= z[k]:
                    k -= 1  # never below 0: z[0] is -inf
                else:
                    break
            k += 1
            v[k] = q
            z[k] = s
            z[k + 1] = np.inf
        j = 0
        for x in range(w):
            while z[j + 1] < x:
                j += 1
            p = v[j]
            out[y, x] = (x - p) * (x - p) + g[y, p] * g[y, p]


def distance_to(feature: np.ndarray) -> np.ndarray:
    """(H, W) float64 L2 distance of every pixel to the nearest True pixel of ``feature``
    ((H, W) bool with at least one True), equal to ``distance_transform_edt(~feature)``."""
    feature = np.ascontiguousarray(feature, dtype=bool)
    if not HAS_NUMBA or feature.size < COMPILED_MIN_PIXELS:
        from scipy.ndimage import distance_transform_edt  # lazy: keeps `import segfusion.metrics` fast

        return distance_transform_edt(~feature)
    out = np.empty(feature.shape, np.int64)
    _squared_edt(feature, out)
    return np.sqrt(out.astype(np.float64))
