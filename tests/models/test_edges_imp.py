"""Edge cases of `segfusion.models.imp`: input validation, backend dispatch, the batched wrapper.

Expected canvases are derived by hand in the comments (rule of the module docstring: cell k of
an axis covers canvas indices [floor(a / stride), ceil(b / stride)), at least one wide, clipped).
"""

from __future__ import annotations

import re

import pytest
import torch

from segfusion.models import imp as imp_module
from segfusion.models import imp_cpu
from segfusion.models.imp import cell_spans, instance_mask_projection, instance_mask_projection_batched


def one_instance(**kw):
    """A valid single instance: 2 x 2 mask, box (0, 0, 4, 4); override any argument by keyword."""
    args = dict(
        labels=torch.tensor([0]),
        scores=torch.tensor([1.0]),
        masks=torch.full((1, 2, 2), 0.5),
        boxes=torch.tensor([[0.0, 0.0, 4.0, 4.0]]),
        num_classes=2,
        canvas_hw=(4, 4),
        stride=1.0,
        backend="torch",
    )
    args.update(kw)
    return args


def raises_exactly(message):
    """pytest.raises for a ValueError whose whole message is ``message``."""
    return pytest.raises(ValueError, match="^" + re.escape(message) + "$")


# --- _check_inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "canvas_hw, shown",
    [((-1, 4), "(-1, 4)"), ((4, -1), "(4, -1)"), ((4, 4, 4), "(4, 4, 4)"), ((4,), "(4,)")],
)
def test_bad_canvas_shape_is_rejected_with_its_value(canvas_hw, shown):
    with raises_exactly(f"IMP: canvas_hw must be (H, W) with H, W >= 0, got {shown}"):
        instance_mask_projection(**one_instance(canvas_hw=canvas_hw))


@pytest.mark.parametrize("backend", ["compiled", "torch"])
@pytest.mark.parametrize("canvas_hw", [(0, 4), (4, 0), (0, 0)])
def test_empty_canvas_is_allowed(canvas_hw, backend):
    # H = 0 or W = 0 is a valid (empty) canvas: nothing to paint, shape (C, H, W).
    out = instance_mask_projection(**one_instance(canvas_hw=canvas_hw, backend=backend))
    assert out.shape == (2, *canvas_hw)


def test_num_classes_message():
    with raises_exactly("IMP: num_classes must be >= 1, got 0"):
        instance_mask_projection(**one_instance(num_classes=0))


@pytest.mark.parametrize("shape", [(1, 0, 2), (1, 2, 0), (1, 0, 0)])
def test_mask_without_cells_is_rejected(shape):
    with raises_exactly(f"IMP: masks must have at least one cell, got shape {shape}"):
        instance_mask_projection(**one_instance(masks=torch.ones(shape)))


def test_labels_shape_message():
    with raises_exactly("IMP: labels must be (N=1,), got shape (2,)"):
        instance_mask_projection(**one_instance(labels=torch.tensor([0, 1])))


@pytest.mark.parametrize("which", ["scores", "boxes"])
def test_inputs_on_another_device_are_rejected(which):
    # The meta device stands in for a second device (no CUDA needed): one tensor elsewhere is an error.
    args = one_instance()
    args[which] = args[which].to("meta")
    with raises_exactly(
        f"IMP: masks (cpu), scores ({args['scores'].device}) and boxes ({args['boxes'].device}) must share a device"
    ):
        instance_mask_projection(**args)


@pytest.mark.parametrize(
    "masks, scores",
    [
        (torch.ones(1, 2, 2, dtype=torch.int64), torch.tensor([1.0])),  # only the masks are integers
        (torch.ones(1, 2, 2), torch.tensor([1])),  # only the scores are integers
    ],
)
def test_integer_masks_or_scores_are_rejected(masks, scores):
    with raises_exactly(f"IMP: masks and scores must be floating point, got {masks.dtype} and {scores.dtype}"):
        instance_mask_projection(**one_instance(masks=masks, scores=scores))


@pytest.mark.parametrize(
    "labels",
    [torch.tensor([0.0]), torch.tensor([True]), torch.tensor([0j])],
    ids=["float", "bool", "complex"],
)
def test_non_integer_labels_are_rejected(labels):
    with raises_exactly(f"IMP: labels must be an integer tensor, got {labels.dtype}"):
        instance_mask_projection(**one_instance(labels=labels))


@pytest.mark.parametrize("labels, shown", [([2], "2..2"), ([3], "3..3"), ([-1], "-1..-1"), ([0, 5], "0..5")])
def test_label_range_is_checked_for_a_single_instance_too(labels, shown):
    # num_classes = 2: labels must lie in 0..1. (torch backend: an unchecked label would
    # index outside the canvas and fail with a RuntimeError, not this ValueError.)
    n = len(labels)
    args = one_instance(
        labels=torch.tensor(labels),
        scores=torch.ones(n),
        masks=torch.ones(n, 2, 2),
        boxes=torch.tensor([[0.0, 0, 4, 4]] * n),
    )
    with raises_exactly(f"IMP: labels must lie in 0..1, got values in {shown}"):
        instance_mask_projection(**args)


def test_top_label_is_accepted():
    # Label C - 1 is valid: it paints channel C - 1 (value 0.5 over the whole 4 x 4 box).
    out = instance_mask_projection(**one_instance(labels=torch.tensor([1])))
    assert torch.equal(out[1], torch.full((4, 4), 0.5)) and torch.equal(out[0], torch.zeros(4, 4))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_box_message(bad):
    with raises_exactly("IMP: boxes contain non-finite coordinates"):
        instance_mask_projection(**one_instance(boxes=torch.tensor([[0.0, 0.0, bad, 4.0]])))


@pytest.mark.parametrize("box", [[4.0, 0, 0, 4], [0.0, 4, 4, 0]])
def test_inverted_box_message(box):
    with raises_exactly("IMP: boxes must satisfy x1 >= x0 and y1 >= y0 (x0, y0, x1, y1 format)"):
        instance_mask_projection(**one_instance(boxes=torch.tensor([box])))


# --- labels of other integer dtypes ---------------------------------------------------------------


@pytest.mark.parametrize("backend", ["compiled", "torch"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32])
def test_small_integer_labels_paint_the_right_channel_on_a_tall_canvas(dtype, backend):
    # A 1 x 1 mask (value 0.5) on box (0, 299, 1, 300), stride 1, canvas 300 x 1: it covers
    # canvas pixel (299, 0) of channel 1. Its flat canvas index is 1 * 300 + 299 = 599, which
    # does not fit 8 bits: the labels must be widened before any index arithmetic.
    out = instance_mask_projection(
        torch.tensor([1], dtype=dtype),
        torch.tensor([1.0]),
        torch.full((1, 1, 1), 0.5),
        torch.tensor([[0.0, 299.0, 1.0, 300.0]]),
        2,
        (300, 1),
        1.0,
        backend=backend,
    )
    expected = torch.zeros(2, 300, 1)
    expected[1, 299, 0] = 0.5
    assert torch.equal(out, expected)


# --- backend dispatch ---------------------------------------------------------------------------


@pytest.fixture
def calls(monkeypatch):
    """Records which backend function each projection used (both still compute the result)."""
    used = []
    compiled, vectorised = imp_cpu.project_compiled, imp_module.project_torch

    def spy(name, fn):
        def wrapper(*args):
            used.append(name)
            return fn(*args)

        return wrapper

    monkeypatch.setattr(imp_cpu, "project_compiled", spy("compiled", compiled))
    monkeypatch.setattr(imp_module, "project_torch", spy("torch", vectorised))
    return used


@pytest.mark.parametrize(
    "backend, expected", [("auto", "compiled"), ("compiled", "compiled"), ("torch", "torch")]
)
def test_backend_argument_picks_the_backend(calls, backend, expected):
    out = instance_mask_projection(**one_instance(backend=backend))
    assert calls == [expected]
    assert torch.equal(out[0], torch.full((4, 4), 0.5))  # 2 x 2 mask of 0.5 over the whole box


@pytest.mark.parametrize("backend", ["auto", "compiled", "torch"])
def test_nan_values_always_take_the_torch_backend(calls, backend):
    masks = torch.full((1, 2, 2), 0.5)
    masks[0, 1, 1] = float("nan")
    out = instance_mask_projection(**one_instance(masks=masks, backend=backend))
    assert calls == ["torch"]
    # cell (1, 1) covers canvas rows/columns [2, 4): NaN there, 0.5 elsewhere in the box.
    assert torch.isnan(out[0, 2:, 2:]).all() and torch.equal(out[0, :2], torch.full((2, 4), 0.5))


def test_compiled_backend_refusal_names_the_dtype_device_and_numba():
    args = one_instance(masks=torch.ones(1, 2, 2, dtype=torch.bfloat16), backend="compiled")
    args["scores"] = args["scores"].bfloat16()
    with raises_exactly(
        "IMP: the compiled backend needs numba and CPU float32/float64 values, got torch.bfloat16 on cpu "
        "(numba present)"
    ):
        instance_mask_projection(**args)


def test_result_does_not_depend_on_the_default_device():
    # Every tensor the torch backend and `cell_spans` create follows the inputs' device, not
    # torch's default device (a "meta" default would make any stray factory call fail).
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 1])
    scores = torch.tensor([0.9, 0.8, 0.7])
    masks = torch.rand(3, 3, 2, generator=gen)
    boxes = torch.tensor([[0.0, 0.0, 9.0, 7.0], [3.0, 2.0, 11.0, 12.0], [-4.0, 5.0, 6.0, 20.0]])
    args = (labels, scores, masks, boxes, 2, (5, 6), 2.0)

    def run():
        m = masks.clone().requires_grad_(True)
        out = instance_mask_projection(labels, scores, m, boxes, *args[4:], backend="torch")
        out.backward(torch.ones_like(out))
        return out.detach(), m.grad

    want = run()
    with torch.device("meta"):
        assert torch.empty(1).device.type == "meta"  # the context is active
        got = run()
        spans = cell_spans(boxes[:, 0], boxes[:, 2], 2, 2.0, 6)
    assert got[0].device.type == "cpu" and spans[0].device.type == "cpu"
    torch.testing.assert_close(got, want, rtol=0, atol=0)


# --- cell_spans -----------------------------------------------------------------------------------


def test_cell_spans_by_hand():
    # Box x in [1, 7), 3 cells of width 2 at stride 2: edges 1, 3, 5, 7 -> /2 = 0.5, 1.5, 2.5, 3.5;
    # cell k covers [floor(e_k), ceil(e_k+1)) = [0, 2), [1, 3), [2, 4); the canvas is 3 wide -> [2, 3).
    # Box x in [10, 10) (zero width): every cell is [5, 6) before clipping -> [3, 3) (outside).
    start, stop = cell_spans(torch.tensor([1.0, 10.0]), torch.tensor([7.0, 10.0]), 3, 2.0, 3)
    assert start.dtype == stop.dtype == torch.int64
    assert start.tolist() == [[0, 1, 2], [3, 3, 3]]
    assert stop.tolist() == [[2, 3, 3], [3, 3, 3]]


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.int32, torch.int64])
def test_cell_spans_of_other_edge_dtypes(dtype):
    # Edges 0 and 6, 4 cells of width 1.5, stride 1: cell edges 0, 1.5, 3, 4.5, 6 ->
    # [0, 2), [1, 3), [3, 5), [4, 6) — computed in float64 whatever the input dtype.
    start, stop = cell_spans(torch.tensor([0], dtype=dtype), torch.tensor([6], dtype=dtype), 4, 1.0, 10)
    assert start.tolist() == [[0, 1, 3, 4]] and stop.tolist() == [[2, 3, 5, 6]]


def test_cell_spans_of_boolean_edges():
    # Validation lets boolean boxes through (they are finite and ordered); as 0/1 edges:
    # [0, 1) in 2 cells at stride 0.5 -> cell edges 0, 0.5, 1 -> /0.5 = 0, 1, 2 -> [0, 1), [1, 2).
    start, stop = cell_spans(torch.tensor([False]), torch.tensor([True]), 2, 0.5, 4)
    assert start.tolist() == [[0, 1]] and stop.tolist() == [[1, 2]]


# --- batched wrapper ------------------------------------------------------------------------------


def test_batched_default_backend_and_single_image():
    # A batch of one with the default backend: the single image's canvas, with a batch axis.
    a = one_instance()
    out = instance_mask_projection_batched([a["labels"]], [a["scores"]], [a["masks"]], [a["boxes"]], 2, (4, 4), 1.0)
    expected = torch.zeros(1, 2, 4, 4)
    expected[0, 0] = 0.5
    assert torch.equal(out, expected)


def test_batched_empty_batch_message():
    with raises_exactly("IMP batched: empty batch"):
        instance_mask_projection_batched([], [], [], [], 2, (4, 4), 1.0)


def test_batched_list_length_message():
    a = one_instance()
    with raises_exactly("IMP batched: list lengths differ: labels 1, scores 2, masks 1, boxes 1"):
        instance_mask_projection_batched(
            [a["labels"]], [a["scores"]] * 2, [a["masks"]], [a["boxes"]], 2, (4, 4), 1.0
        )


def test_batched_passes_the_backend_on(calls):
    a = one_instance()
    lists = ([a["labels"]] * 2, [a["scores"]] * 2, [a["masks"]] * 2, [a["boxes"]] * 2)
    instance_mask_projection_batched(*lists, 2, (4, 4), 1.0, backend="torch")
    assert calls == ["torch", "torch"]
    calls.clear()
    instance_mask_projection_batched(*lists, 2, (4, 4), 1.0, backend="compiled")
    assert calls == ["compiled", "compiled"]
