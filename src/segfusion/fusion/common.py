"""Machinery shared by the fusion methods (DESIGN.md, "Fusion methods").

- `BilinearField`: a semantic prediction (C, h, w) seen at image resolution (H, W) through
  the grid of `segfusion.resize.resize_bilinear`, without materialising (C, H, W): argmax
  maps, exact values at chosen pixels, exact row blocks, and the void pixels (all-zero
  probabilities: no class, which every method leaves void unless an instance covers it).
- `SegmentCanvas`: the (H, W) segment-id map being built plus its segment info; turns
  into a `Panoptic` with ids 1..K.
- parameter handling (`stuff_area_threshold`), input validation (`validate_inputs`) and
  instance ordering / selection (`ranked_instances`).

No torch here: the ``fuse`` command must start fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from segfusion.inference.paste import Crop, instance_crop
from segfusion.resize import _axis_weights
from segfusion.types import ClassInfo, Instances, Panoptic, SemanticPrediction

DEFAULT_STUFF_AREA_FRACTION = 4096 / (1024 * 2048)
"""Kirillov's, Seamless' (Sec. 3.5) and JSIS' (Sec. 2.2.2) 4096 px on a 1024×2048 image."""

_CHUNK = 1 << 16
"""Pixels per batch when exact values are gathered (bounds memory to ~C × 256 kB)."""

_CANDIDATES = 4
"""Channels interpolated per pixel in mixed cells by `BilinearField.argmax`."""

_ROW_BLOCK = 32
"""Rows per block when full-resolution rows are computed exactly."""


# --------------------------------------------------------------------------- parameters


def stuff_area_threshold(
    method: str, image_size: tuple[int, int], stuff_area: float | None, stuff_area_fraction: float | None
) -> float:
    """Minimum stuff area in pixels of this image.

    ``stuff_area`` (pixels) or ``stuff_area_fraction`` (of H·W) may be given, not both; with
    neither, ``DEFAULT_STUFF_AREA_FRACTION`` (4096 px at 1024×2048) applies.
    """
    if stuff_area is not None and stuff_area_fraction is not None:
        raise ValueError(f"fusion {method!r}: give stuff_area or stuff_area_fraction, not both")
    if stuff_area is not None:
        if stuff_area < 0:
            raise ValueError(f"fusion {method!r}: stuff_area must be >= 0, got {stuff_area}")
        return float(stuff_area)
    fraction = DEFAULT_STUFF_AREA_FRACTION if stuff_area_fraction is None else float(stuff_area_fraction)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fusion {method!r}: stuff_area_fraction must be in [0, 1], got {fraction}")
    return fraction * image_size[0] * image_size[1]


def validate_inputs(instances: Instances, semantic: SemanticPrediction, classes: ClassInfo) -> None:
    """Image sizes agree, the semantic prediction has one channel per class, labels are things."""
    if tuple(instances.image_size) != tuple(semantic.image_size):
        raise ValueError(
            f"fusion: instances are for an image of size {instances.image_size}, "
            f"the semantic prediction for {semantic.image_size}"
        )
    if semantic.num_classes != classes.num_classes:
        raise ValueError(
            f"fusion: the semantic prediction has {semantic.num_classes} channels, the class list "
            f"{classes.num_classes} classes"
        )
    labels = np.unique(instances.labels)
    bad = labels[(labels < 0) | (labels >= classes.num_classes)]
    if len(bad):
        raise ValueError(
            f"fusion: instance labels {bad.tolist()} are not class indices 0..{classes.num_classes - 1}"
        )
    stuff = labels[~classes.is_thing_array[labels]]
    if len(stuff):
        names = [f"{int(c)} ({classes.names[int(c)]})" for c in stuff]
        raise ValueError(f"fusion: instance labels {', '.join(names)} are stuff classes, not thing classes")


def ranked_instances(instances: Instances, score_threshold: float, inclusive: bool) -> np.ndarray:
    """Indices of the instances passing the score threshold, by descending score.

    ``inclusive``: keep ``score >= score_threshold`` (else ``>``). The sort is stable, so
    equal scores keep their input order.
    """
    scores = instances.scores
    keep = scores >= score_threshold if inclusive else scores > score_threshold
    index = np.flatnonzero(keep)
    return index[np.argsort(-scores[index], kind="stable")]


def binary_crop(instances: Instances, index: int, mask_threshold: float) -> Crop:
    """Instance ``index``'s mask binarised as ``prob >= mask_threshold``, cut to its box.

    Returns (bool crop, (y0, x0)); the crop may be empty or all False.
    """
    crop, offset = instance_crop(instances, index)
    return crop >= mask_threshold, offset


# --------------------------------------------------------------------------- semantic


class BilinearField:
    """Class probabilities (C, h, w) seen at image resolution (H, W).

    Every value it reports is bit-identical to the corresponding value of
    ``resize_bilinear(prob, (H, W))`` (same float32 operations in the same order: rows, then
    columns), but (C, H, W) is never built. `argmax` uses that bilinear interpolation is a
    convex combination of the 4 surrounding low-resolution pixels: where all 4 have the same
    argmax class, so has every pixel between them; only the other pixels are computed.
    """

    def __init__(self, prob: np.ndarray, image_size: tuple[int, int]) -> None:
        """prob: (C, h, w) probabilities (any float dtype); image_size: (H, W)."""
        prob = np.asarray(prob)
        if prob.ndim != 3:
            raise ValueError(f"BilinearField: prob must be (C, h, w), got {prob.shape}")
        self.prob = np.ascontiguousarray(prob, dtype=np.float32)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        _, h, w = self.prob.shape
        self.identity = (h, w) == self.image_size
        self._y = _axis_weights(h, self.image_size[0])
        self._x = _axis_weights(w, self.image_size[1])
        self._table: np.ndarray | None = None

    @property
    def num_channels(self) -> int:
        return self.prob.shape[0]

    def channels(self, index: Sequence[int] | np.ndarray) -> "BilinearField":
        """The field restricted to channels ``index`` (in that order)."""
        return BilinearField(self.prob[np.asarray(index, dtype=np.intp)], self.image_size)

    def grouped(self, groups: Sequence[Sequence[int]]) -> "BilinearField":
        """One channel per group: the sum of the group's channels.

        Summing at low resolution equals summing the upsampled channels, since bilinear
        interpolation is linear (up to float rounding).
        """
        out = np.stack([self.prob[np.asarray(g, dtype=np.intp)].sum(axis=0) for g in groups])
        return BilinearField(out, self.image_size)

    def _pixel_table(self) -> np.ndarray:
        """(h·w, C) float32, channel-last copy for fast per-pixel gathers."""
        if self._table is None:
            c = self.num_channels
            self._table = np.ascontiguousarray(self.prob.reshape(c, -1).T)
        return self._table

    def values(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """(K, C) float32 upsampled probabilities at the K pixels (ys, xs)."""
        ys = np.asarray(ys, dtype=np.intp)
        xs = np.asarray(xs, dtype=np.intp)
        table = self._pixel_table()
        w = self.prob.shape[2]
        out = np.empty((len(ys), self.num_channels), np.float32)
        for s in range(0, len(ys), _CHUNK):
            y, x = ys[s : s + _CHUNK], xs[s : s + _CHUNK]
            if self.identity:
                out[s : s + _CHUNK] = table[y * w + x]
                continue
            y0, y1, wy = (a[y] for a in self._y)
            x0, x1, wx = (a[x] for a in self._x)
            uy, vy = (1.0 - wy)[:, None], wy[:, None]
            r0 = table[y0 * w + x0] * uy + table[y1 * w + x0] * vy
            r1 = table[y0 * w + x1] * uy + table[y1 * w + x1] * vy
            out[s : s + _CHUNK] = r0 * (1.0 - wx)[:, None] + r1 * wx[:, None]
        return out

    def rows(self, start: int, stop: int) -> np.ndarray:
        """(C, stop - start, W) float32: rows ``start:stop`` of the upsampled probabilities."""
        if self.identity:
            return self.prob[:, start:stop]
        y0, y1, wy = (a[start:stop] for a in self._y)
        x0, x1, wx = self._x
        r = self.prob[:, y0, :] * (1.0 - wy)[None, :, None] + self.prob[:, y1, :] * wy[None, :, None]
        return r[:, :, x0] * (1.0 - wx)[None, None, :] + r[:, :, x1] * wx[None, None, :]

    def argmax(self, need: np.ndarray | None = None) -> np.ndarray:
        """(H, W) uint8 channel index of the maximum (first one on ties), like ``argmax(axis=0)``.

        need: optional (H, W) bool; pixels outside it may hold any channel index (they are
        skipped when that saves work).

        Exact: equal to ``resize_bilinear(prob, (H, W)).argmax(axis=0)``. Each output pixel
        lies in the low-resolution cell of its 4 interpolation corners. In a cell whose
        corners share their argmax class, every pixel has that class (a convex combination
        keeps the order, and float32 rounding is monotone). In the other cells only the
        `_CANDIDATES` channels with the largest corner maxima are interpolated; a pixel whose
        best candidate does not beat every other channel's corner maximum (a bound on its
        interpolated value) is recomputed over all channels.
        """
        if self.num_channels > 255:
            raise ValueError(f"BilinearField.argmax: {self.num_channels} channels do not fit uint8")
        low = _first_argmax(self.prob)
        if self.identity:
            return low
        h, w = low.shape
        below = np.minimum(np.arange(h) + 1, h - 1)
        right = np.minimum(np.arange(w) + 1, w - 1)
        mixed = (low != low[below]) | (low != low[:, right]) | (low != low[below][:, right])
        if self.num_channels > 1:
            # Interpolation is monotone but rounds: a channel below the maximum by float32
            # rounding can tie it after interpolation, and argmax then takes the lower index. Such
            # cells are recomputed exactly. A channel equal to the maximum at a corner cannot flip
            # (the first argmax already has the lower index, and rounding keeps the order), so
            # exact ties (an IMP canvas's zeros) stay on the shortcut.
            top = self.prob.max(axis=0)
            gap = top[None] - self.prob
            close = ((gap > 0) & (gap <= 1e-5 * np.abs(top)[None])).any(axis=0)
            mixed |= close | close[below] | close[:, right] | close[below][:, right]
        labels = np.ascontiguousarray(np.take(np.take(low, self._y[0], axis=0), self._x[0], axis=1))
        y_start, y_count = _runs(self._y[0], h)
        x_start, x_count = _runs(self._x[0], w)
        if need is not None and y_count.all() and x_count.all():
            mixed &= _block_any(_block_any(need, y_start, y_count, axis=0), x_start, x_count, axis=1)
        ci, cj = np.nonzero(mixed)
        if len(ci) == 0:
            return labels
        # the output pixels of the mixed cells, (P,) each
        row_cell, ys = _ragged_ranges(y_start[ci], y_count[ci])
        row, xs = _ragged_ranges(x_start[cj[row_cell]], x_count[cj[row_cell]])
        cell, ys = row_cell[row], ys[row]
        if need is not None:
            keep = need[ys, xs]
            cell, ys, xs = cell[keep], ys[keep], xs[keep]
        # corner values of each mixed cell, (4, n, C): (i, j), (i+1, j), (i, j+1), (i+1, j+1)
        table = self._pixel_table()
        corners = table[
            np.stack([ci * w + cj, below[ci] * w + cj, ci * w + right[cj], below[ci] * w + right[cj]])
        ]
        c = self.num_channels
        if c > _CANDIDATES:
            top = corners.max(axis=0)
            order = np.argpartition(-top, _CANDIDATES, axis=1)
            cand = np.sort(order[:, :_CANDIDATES], axis=1)
            bound = np.take_along_axis(top, order[:, _CANDIDATES : _CANDIDATES + 1], axis=1)[:, 0]
            corners = np.take_along_axis(corners, cand[None], axis=2)
        else:
            cand = np.broadcast_to(np.arange(c), (len(ci), c))
            bound = np.full(len(ci), -np.finfo(np.float32).max, np.float32)
        # interpolate the candidates, laid out (corner, candidate, pixel) for long inner loops
        pc = np.take(corners.transpose(0, 2, 1), cell, axis=2)
        wy, wx = self._y[2][ys], self._x[2][xs]
        uy, ux = 1.0 - wy, 1.0 - wx
        v = (pc[0] * uy + pc[1] * wy) * ux + (pc[2] * uy + pc[3] * wy) * wx
        best, k = v[0], np.zeros(len(cell), np.intp)
        for j in range(1, v.shape[0]):
            better = v[j] > best
            best = np.where(better, v[j], best)
            k[better] = j
        flat = labels.reshape(-1)
        lin = ys * self.image_size[1] + xs
        flat[lin] = cand[cell, k]
        margin = bound[cell]
        unsure = ~(best > margin + 1e-5 * np.abs(margin))
        if unsure.any():
            flat[lin[unsure]] = self.values(ys[unsure], xs[unsure]).argmax(axis=1)
        return labels

    def void(self) -> np.ndarray | None:
        """(H, W) bool: pixels whose upsampled probabilities are all zero, or None when there are none.

        All-zero probabilities are how a void (unlabelled) input pixel is stored, e.g. 255 in
        an imported label PNG (`segfusion.inference.import_predictions`); a network's softmax
        is never all zero. A pixel is void when every low-resolution pixel that enters its
        interpolation with a positive weight is void (the interpolated mass is then 0).
        """
        mass = np.abs(self.prob).sum(axis=0)
        if float(mass.min(initial=1.0)) > 0.0:
            return None
        if self.identity:
            return mass == 0
        from segfusion.resize import resize_bilinear

        return resize_bilinear(mass[None], self.image_size)[0] == 0

    def argmax_and_max(self) -> tuple[np.ndarray, np.ndarray]:
        """(H, W) uint8 argmax and (H, W) float32 maximum, computed in exact row blocks."""
        height, width = self.image_size
        arg = np.empty((height, width), np.uint8)
        top = np.empty((height, width), np.float32)
        for r in range(0, height, _ROW_BLOCK):
            block = self.rows(r, min(r + _ROW_BLOCK, height))
            arg[r : r + _ROW_BLOCK] = _first_argmax(block)
            top[r : r + _ROW_BLOCK] = block.max(axis=0)
        return arg, top


def _runs(index: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and length (n,) of the run of each value 0..n-1 in the sorted ``index``."""
    start = np.searchsorted(index, np.arange(n), side="left")
    stop = np.searchsorted(index, np.arange(n), side="right")
    return start, stop - start


def _ragged_ranges(start: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated ranges ``start[k] .. start[k] + count[k]``: (owner k, value), each (sum(count),)."""
    owner = np.repeat(np.arange(len(count)), count)
    first = np.cumsum(count) - count
    return owner, start[owner] + np.arange(int(count.sum())) - first[owner]


def _block_any(mask: np.ndarray, start: np.ndarray, count: np.ndarray, axis: int) -> np.ndarray:
    """Logical OR of ``mask`` over consecutive runs (``start``, ``count``, all >= 1) along ``axis``.

    Covers the whole axis (runs are contiguous and complete). When the inner runs share one
    length s (an integer stride), they are ORed as s strided slices, which is much faster
    than `np.logical_or.reduceat`.
    """
    n = len(count)
    inner = count[1:-1]
    if n < 3 or not (inner == inner[0]).all():
        return np.logical_or.reduceat(mask, start, axis=axis)
    s = int(inner[0])
    m = np.moveaxis(mask, axis, 0)
    first = m[: count[0]].any(axis=0)[None]
    last = m[start[-1] :].any(axis=0)[None]
    mid = m[start[1] : start[-1] : s].copy()
    for k in range(1, s):
        mid |= m[start[1] + k : start[-1] : s]
    return np.moveaxis(np.concatenate([first, mid, last]), 0, axis)


def _first_argmax(prob: np.ndarray) -> np.ndarray:
    """(h, w) uint8 argmax over axis 0 of (C, h, w), first index on ties, one pass per channel."""
    best = prob[0].copy()
    arg = np.zeros(best.shape, np.uint8)
    for c in range(1, prob.shape[0]):
        better = prob[c] > best
        np.copyto(best, prob[c], where=better)
        arg[better] = c
    return arg


# --------------------------------------------------------------------------- output


@dataclass
class SegmentCanvas:
    """The segment-id map under construction and its segments' info.

    ids:  (H, W) int32, 0 = not yet assigned (void if it stays so).
    info: {id: (class_index, is_thing, iscrowd, score)} as `Panoptic.from_segment_map` takes.
    Ids are handed out 1, 2, ... in creation order; `to_panoptic` renumbers the ids still
    present to 1..K in that order.
    """

    image_size: tuple[int, int]
    ids: np.ndarray = field(init=False)
    info: dict[int, tuple[int, bool, bool, float]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.ids = np.zeros(self.image_size, np.int32)

    def new_segment(self, class_index: int, is_thing: bool, score: float = 1.0) -> int:
        sid = len(self.info) + 1
        self.info[sid] = (int(class_index), bool(is_thing), False, float(score))
        return sid

    def paint_classes(
        self, labels: np.ndarray, allowed: np.ndarray, is_thing: np.ndarray, min_area: float = 0.0
    ) -> np.ndarray:
        """One segment per class of ``labels``, painted on unassigned pixels.

        labels:   (H, W) uint8 class index, 255 = leave as is. Must be 255 wherever a
                  segment is already painted (callers mask with ``ids == 0``).
        allowed:  (C,) bool, classes that may form segments (others stay void).
        is_thing: (C,) bool, the segments' is_thing flag.
        min_area: a class with fewer pixels than this stays void.
        Returns the (C,) int64 pixel count of each class in ``labels``.
        """
        num = len(allowed)
        areas = np.bincount(labels.reshape(-1), minlength=256)
        lut = np.zeros(256, np.int32)
        for c in np.flatnonzero(allowed & (areas[:num] > 0) & (areas[:num] >= min_area)).tolist():
            lut[c] = self.new_segment(c, bool(is_thing[c]))
        self.ids += np.take(lut, labels)
        return areas[:num]

    def to_panoptic(self) -> Panoptic:
        """The `Panoptic` with ids renumbered 1..K (segments that lost all pixels dropped)."""
        n = len(self.info)
        present = np.bincount(self.ids.reshape(-1), minlength=n + 1)[1:] > 0
        if present.all():
            return Panoptic.from_segment_map(self.ids, self.info)
        lut = np.zeros(n + 1, np.int32)
        kept = np.flatnonzero(present) + 1
        lut[kept] = np.arange(1, len(kept) + 1, dtype=np.int32)
        info = {int(lut[k]): self.info[int(k)] for k in kept}
        return Panoptic.from_segment_map(lut[self.ids], info)
