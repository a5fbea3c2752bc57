"""Compiled CPU kernel of Instance Mask Projection (the ``"compiled"`` backend of `imp`).

Algorithm 1 of the IMP paper (Fu, Berg & Berg, ICCV 2019, Sec. 3.1) is a loop over mask
cells, each doing an atomicMax over its canvas rectangle. On a GPU that loop is one thread
per cell; on a CPU the fastest form is a compiled loop (numba, nopython, no GIL) over each
instance's canvas rectangle: per pixel the maximum of the few cells covering it, then one
compare-and-store into the canvas. For 100 Cityscapes detections that is ~200k pixels and
no temporaries, where the vectorised torch backend (`imp_torch`) needs ~100 tensor ops and
several canvas-sized gathers for the same result.

The rule (cell spans, ties, gradient) is the one documented in `segfusion.models.imp`; the
spans come in precomputed by `imp.cell_spans`, so both backends round identically.

The forward lists every painted pixel with its winning cell (see `_paint`); the backward
is one ``index_add_`` of the canvas gradient at those pixels into the cells. Nothing
canvas-sized is cleared or gathered besides the zero canvas itself.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from torch import Tensor

try:  # numba is a dependency; without it `imp` falls back to the torch backend.
    import numba
except ImportError:  # pragma: no cover - exercised only on installs without numba
    numba = None

__all__ = ["available", "supports", "project_compiled"]

_DTYPES = (torch.float32, torch.float64)
_SCRATCH = threading.local()
_INT32_ENTRIES = 2**31  # owner ids are int32 below this (tests lower it to cover int64)


def available() -> bool:
    """True when numba imports (the compiled kernel can run)."""
    return numba is not None


def supports(values: Tensor) -> bool:
    """True when the compiled kernel handles these projected values (CPU, float32/float64)."""
    return available() and values.device.type == "cpu" and values.dtype in _DTYPES


def _jit(function):
    """numba-compile ``function`` lazily on first call (cached on disk); as-is without numba."""
    return function if numba is None else numba.njit(cache=True, nogil=True)(function)


@_jit
def _covering_cells(start, stop, lo, hi, first, last):
    """For canvas indices t in [lo, hi): the first and last cell k with start[k] <= t < stop[k].

    start, stop: (K,) monotone cell spans of one instance along one axis; first, last:
    canvas-length outputs, written on [lo, hi) only. Cells later in the loop overwrite, so
    ``first`` is filled backwards and ``last`` forwards.
    """
    k = start.shape[0]
    for c in range(k - 1, -1, -1):
        for t in range(start[c], stop[c]):
            first[t] = c
    for c in range(k):
        for t in range(start[c], stop[c]):
            last[t] = c


@_jit
def _paint(values, labels, x_start, x_stop, y_start, y_stop, height, width, canvas, owner, pixels, cells):
    """Algorithm 1 on flat arrays; returns how many (pixel, cell) winner pairs it listed.

    values: (N * Mh * Mw,) cell values mask * score.   labels: (N,) int64.
    x_start, x_stop: (N, Mw) int64 canvas column span of every mask column, clipped;
    y_start, y_stop: (N, Mh) likewise for rows.       canvas: (C * H * W,) zeros, written.
    owner: (>= C * H * W,) int32/int64 scratch, any contents on entry.
    pixels, cells: (>= sum of instance rectangle areas,) int64 outputs: the first
    ``count`` entries are every painted pixel's flat canvas index and winning flat cell.

    Per instance and rectangle pixel, the maximum over the cells covering the pixel (rows
    i in [ia, ib], columns j in [ja, jb]) is taken first, scanning (i, j) in order, then
    compared with the canvas: the same winner as painting cell by cell in (n, i, j) order
    with ">=", at one canvas access per pixel and instance. Values must be NaN-free (NaN
    makes these comparisons order-dependent; `imp` sends such inputs to the torch backend,
    whose maximum propagates NaN, and a NaN-aware test here costs ~40 % of the kernel). An
    instance's cells tile its rectangle without gaps (cell k + 1 starts at floor(a) <=
    ceil(a), where cell k stops), so the rectangles are exactly the painted pixels.

    Winners are appended to (pixels, cells) as they paint; ``owner[p]`` is the entry of
    pixel p's current winner, trusted only if ``owner[p] < count and pixels[owner[p]] == p``
    (the sparse-set trick), so the scratch never needs clearing. The first paint of a pixel
    always wins (even a negative value over the zero canvas); a later winner voids the
    entry it replaces, and the voided entries are compacted away at the end.
    """
    n = labels.shape[0]
    mh = y_start.shape[1]
    mw = x_start.shape[1]
    plane = height * width
    col_first = np.empty(width, np.int64)
    col_last = np.empty(width, np.int64)
    row_first = np.empty(height, np.int64)
    row_last = np.empty(height, np.int64)
    count = 0
    voided = False
    for q in range(n):
        x0, x1 = x_start[q, 0], x_stop[q, mw - 1]
        y0, y1 = y_start[q, 0], y_stop[q, mh - 1]
        if x0 >= x1 or y0 >= y1:
            continue
        _covering_cells(x_start[q], x_stop[q], x0, x1, col_first, col_last)
        _covering_cells(y_start[q], y_stop[q], y0, y1, row_first, row_last)
        base = labels[q] * plane
        first_cell = q * mh * mw
        for y in range(y0, y1):
            ia, ib = row_first[y], row_last[y]
            row = base + y * width
            for x in range(x0, x1):
                ja, jb = col_first[x], col_last[x]
                arg = first_cell + ia * mw + ja
                best = values[arg]
                if ib > ia or jb > ja:  # several cells cover the pixel (boxes < M canvas pixels)
                    for i in range(ia, ib + 1):
                        for j in range(ja, jb + 1):
                            cell = first_cell + i * mw + j
                            v = values[cell]
                            if not v < best:
                                best = v
                                arg = cell
                p = row + x
                e = owner[p]
                painted = 0 <= e < count and pixels[e] == p
                if painted:
                    if best < canvas[p]:
                        continue
                    cells[e] = -1
                    voided = True
                canvas[p] = best
                owner[p] = count
                pixels[count] = p
                cells[count] = arg
                count += 1
    if not voided:
        return count
    kept = 0
    for e in range(count):
        if cells[e] >= 0:
            pixels[kept] = pixels[e]
            cells[kept] = cells[e]
            kept += 1
    return kept


def _owner_scratch(numel: int, num_entries: int) -> np.ndarray:
    """A reused (numel,) buffer per thread for entry ids; `_paint` validates what it reads.

    int32 (half the memory traffic) unless an entry id could overflow it.
    """
    dtype = np.int32 if num_entries < _INT32_ENTRIES else np.int64
    buf = getattr(_SCRATCH, "owner", None)
    if buf is None or buf.dtype != dtype or buf.size < numel:
        buf = np.empty(numel, dtype=dtype)
        _SCRATCH.owner = buf
    return buf[:numel]


class _CompiledProjection(torch.autograd.Function):
    """values (N*Mh*Mw,) -> canvas (C*H*W,) by the compiled kernel; gradient to the owners."""

    @staticmethod
    def forward(ctx, values, labels, x_start, x_stop, y_start, y_stop, num_classes, canvas_hw):  # type: ignore[override]
        height, width = canvas_hw
        canvas = values.new_zeros(num_classes * height * width)
        ctx.num_values = values.numel()
        rect_w = (x_stop[:, -1] - x_start[:, 0]).clamp(min=0)
        rect_h = (y_stop[:, -1] - y_start[:, 0]).clamp(min=0)
        capacity = int((rect_w * rect_h).sum()) if len(labels) else 0
        pixels = torch.empty(capacity, dtype=torch.int64, device="cpu")  # not the default device: numpy views
        cells = torch.empty(capacity, dtype=torch.int64, device="cpu")
        if capacity:
            count = _paint(
                values.detach().contiguous().numpy(),
                labels.contiguous().numpy(),
                x_start.contiguous().numpy(),
                x_stop.contiguous().numpy(),
                y_start.contiguous().numpy(),
                y_stop.contiguous().numpy(),
                height,
                width,
                canvas.numpy(),
                _owner_scratch(canvas.numel(), capacity),
                pixels.numpy(),
                cells.numpy(),
            )
            pixels, cells = pixels[:count], cells[:count]
        ctx.save_for_backward(pixels, cells)
        return canvas

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_canvas):  # type: ignore[override]
        pixels, cells = ctx.saved_tensors
        grad = grad_canvas.reshape(-1).index_select(0, pixels)
        grad_values = grad.new_zeros(ctx.num_values).index_add_(0, cells, grad)
        return (grad_values, *(None,) * 7)


def project_compiled(
    values: Tensor,
    labels: Tensor,
    x_start: Tensor,
    x_stop: Tensor,
    y_start: Tensor,
    y_stop: Tensor,
    num_classes: int,
    canvas_hw: tuple[int, int],
) -> Tensor:
    """Flat (C*H*W,) canvas of the projected ``values`` (N*Mh*Mw,); see the module docstring.

    Callers check `supports(values)` first; spans are int64 (N, Mw) / (N, Mh) on the CPU.
    """
    return _CompiledProjection.apply(values, labels, x_start, x_stop, y_start, y_stop, num_classes, canvas_hw)
