"""Tests of the Instance Mask Projection operator against a slow, loop-based reference."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from segfusion.models import imp_cpu
from segfusion.models.imp import BACKENDS, instance_mask_projection, instance_mask_projection_batched


@pytest.fixture(params=["compiled", "torch"])
def imp(request):
    """`instance_mask_projection` pinned to one backend; every test runs on both."""
    return functools.partial(instance_mask_projection, backend=request.param)


def reference_imp(labels, scores, masks, boxes, num_classes, canvas_hw, stride):
    """Algorithm 1 written out: one Python iteration per instance and mask cell.

    Each cell paints ``mask * score`` into its canvas rectangle where it is at least the
    current value (>=, so of exact ties the last cell in (instance, row, column) order
    wins); pixels nobody paints stay 0. The result is a gather of the winning cell's value,
    so the gradient of every pixel goes to its one winner.
    """
    height, width = canvas_hw
    n, mh, mw = masks.shape
    values = (masks * scores[:, None, None]).reshape(-1)
    best = torch.zeros(num_classes, height, width, dtype=torch.float64)
    winner = torch.full((num_classes, height, width), -1, dtype=torch.int64)

    def span(lo, hi, k, cells, size):
        step = (hi - lo) / cells
        first = math.floor((lo + k * step) / stride)
        last = max(math.ceil((lo + (k + 1) * step) / stride), first + 1)
        return min(max(first, 0), size), min(max(last, 0), size)

    with torch.no_grad():
        for q in range(n):
            x0, y0, x1, y1 = (float(v) for v in boxes[q].to(torch.float64))
            c = int(labels[q])
            for i in range(mh):
                r0, r1 = span(y0, y1, i, mh, height)
                for j in range(mw):
                    c0, c1 = span(x0, x1, j, mw, width)
                    if r0 == r1 or c0 == c1:
                        continue
                    idx = (q * mh + i) * mw + j
                    v = float(values[idx])
                    b = best[c, r0:r1, c0:c1]
                    w = winner[c, r0:r1, c0:c1]
                    take = (w < 0) | (v >= b)
                    b[take] = v
                    w[take] = idx
    if n == 0:  # nothing painted; keep the (empty) graph so backward still runs
        return torch.zeros(num_classes, height, width, dtype=values.dtype) + values.sum()
    flat = values[winner.clamp(min=0).reshape(-1)].reshape(winner.shape)
    return torch.where(winner >= 0, flat, torch.zeros((), dtype=values.dtype))


def random_instances(
    gen, n, num_classes, image_hw, mask_size=7, small_fraction=0.3, outside=True, dtype=torch.float64
):
    """Random detections: some boxes partly outside the image, some smaller than a canvas cell."""
    h, w = image_hw
    cx = torch.rand(n, generator=gen, dtype=torch.float64) * w
    cy = torch.rand(n, generator=gen, dtype=torch.float64) * h
    bw = torch.rand(n, generator=gen, dtype=torch.float64) * w * 0.6 + 0.5
    bh = torch.rand(n, generator=gen, dtype=torch.float64) * h * 0.6 + 0.5
    small = torch.rand(n, generator=gen) < small_fraction
    bw = torch.where(small, torch.rand(n, generator=gen, dtype=torch.float64) * 3.0, bw)
    bh = torch.where(small, torch.rand(n, generator=gen, dtype=torch.float64) * 3.0, bh)
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
    if outside and n:
        boxes[0] += torch.tensor([-w / 2, -h / 2, -w / 2, -h / 2], dtype=torch.float64)  # partly outside
    labels = torch.randint(0, num_classes, (n,), generator=gen)
    scores = torch.rand(n, generator=gen, dtype=torch.float64).to(dtype)
    masks = torch.rand(n, mask_size, mask_size, generator=gen, dtype=torch.float64).to(dtype)
    return labels, scores, masks, boxes.to(torch.float32)


def grads(fn, labels, scores, masks, boxes, *args, weight=None):
    scores = scores.clone().requires_grad_(True)
    masks = masks.clone().requires_grad_(True)
    out = fn(labels, scores, masks, boxes, *args)
    if weight is None:
        weight = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)
    (out * weight).sum().backward()
    return out.detach(), scores.grad, masks.grad


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("stride", [4.0, 3.0, 1.0])
def test_matches_reference_values_and_gradients(seed, stride, imp):
    gen = torch.Generator().manual_seed(seed)
    num_classes, image_hw = 3, (37, 53)
    canvas_hw = (math.ceil(image_hw[0] / stride), math.ceil(image_hw[1] / stride))
    labels, scores, masks, boxes = random_instances(gen, 6, num_classes, image_hw)
    args = (num_classes, canvas_hw, stride)
    fast = grads(imp, labels, scores, masks, boxes, *args)
    ref = grads(reference_imp, labels, scores, masks, boxes, *args)
    assert fast[0].shape == (num_classes, *canvas_hw)
    assert (fast[0] > 0).sum() > 20  # something was painted
    with torch.no_grad():  # the inference path skips the arg-max bookkeeping
        torch.testing.assert_close(imp(labels, scores, masks, boxes, *args), fast[0])
    for a, b in zip(fast, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_same_class_overlap_keeps_maximum(imp):
    gen = torch.Generator().manual_seed(7)
    labels = torch.zeros(4, dtype=torch.int64)  # all one class, heavily overlapping
    boxes = torch.tensor(
        [[2.0, 3.0, 30.0, 25.0], [5.0, 1.0, 28.0, 22.0], [0.0, 0.0, 31.0, 31.0], [10, 10, 12.5, 11]]
    )
    scores = torch.rand(4, generator=gen, dtype=torch.float64)
    masks = torch.rand(4, 5, 5, generator=gen, dtype=torch.float64)
    args = (1, (8, 8), 4.0)
    fast = grads(imp, labels, scores, masks, boxes, *args)
    ref = grads(reference_imp, labels, scores, masks, boxes, *args)
    for a, b in zip(fast, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    # Every instance wins somewhere or not, but the canvas is never below any single projection.
    for q in range(4):
        single = imp(labels[q : q + 1], scores[q : q + 1], masks[q : q + 1], boxes[q : q + 1], *args)
        assert torch.all(fast[0] >= single)


def test_exact_ties_go_to_the_last_cell(imp):
    # Saturated masks (all 1.0) and equal scores: every pixel of an overlap is a tie, within
    # and across instances; each pixel's gradient must reach exactly one cell, the last one.
    labels = torch.tensor([1, 1, 0])
    scores = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    masks = torch.ones(3, 6, 6, dtype=torch.float64)
    masks[2, :3] = 0.5
    boxes = torch.tensor([[0.0, 0.0, 20.0, 20.0], [10.0, 6.0, 30.0, 31.0], [3.0, 3.0, 5.0, 5.0]])
    args = (2, (8, 8), 4.0)
    fast = grads(imp, labels, scores, masks, boxes, *args)
    ref = grads(reference_imp, labels, scores, masks, boxes, *args)
    for a, b in zip(fast, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    weight = torch.linspace(0.5, 1.5, fast[0].numel(), dtype=torch.float64).reshape(fast[0].shape)
    painted = fast[0] > 0
    torch.testing.assert_close(fast[2].sum(), weight[painted].sum())  # gradient mass is preserved


def test_negative_values_match_reference(imp):
    # Not probabilities (e.g. logits): the canvas must hold the true maximum, even if < 0.
    gen = torch.Generator().manual_seed(4)
    labels, scores, masks, boxes = random_instances(gen, 5, 2, (24, 24), mask_size=5)
    masks = masks * 2 - 1
    args = (2, (6, 6), 4.0)
    fast = grads(imp, labels, scores, masks, boxes, *args)
    ref = grads(reference_imp, labels, scores, masks, boxes, *args)
    assert (fast[0] < 0).any()
    for a, b in zip(fast, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_int64_index_path(monkeypatch, imp):
    # Canvases with >= 2**31 entries switch index arithmetic to int64; force that path here.
    import segfusion.models.imp_torch as imp_torch

    monkeypatch.setattr(imp_torch, "_INT32_LIMIT", 0)
    monkeypatch.setattr(imp_cpu, "_INT32_ENTRIES", 0)
    gen = torch.Generator().manual_seed(8)
    labels, scores, masks, boxes = random_instances(gen, 6, 2, (30, 30), mask_size=5)
    labels[:] = 1  # same class: exercises the cross-instance tie resolution as well
    args = (2, (8, 8), 4.0)
    fast = grads(imp, labels, scores, masks, boxes, *args)
    ref = grads(reference_imp, labels, scores, masks, boxes, *args)
    for a, b in zip(fast, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_repeated_calls_with_different_canvases(imp):
    # The backward reuses a scratch buffer between calls; stale contents must not leak.
    for seed, canvas_hw in [(20, (9, 7)), (21, (5, 12)), (22, (9, 7))]:
        gen = torch.Generator().manual_seed(seed)
        labels, scores, masks, boxes = random_instances(
            gen, 7, 2, (4 * canvas_hw[0], 4 * canvas_hw[1]), mask_size=4
        )
        labels[:3] = 0
        boxes[1] = boxes[0]  # a duplicate detection of the same class
        masks[1] = masks[0]
        scores[1] = scores[0]
        args = (2, canvas_hw, 4.0)
        fast = grads(imp, labels, scores, masks, boxes, *args)
        ref = grads(reference_imp, labels, scores, masks, boxes, *args)
        for a, b in zip(fast, ref, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        assert fast[2][0].abs().sum() == 0  # the duplicate (instance 1, later) takes every tie


def test_float32_and_gradcheck(imp):
    gen = torch.Generator().manual_seed(3)
    labels, scores, masks, boxes = random_instances(gen, 5, 2, (20, 24), mask_size=4, dtype=torch.float32)
    args = (2, (5, 6), 4.0)
    out = imp(labels, scores, masks, boxes, *args)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference_imp(labels, scores, masks, boxes, *args))
    s = scores.double().requires_grad_(True)
    m = masks.double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s_, m_: imp(labels, s_, m_, boxes, *args), (s, m))


def test_box_smaller_than_canvas_cell_covers_one_pixel(imp):
    # A 1x1-pixel box inside canvas pixel (2, 1) at stride 4: all 9 cells land on that pixel.
    masks = torch.arange(9, dtype=torch.float32).reshape(1, 3, 3) / 10
    out = imp(
        torch.tensor([1]), torch.tensor([0.5]), masks, torch.tensor([[5.0, 9.0, 6.0, 10.0]]), 2, (4, 4), 4.0
    )
    expected = torch.zeros(2, 4, 4)
    expected[1, 2, 1] = 0.8 * 0.5
    torch.testing.assert_close(out, expected)
    # Zero-size box still covers one pixel.
    out = imp(
        torch.tensor([0]), torch.tensor([1.0]), masks, torch.tensor([[8.0, 8.0, 8.0, 8.0]]), 2, (4, 4), 4.0
    )
    assert out[0, 2, 2] == pytest.approx(0.8) and out.count_nonzero() == 1


def test_hand_picture(imp):
    # 2x2 mask on box (0, 0, 8, 4), stride 2 -> canvas 2 x 4; cell (i, j) covers x in [4j, 4j+4), y in [2i, 2i+2).
    mask = torch.tensor([[[0.1, 0.2], [0.3, 0.4]]])
    out = imp(
        torch.tensor([0]), torch.tensor([1.0]), mask, torch.tensor([[0.0, 0.0, 8.0, 4.0]]), 1, (3, 5), 2.0
    )
    expected = torch.tensor(
        [
            [0.1, 0.1, 0.2, 0.2, 0.0],
            [0.3, 0.3, 0.4, 0.4, 0.0],
            [0.0, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    torch.testing.assert_close(out[0], expected)
    # A box straddling canvas pixels: cells cover the union of touched pixels, max wins on shared ones.
    out = imp(
        torch.tensor([0]), torch.tensor([0.5]), mask, torch.tensor([[1.0, 1.0, 5.0, 3.0]]), 1, (3, 5), 2.0
    )
    expected = 0.5 * torch.tensor(
        [
            [0.1, 0.2, 0.2, 0.0, 0.0],  # cell row 0 covers y in [1, 2) -> canvas row 0
            [0.3, 0.4, 0.4, 0.0, 0.0],  # cell row 1 covers y in [2, 3) -> canvas row 1
            [0.0, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    torch.testing.assert_close(out[0], expected)


def test_gradient_goes_to_argmax_cell(imp):
    # Two same-class instances over one pixel: only the higher one gets gradient.
    masks = torch.tensor([[[0.9]], [[0.6]]], requires_grad=True)
    scores = torch.tensor([0.5, 1.0], requires_grad=True)
    out = imp(
        torch.tensor([0, 0]), scores, masks, torch.tensor([[0.0, 0, 1, 1], [0.0, 0, 1, 1]]), 1, (1, 1), 1.0
    )
    assert out.item() == pytest.approx(0.6)
    out.sum().backward()
    torch.testing.assert_close(masks.grad, torch.tensor([[[0.0]], [[1.0]]]))
    torch.testing.assert_close(scores.grad, torch.tensor([0.0, 0.6]))


def test_empty_and_outside(imp):
    args = (4, (6, 7), 4.0)
    out = imp(
        torch.zeros(0, dtype=torch.int64), torch.zeros(0), torch.zeros(0, 28, 28), torch.zeros(0, 4), *args
    )
    assert out.shape == (4, 6, 7) and out.abs().sum() == 0
    # A box entirely outside paints nothing but still backpropagates (zero gradient).
    masks = torch.ones(1, 3, 3, requires_grad=True)
    out = imp(torch.tensor([2]), torch.tensor([1.0]), masks, torch.tensor([[-50.0, -50, -10, -10]]), *args)
    assert out.abs().sum() == 0
    out.sum().backward()
    assert masks.grad is not None and masks.grad.abs().sum() == 0


def test_input_validation(imp):
    ok = dict(
        labels=torch.tensor([0]),
        scores=torch.tensor([1.0]),
        masks=torch.ones(1, 2, 2),
        boxes=torch.tensor([[0.0, 0, 4, 4]]),
    )

    def call(**kw):
        a = {**ok, **kw}
        return imp(a["labels"], a["scores"], a["masks"], a["boxes"], 2, (4, 4), 1.0)

    call()
    with pytest.raises(ValueError, match="labels must lie"):
        call(labels=torch.tensor([2]))
    with pytest.raises(ValueError, match="labels must lie"):
        call(labels=torch.tensor([-1]))
    with pytest.raises(ValueError, match="masks must be"):
        call(masks=torch.ones(1, 4))
    with pytest.raises(ValueError, match="scores must be"):
        call(scores=torch.ones(2))
    with pytest.raises(ValueError, match="boxes must be"):
        call(boxes=torch.ones(1, 5))
    with pytest.raises(ValueError, match="x1 >= x0"):
        call(boxes=torch.tensor([[4.0, 0, 0, 4]]))
    with pytest.raises(ValueError, match="stride"):
        imp(ok["labels"], ok["scores"], ok["masks"], ok["boxes"], 2, (4, 4), 0.0)


@pytest.mark.parametrize("backend", ["compiled", "torch"])
def test_batched_wrapper(backend):
    # One backward after all images' forwards: per-call state (e.g. the compiled kernel's
    # reused scratch) must not leak from one image into another's gradient.
    gen = torch.Generator().manual_seed(11)
    per_image = [random_instances(gen, n, 3, (16, 16), mask_size=4) for n in (3, 0, 5, 4)]
    per_image[3][0][:] = 0  # same class as image 0's first instance, over the same pixels
    lists = [list(x) for x in zip(*per_image, strict=True)]
    scores = [s.clone().requires_grad_(True) for s in lists[1]]
    masks = [m.clone().requires_grad_(True) for m in lists[2]]
    out = instance_mask_projection_batched(lists[0], scores, masks, lists[3], 3, (4, 4), 4.0, backend)
    assert out.shape == (4, 3, 4, 4)
    weight = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)
    (out * weight).sum().backward()
    for k, (labels, s, m, boxes) in enumerate(per_image):
        ref = grads(reference_imp, labels, s, m, boxes, 3, (4, 4), 4.0, weight=weight[k])
        torch.testing.assert_close(out[k].detach(), ref[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(scores[k].grad, ref[1], rtol=0, atol=1e-12)
        torch.testing.assert_close(masks[k].grad, ref[2], rtol=0, atol=1e-12)
    assert out[1].abs().sum() == 0 and out[0].abs().sum() > 0
    with pytest.raises(ValueError, match="list lengths"):
        instance_mask_projection_batched(lists[0], lists[1][:2], lists[2], lists[3], 3, (4, 4), 4.0)


def test_backends_agree_on_a_cityscapes_sized_input():
    # The benchmark's setting at a smaller canvas: 60 instances, 28 x 28 masks, float32.
    gen = torch.Generator().manual_seed(12)
    labels, scores, masks, boxes = random_instances(
        gen, 60, 19, (256, 512), mask_size=28, dtype=torch.float32
    )
    weight = torch.rand(19, 64, 128, generator=gen)
    inputs = (labels, scores, masks, boxes, 19, (64, 128), 4.0)
    fast, vectorised = (
        grads(functools.partial(instance_mask_projection, backend=b), *inputs, weight=weight)
        for b in ("compiled", "torch")
    )
    assert (fast[0] > 0).sum() > 1000
    for a, b in zip(fast, vectorised, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_nan_mask_shows_in_the_canvas(imp):
    # A diverged mask must not be hidden by the max, whether it comes before or after a
    # finite value on the same pixel (within one instance and across instances).
    masks = torch.full((2, 2, 2), 0.5)
    masks[0, 0, 0] = float("nan")
    boxes = torch.tensor([[0.0, 0, 8, 8], [0.0, 0, 8, 8]])
    for order in ([0, 1], [1, 0]):
        out = imp(torch.tensor([0, 0]), torch.tensor([1.0, 1.0]), masks[order], boxes[order], 1, (2, 2), 4.0)
        assert torch.isnan(out[0, 0, 0]) and out[0, 1, 1] == 0.5
    tiny = torch.tensor([[[0.9, float("nan")], [0.2, 0.1]]])  # one pixel covered by all four cells
    out = imp(torch.tensor([0]), torch.tensor([1.0]), tiny, torch.tensor([[1.0, 1, 2, 2]]), 1, (2, 2), 4.0)
    assert torch.isnan(out[0, 0, 0])


def one_saturated_box():
    """Arguments of one all-ones 2 x 2 mask filling a 2 x 2 canvas (stride 2): the canvas is all ones."""
    return (
        torch.tensor([0]),
        torch.tensor([1.0]),
        torch.ones(1, 2, 2),
        torch.tensor([[0.0, 0, 4, 4]]),
        1,
        (2, 2),
        2.0,
    )


def test_backend_choice():
    args = one_saturated_box()
    assert BACKENDS == ("auto", "compiled", "torch")
    with pytest.raises(ValueError, match="backend must be one of"):
        instance_mask_projection(*args, backend="numba")
    half = (args[0], args[1].bfloat16(), args[2].bfloat16(), *args[3:])
    with pytest.raises(
        ValueError, match="compiled backend needs numba and CPU float32/float64 values, got torch.bfloat16"
    ):
        instance_mask_projection(*half, backend="compiled")
    # "auto" takes the torch backend where the compiled one does not apply.
    torch.testing.assert_close(instance_mask_projection(*half), torch.ones(1, 2, 2, dtype=torch.bfloat16))
    assert imp_cpu.supports(args[2]) and not imp_cpu.supports(args[2].bfloat16())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(5)
    inst = random_instances(gen, 8, 3, (40, 40))
    cpu = instance_mask_projection(*inst, 3, (10, 10), 4.0)
    gpu = instance_mask_projection(*(t.cuda() for t in inst), 3, (10, 10), 4.0)
    torch.testing.assert_close(gpu.cpu(), cpu)


def test_without_numba_auto_uses_torch_and_compiled_says_why(monkeypatch):
    monkeypatch.setattr(imp_cpu, "numba", None)
    args = one_saturated_box()
    assert not imp_cpu.available() and not imp_cpu.supports(args[2])
    torch.testing.assert_close(instance_mask_projection(*args), torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match=r"\(numba missing\)"):
        instance_mask_projection(*args, backend="compiled")
