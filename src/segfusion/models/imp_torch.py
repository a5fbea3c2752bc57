"""Vectorised torch backend of Instance Mask Projection (device-agnostic; used on CUDA).

The rule (cell spans, ties, gradient) is the one documented in `segfusion.models.imp`.
No Python loop over instances or cells: every instance covers a contiguous canvas rectangle
(its "patch"), and the canvas columns (rows) covered by one mask column (row) form a
contiguous range, so the projection is separable. (1) For every (instance, canvas column)
and every mask row, the maximum over the mask columns covering that canvas column; (2) for
every patch pixel, the maximum of (1) over the mask rows covering its canvas row. Both range
maxima are O(1) lookups in sparse tables (log2 M levels) that carry the winning cell's id.
(3) All patches are reduced into the canvas with one ``scatter_reduce(..., "amax")``. A
custom autograd Function routes gradients with one ``index_add_``. Work is
O(N M^2 log M + sum of patch areas), independent of the number of (cell, pixel) pairs.

On the CPU the compiled kernel (`imp_cpu`) is several times faster; this backend is the
one for GPUs (one launch per tensor op, no per-cell threads to schedule).
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor

__all__ = ["project_torch"]


def _log2_floor(length: Tensor, max_len: int) -> tuple[Tensor, Tensor]:
    """floor(log2(length)) and 2**floor(log2(length)) for lengths in 1..max_len (exact tables)."""
    logs = [max(v.bit_length() - 1, 0) for v in range(max_len + 1)]
    table = torch.tensor([logs, [1 << e for e in logs]], device=length.device)
    return table[0, length], table[1, length]


_INT32_LIMIT = 2**31 - 1  # patch-level indices use int32 below this (tests lower it to cover int64)
_SCRATCH = threading.local()


def _scratch(numel: int, like: Tensor) -> Tensor:
    """An uninitialised (numel,) tensor like ``like``; on CPU reused between calls (per thread).

    The backward's canvas-sized owner map is only ever read where it was just reset, so its
    stale contents do not matter; reusing it avoids paying the page faults of a fresh 10 MB
    allocation on every call (several ms on virtual machines). CUDA has a caching allocator.
    """
    if like.device.type != "cpu":
        return like.new_empty(numel)
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.dtype != like.dtype or buf.numel() < numel:
        buf = like.new_empty(numel)
        _SCRATCH.buf = buf
    return buf[:numel]


def _pick(take_right: Tensor, left: Tensor, right: Tensor) -> Tensor:
    """``where(take_right, right, left)`` for integer tensors, by arithmetic.

    (torch.where costs ~10x an elementwise max on CPU; this costs ~3 cheap int32 ops.)
    """
    return left + take_right.to(left.dtype) * (right - left)


def _sparse_table(
    values: Tensor, args: Tensor | None, k: int, levels: int | None = None
) -> tuple[Tensor, Tensor | None]:
    """Range-maximum sparse table over K positions, optionally carrying arg-max ids.

    values, args: (R, K * F) contiguous; row r holds K positions of F features each (a query
    returns all F features of one position). Level t holds at position p the maximum over
    positions [p, p + 2**t) and the id (from ``args``) of the element attaining it; exact
    ties go to the higher position, so a query returns the *last* maximal element. Only
    positions p <= K - 2**t are valid (the rest is never queried and left uninitialised).
    Returns (L, R, K * F) values and ids (None without ``args``), L = ``levels`` (default
    floor(log2 K) + 1, enough for any range; fewer suffice for shorter queried ranges).
    """
    f = values.shape[1] // k
    levels = k.bit_length() if levels is None else levels
    tv = values.new_empty((levels, *values.shape))
    tv[0] = values
    ta = None
    if args is not None:
        ta = args.new_empty((levels, *args.shape))
        ta[0] = args
    for t in range(1, levels):  # log2(M) levels (5 for M = 28), not a loop over cells
        h, valid = (1 << (t - 1)) * f, (k - (1 << t) + 1) * f
        left, right = tv[t - 1, :, :valid], tv[t - 1, :, h : h + valid]
        torch.maximum(left, right, out=tv[t, :, :valid])
        if ta is not None:
            ta[t, :, :valid] = _pick(right >= left, ta[t - 1, :, :valid], ta[t - 1, :, h : h + valid])
    return tv, ta


def _covering_cells(
    start: Tensor, stop: Tensor, slot_instance: Tensor, pos: Tensor, size: int
) -> tuple[Tensor, Tensor]:
    """First and last cell (inclusive) covering canvas index ``pos`` of instance ``slot_instance``.

    start, stop: (N, K) monotone cell spans from `cell_spans`. Cells covering x are those with
    start <= x < stop, a contiguous, non-empty range for x inside the instance's span.
    """
    n, k = start.shape
    offset = torch.arange(n, device=start.device)[:, None] * (size + 1)
    query = pos + slot_instance * (size + 1)
    first = torch.searchsorted((stop + offset).reshape(-1), query, right=True) - slot_instance * k
    last = torch.searchsorted((start + offset).reshape(-1), query, right=True) - slot_instance * k - 1
    return first, last


def _segments(first: Tensor, length: Tensor, step: int, total: int, dtype: torch.dtype) -> Tensor:
    """Concatenate arithmetic runs: run r is first[r], first[r] + step, ... (length[r] values).

    One fill and one in-place cumsum over the ``total`` output elements (no repeat_interleave).
    """
    keep = length > 0
    first, length = first[keep], length[keep]
    out = torch.full((total,), step, dtype=dtype, device=first.device)
    if total == 0:
        return out
    jump = first.clone()
    jump[1:] -= first[:-1] + step * (length[:-1] - 1)
    out[torch.cumsum(length, 0) - length] = jump.to(dtype)
    return out.cumsum_(0)


class _Projection(torch.autograd.Function):
    """values (N*Mh*Mw,) -> canvas (C*H*W,); see `instance_mask_projection` for the rule.

    Forward, per axis, with the per-instance canvas spans of the cells:
    1. x: for every canvas column slot (instance n, column x) and mask row i, the maximum
       over the mask columns j covering x (sparse-table range max over j, rows of Mh values);
    2. y: for every patch pixel (n, y, x), the maximum over the mask rows i covering y of
       step 1's result (sparse-table range max over i); both steps carry the flat id of the
       winning cell, ties going to the last cell in (i, j) order;
    3. the patches of all instances are reduced into the canvas with scatter_reduce "amax".
    Backward sends each canvas pixel's gradient to its one winning cell (ties across
    instances: the instance with the highest index), with one index_add.
    Patch-sized index arithmetic is int32 when every index fits (4x faster than int64 on CPU).
    """

    @staticmethod
    def forward(ctx, values, labels, x_start, x_stop, y_start, y_stop, shape, num_classes, canvas_hw):  # type: ignore[override]
        n, mh, mw = shape
        height, width = canvas_hw
        device = values.device
        canvas = values.new_zeros(num_classes * height * width)
        ctx.num_values = values.numel()
        ctx.empty = True
        x0, x1 = x_start[:, 0], x_stop[:, -1]  # (N,) canvas span of every instance
        y0, y1 = y_start[:, 0], y_stop[:, -1]
        widths, heights = (x1 - x0).clamp(min=0), (y1 - y0).clamp(min=0)
        nonempty = (widths > 0) & (heights > 0)
        widths, heights = widths * nonempty, heights * nonempty
        total = int((widths * heights).sum())
        if total == 0:
            return canvas
        ids = torch.arange(n, device=device)

        # Step 1: column slots c = (instance, x), vectors over mask rows i.
        num_cols = int(widths.sum())
        col_inst = torch.repeat_interleave(ids, widths, output_size=num_cols)
        col_first = torch.cumsum(widths, 0) - widths  # first column slot of every instance
        col_x = x0[col_inst] + torch.arange(num_cols, device=device) - col_first[col_inst]
        ja, jb = _covering_cells(x_start, x_stop, col_inst, col_x, width)
        levels_x, levels_y = mw.bit_length(), mh.bit_length()
        big = max(canvas.numel(), levels_y * num_cols * mh, levels_x * n * mh * mw) >= _INT32_LIMIT
        idx_dtype = torch.int64 if big else torch.int32
        # Sparse table over mask columns j; row n holds, per position j, the Mh values of column j.
        grad = ctx.needs_input_grad[0]
        v = values.detach().view(n, mh, mw).transpose(1, 2).reshape(n, mw * mh)
        cell_ids = None
        if grad:
            cell_ids = torch.arange(n * mh * mw, device=device, dtype=idx_dtype).view(n, mh, mw)
            cell_ids = cell_ids.transpose(1, 2).reshape(n, mw * mh)
        t, width_t = _log2_floor(jb - ja + 1, mw)
        levels = int(t.max()) + 1
        tv, ta = _sparse_table(v, cell_ids, mw, levels)  # (L, N, Mw * Mh)
        row1 = (t * n + col_inst) * mw + ja
        row2 = row1 + (jb - ja + 1 - width_t)
        tv = tv.view(levels * n * mw, mh)
        v1, v2 = tv.index_select(0, row1), tv.index_select(0, row2)  # (Tc, Mh)
        colmax = torch.maximum(v1, v2)
        colarg = None
        if ta is not None:
            ta = ta.view(levels * n * mw, mh)
            colarg = _pick(v2 >= v1, ta.index_select(0, row1), ta.index_select(0, row2))

        # Step 2: row slots r = (instance, y); patch pixel (r, c) = max over covering mask rows.
        num_rows = int(heights.sum())
        row_inst = torch.repeat_interleave(ids, heights, output_size=num_rows)
        row_first = torch.cumsum(heights, 0) - heights
        row_y = y0[row_inst] + torch.arange(num_rows, device=device) - row_first[row_inst]
        ia, ib = _covering_cells(y_start, y_stop, row_inst, row_y, height)
        t, width_t = _log2_floor(ib - ia + 1, mh)
        sv, sa = _sparse_table(colmax, colarg, mh, int(t.max()) + 1)  # (L, Tc, Mh)
        seg_len = widths[row_inst]
        idx1 = _segments((t * num_cols + col_first[row_inst]) * mh + ia, seg_len, mh, total, idx_dtype)
        idx2 = _segments(ib - ia + 1 - width_t, seg_len, 0, total, idx_dtype).add_(idx1)
        target = _segments(
            (labels[row_inst] * height + row_y) * width + x0[row_inst], seg_len, 1, total, torch.int64
        )
        sv = sv.view(-1)
        patch = sv.index_select(0, idx1)
        p2 = sv.index_select(0, idx2)
        take2 = p2 >= patch if grad else None  # ties: the later window holds the last cell
        patch = torch.maximum(patch, p2, out=p2)

        # Step 3: across instances. include_self=False semantics without its slow scalar
        # scatter: reset the touched pixels to -inf, then reduce including them (not needed
        # when no value is negative, the usual case of probabilities times scores).
        if bool(values.min() < 0):
            canvas.index_fill_(0, target, float("-inf"))
        canvas.scatter_reduce_(0, target, patch, reduce="amax")
        if grad:
            assert sa is not None
            ctx.empty = False
            # Exact ties between instances are only possible where same-class spans overlap.
            same = (labels[:, None] == labels[None, :]) & nonempty[:, None] & nonempty[None, :]
            overlap = (torch.maximum(x0[:, None], x0[None, :]) < torch.minimum(x1[:, None], x1[None, :])) & (
                torch.maximum(y0[:, None], y0[None, :]) < torch.minimum(y1[:, None], y1[None, :])
            )
            ctx.overlap = bool((same & overlap).triu(1).any())
            ctx.save_for_backward(canvas, target, patch, take2, idx1, idx2, sa.view(-1))
        return canvas

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_canvas):  # type: ignore[override]
        none = (None,) * 8
        if ctx.empty:
            return (grad_canvas.new_zeros(ctx.num_values), *none)
        canvas, target, patch, take2, idx1, idx2, cell_table = ctx.saved_tensors
        # Patch pixel e wins if it holds its canvas pixel's maximum; among equal maxima of
        # different instances, the highest e (= last instance) is the one winner.
        winner = canvas.index_select(0, target) == patch  # (P,) bool
        if ctx.overlap:
            key = torch.arange(1, len(target) + 1, device=target.device, dtype=idx1.dtype).mul_(winner)
            owner = _scratch(canvas.numel(), key).index_fill_(0, target, 0)
            owner.scatter_reduce_(0, target, key, reduce="amax")
            # key 0 (lost) never owns: at a NaN canvas pixel every entry lost, and the owner 0
            # must not make them all winners (which would send its gradient to every cell)
            winner = (owner.index_select(0, target) == key) & winner
        select = (idx2 - idx1).mul_(take2).add_(idx1)  # the query window holding the maximum
        cells = cell_table.index_select(0, select)
        grad = grad_canvas.reshape(-1).index_select(0, target).mul_(winner)
        return (grad.new_zeros(ctx.num_values).index_add_(0, cells, grad), *none)


def project_torch(
    values: Tensor,
    labels: Tensor,
    x_start: Tensor,
    x_stop: Tensor,
    y_start: Tensor,
    y_stop: Tensor,
    num_classes: int,
    canvas_hw: tuple[int, int],
) -> Tensor:
    """Flat (C*H*W,) canvas of the projected ``values`` (N*Mh*Mw,), on their device."""
    n, mh, mw = len(labels), y_start.shape[1], x_start.shape[1]
    return _Projection.apply(
        values, labels, x_start, x_stop, y_start, y_stop, (n, mh, mw), num_classes, canvas_hw
    )
