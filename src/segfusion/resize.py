"""Bilinear resizing of class-probability maps, in numpy (no torch at import time).

The one shared upsampling function of DESIGN.md: every consumer of a
`SemanticPrediction` (fusion, metrics, report) goes through `resize_bilinear`, so
they all see the same pixels. The sampling grid is torch's
`F.interpolate(mode="bilinear", align_corners=False)`: source coordinate
``(dst + 0.5) * in / out - 0.5`` clamped at 0, which the tests check against torch.
"""

from __future__ import annotations

import numpy as np


def _axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices i0, i1 (n_out,) and weight w1 (n_out,) of the right neighbour."""
    scale = n_in / n_out
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.clip(src, 0.0, None)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (src - i0).astype(np.float32)
    return i0, i1, w1


def resize_bilinear(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``prob`` (C, h, w) to (C, H, W) with torch-compatible bilinear weights.

    Separable: rows first, then columns; float32 output. Identity when sizes match.
    """
    if prob.ndim != 3:
        raise ValueError(f"resize_bilinear expects (C, h, w), got shape {prob.shape}")
    c, h, w = prob.shape
    height, width = int(size[0]), int(size[1])
    prob = np.asarray(prob, dtype=np.float32)
    if (h, w) == (height, width):
        return prob
    y0, y1, wy = _axis_weights(h, height)
    x0, x1, wx = _axis_weights(w, width)
    rows = prob[:, y0, :] * (1.0 - wy)[None, :, None] + prob[:, y1, :] * wy[None, :, None]
    return rows[:, :, x0] * (1.0 - wx)[None, None, :] + rows[:, :, x1] * wx[None, None, :]


def resize_nearest(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) label map (torch 'nearest' grid: floor(dst * in / out))."""
    h, w = label.shape
    height, width = int(size[0]), int(size[1])
    if (h, w) == (height, width):
        return label
    ys = np.minimum((np.arange(height) * h / height).astype(np.int64), h - 1)
    xs = np.minimum((np.arange(width) * w / width).astype(np.int64), w - 1)
    return label[ys[:, None], xs[None, :]]
