"""Edge cases of the vectorised IMP backend (`segfusion.models.imp_torch`) and its helpers."""

from __future__ import annotations

import pytest
import torch

from segfusion.models import imp_torch
from segfusion.models.imp import cell_spans, instance_mask_projection
from tests.models.threads import in_fresh_thread  # noqa: E402

# --- _log2_floor ------------------------------------------------------------------------------------


def test_log2_floor_table():
    lengths = torch.tensor([1, 2, 3, 4, 5, 7, 8, 9, 28])
    logs, powers = imp_torch._log2_floor(lengths, 28)
    # floor(log2 v) by hand: 1 -> 0, 2..3 -> 1, 4..7 -> 2, 8..15 -> 3, 16..31 -> 4.
    assert logs.tolist() == [0, 1, 1, 2, 2, 2, 3, 3, 4]
    assert powers.tolist() == [1, 2, 2, 4, 4, 4, 8, 8, 16]


# --- _scratch -----------------------------------------------------------------------------------------


def test_scratch_is_reused_per_thread_on_cpu():
    ints = torch.zeros(1, dtype=torch.int32)
    floats = torch.zeros(1, dtype=torch.float32)

    def calls():
        a = imp_torch._scratch(10, ints)
        b = imp_torch._scratch(10, ints)  # same size: the same buffer
        c = imp_torch._scratch(4, ints)  # smaller: a view of it
        d = imp_torch._scratch(11, ints)  # larger: a new buffer...
        e = imp_torch._scratch(2, ints)  # ...which is then kept
        f = imp_torch._scratch(2, floats)  # other dtype: a new buffer of that dtype
        return a, b, c, d, e, f

    a, b, c, d, e, f = in_fresh_thread(calls)
    assert [x.numel() for x in (a, b, c, d, e, f)] == [10, 10, 4, 11, 2, 2]
    assert [x.dtype for x in (a, d, f)] == [torch.int32, torch.int32, torch.float32]
    assert a.data_ptr() == b.data_ptr() == c.data_ptr()
    assert d.data_ptr() != a.data_ptr() and e.data_ptr() == d.data_ptr()
    assert f.data_ptr() != d.data_ptr()
    other = in_fresh_thread(lambda: imp_torch._scratch(2, ints))  # another thread, another buffer
    assert other.data_ptr() != e.data_ptr()


def test_scratch_off_the_cpu_is_a_fresh_tensor():
    # Not reused (CUDA has a caching allocator); the meta device stands in for it here.
    like = torch.zeros(1, dtype=torch.int64, device="meta")

    def calls():
        cpu = imp_torch._scratch(3, torch.zeros(1, dtype=torch.int64))
        meta = imp_torch._scratch(5, like)
        again = imp_torch._scratch(3, torch.zeros(1, dtype=torch.int64))
        return cpu, meta, again

    cpu, meta, again = in_fresh_thread(calls)
    assert meta.device.type == "meta" and meta.shape == (5,) and meta.dtype == torch.int64
    assert again.device.type == "cpu" and again.data_ptr() == cpu.data_ptr()  # the CPU buffer stays


# --- _sparse_table ----------------------------------------------------------------------------------


def test_sparse_table_default_levels_and_last_arg_max():
    # K = 5 positions of F = 2 features; row 0 only. Level t, position p holds the maximum over
    # positions [p, p + 2**t) (valid for p <= 5 - 2**t); default L = floor(log2 5) + 1 = 3.
    values = torch.tensor([[3.0, 0.0, 1.0, 5.0, 3.0, 5.0, 2.0, 1.0, 3.0, 0.0]])  # (1, K * F)
    args = torch.arange(10, dtype=torch.int32).view(1, 10) + 100
    tv, ta = imp_torch._sparse_table(values, args, 5)
    assert tv.shape == ta.shape == (3, 1, 10)
    feature = values.view(5, 2)
    ids = args.view(5, 2)
    for t in range(3):
        for p in range(5 - (1 << t) + 1):
            for f in range(2):
                window = feature[p : p + (1 << t), f]
                best = window.max()
                last = max(i for i in range(len(window)) if window[i] == best)  # ties: the last one
                assert tv[t, 0, p * 2 + f] == best
                assert ta[t, 0, p * 2 + f] == ids[p + last, f]
    tv, ta = imp_torch._sparse_table(values, None, 5, levels=2)
    assert tv.shape == (2, 1, 10) and ta is None


# --- _segments ------------------------------------------------------------------------------------


def test_segments_skip_empty_runs():
    # Runs (first, length): (5, 2), (100, 0), (7, 3), (50, 0) with step 1 -> 5 6 | 7 8 9.
    out = imp_torch._segments(torch.tensor([5, 100, 7, 50]), torch.tensor([2, 0, 3, 0]), 1, 5, torch.int32)
    assert out.dtype == torch.int32 and out.tolist() == [5, 6, 7, 8, 9]
    # step 3: (0, 2), (9, 0), (1, 2) -> 0 3 | 1 4.
    out = imp_torch._segments(torch.tensor([0, 9, 1]), torch.tensor([2, 0, 2]), 3, 4, torch.int64)
    assert out.tolist() == [0, 3, 1, 4]
    assert imp_torch._segments(torch.tensor([4]), torch.tensor([0]), 1, 0, torch.int64).tolist() == []


# --- index dtype of the projection ---------------------------------------------------------------


def projection_inputs(n, mh, mw, boxes, num_classes, canvas_hw):
    gen = torch.Generator().manual_seed(n * 100 + mh * 10 + mw)
    masks = torch.rand(n, mh, mw, generator=gen, dtype=torch.float64)
    return (torch.zeros(n, dtype=torch.int64), torch.ones(n, dtype=torch.float64), masks,
            torch.tensor(boxes, dtype=torch.float64), num_classes, canvas_hw, 1.0)  # fmt: skip


def index_dtypes(inputs):
    """(idx1, idx2, cell id table) dtypes saved by the torch backend, and canvas/gradient."""
    labels, scores, masks, boxes, c, canvas_hw, stride = inputs
    masks = masks.clone().requires_grad_(True)
    height, width = canvas_hw
    x0, x1 = cell_spans(boxes[:, 0], boxes[:, 2], masks.shape[2], stride, width)
    y0, y1 = cell_spans(boxes[:, 1], boxes[:, 3], masks.shape[1], stride, height)
    values = (masks * scores[:, None, None]).reshape(-1)
    out = imp_torch.project_torch(values, labels, x0, x1, y0, y1, c, canvas_hw)
    saved = out.grad_fn.saved_tensors  # canvas, target, patch, take2, idx1, idx2, cell table
    out.backward(torch.ones_like(out))
    return [saved[4].dtype, saved[5].dtype, saved[6].dtype], out.detach(), masks.grad


# Three inputs, each dominated by one of the index spaces the int32 decision must cover:
#   canvas entries C * H * W;
#   step-2 table entries levels_y * column slots * Mh (levels = M.bit_length(), slots = sum of widths);
#   step-1 table entries levels_x * N * Mh * Mw.
INDEX_CASES = {
    # 1 x 2 x 2 mask on a 2-pixel-wide box, canvas 1 x 32 x 32: 1024 vs 2*2*2 = 8 vs 2*1*2*2 = 8.
    "canvas": (projection_inputs(1, 2, 2, [[0.0, 0, 2, 2]], 1, (32, 32)), 1024),
    # 8 x 1 mask on a 16-wide box, canvas 1 x 2 x 16: 32 vs 4*16*8 = 512 vs 1*1*8*1 = 8.
    "columns": (projection_inputs(1, 8, 1, [[0.0, 0, 16, 2]], 1, (2, 16)), 512),
    # two 8 x 8 masks on 1-pixel boxes, canvas 1 x 2 x 2: 4 vs 4*2*8 = 64 vs 4*2*8*8 = 512.
    "cells": (projection_inputs(2, 8, 8, [[0.0, 0, 1, 1], [1.0, 1, 2, 2]], 1, (2, 2)), 512),
}


@pytest.mark.parametrize("case", INDEX_CASES)
def test_index_dtype_switches_to_int64_exactly_at_the_limit(case, monkeypatch):
    inputs, size = INDEX_CASES[case]
    want = None
    for limit, dtype in [(size + 1, torch.int32), (size, torch.int64), (2**31 - 1, torch.int32)]:
        monkeypatch.setattr(imp_torch, "_INT32_LIMIT", limit)
        dtypes, out, grad = index_dtypes(inputs)
        assert dtypes == [dtype] * 3, (limit, dtypes)
        if want is None:
            want = out, grad
        torch.testing.assert_close((out, grad), want, rtol=0, atol=0)  # the dtype changes nothing else
    # sanity of the hand-made sizes: the picture is painted
    assert want[0].count_nonzero() > 0


# --- NaN and the gradient ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels, box1",
    [
        ([0, 1], [1.0, 1, 3, 3]),  # other class, overlapping
        ([0, 0], [0.0, 3, 2, 5]),  # same class, same columns, rows apart
        ([0, 0], [2.0, 0, 4, 2]),  # same class, touching columns (x0 of one = x1 of the other)
        ([0, 0], [0.0, 2, 2, 4]),  # same class, touching rows
    ],
)
def test_nan_pixels_send_no_gradient_without_same_class_overlap(labels, box1):
    # Instance 0: a 1 x 1 NaN mask on box (0, 0, 2, 2) (canvas pixels [0, 2)^2, stride 1);
    # instance 1: a 1 x 1 mask 0.5 on box1 (4 pixels). No pixel is covered by both instances
    # of one class, so every pixel has one candidate: a NaN pixel holds no comparable maximum
    # and (as torch.amax) passes no gradient; each of instance 1's 4 pixels passes 1.
    masks = torch.tensor([[[float("nan")]], [[0.5]]], requires_grad=True)
    out = instance_mask_projection(
        torch.tensor(labels), torch.tensor([1.0, 1.0]), masks, torch.tensor([[0.0, 0, 2, 2], box1]), 2, (6, 6), 1.0
    )
    assert torch.isnan(out[0, :2, :2]).all()
    out.backward(torch.ones_like(out))
    assert masks.grad.tolist() == [[[0.0]], [[4.0]]]
