"""Instance Mask Projection (IMP), Fu, Berg & Berg, ICCV 2019, Sec. 3.1 and Algorithm 1.

IMP paints box-relative instance masks (Mask R-CNN's M x M mask probabilities) into a
per-class canvas over the whole image; the canvas is then a feature of the semantic head
(Fig. 3c, Fig. 4) or, alone, a semantic prediction (Mask R-CNN-IMP, Fig. 3a).

Reading of Algorithm 1 implemented here (the paper gives the idea, not the rounding):

* Every mask cell is an independent "thread". Cell (i, j) of an instance with box
  (x0, y0, x1, y1) (image pixels) and M_h x M_w mask covers the image region
  x in [x0 + j * w / M_w, x0 + (j + 1) * w / M_w) with w = x1 - x0, and likewise in y.
* In canvas coordinates (image coordinates divided by ``stride``; canvas pixel k covers
  image [k * stride, (k + 1) * stride)) the cell covers canvas columns
  [floor(lo / stride), ceil(hi / stride)), so every cell covers at least one canvas pixel
  even when the box is smaller than one canvas pixel (zero-width boxes cover one column,
  too). The range is then clipped to the canvas; cells entirely outside cover nothing.
* The cell's value is ``mask[i, j] * score`` (the mask scaled by the detection score),
  written into channel ``label``. Each canvas pixel keeps the maximum over all cells of all
  instances that cover it (the paper's atomicMax); pixels no cell covers stay 0.
* The operator is differentiable w.r.t. ``masks`` and ``scores``: a canvas pixel's
  gradient flows to the one cell that holds the maximum there. Exact ties (e.g. saturated
  masks) are broken deterministically towards the cell that comes *last* in Algorithm 1's
  order (instance index, then mask row i, then column j), i.e. the cell that would win an
  atomicMax implemented as ">=" in that order; the total gradient is never duplicated or
  split. Boxes, labels and geometry get no gradient.

Backends (same rule, same spans from `cell_spans`, equal values and gradients; tested
against a loop reference in ``tests/models/test_imp.py``):

* ``"compiled"`` (`imp_cpu`): Algorithm 1 itself, compiled with numba; CPU, float32/64.
* ``"torch"`` (`imp_torch`): separable sparse-table range maxima and one scatter_reduce,
  no Python loop over instances or cells; any device and dtype (the CUDA path).
* ``"auto"`` (default): compiled where it applies, torch elsewhere.

Values containing NaN (a diverged mask) always take the torch backend: its maximum
propagates NaN, so the divergence shows in the canvas instead of being painted over.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from segfusion.models import imp_cpu
from segfusion.models.imp_torch import project_torch

__all__ = ["instance_mask_projection", "instance_mask_projection_batched", "cell_spans", "BACKENDS"]

BACKENDS = ("auto", "compiled", "torch")


def _check_inputs(
    labels: Tensor,
    scores: Tensor,
    masks: Tensor,
    boxes: Tensor,
    num_classes: int,
    canvas_hw: Sequence[int],
    stride: float,
) -> tuple[int, int]:
    if len(canvas_hw) != 2 or int(canvas_hw[0]) < 0 or int(canvas_hw[1]) < 0:
        raise ValueError(f"IMP: canvas_hw must be (H, W) with H, W >= 0, got {tuple(canvas_hw)}")
    if not float(stride) > 0:
        raise ValueError(f"IMP: stride must be > 0, got {stride}")
    if int(num_classes) < 1:
        raise ValueError(f"IMP: num_classes must be >= 1, got {num_classes}")
    if masks.ndim != 3:
        raise ValueError(f"IMP: masks must be (N, M, M), got shape {tuple(masks.shape)}")
    n = masks.shape[0]
    if masks.shape[1] < 1 or masks.shape[2] < 1:
        raise ValueError(f"IMP: masks must have at least one cell, got shape {tuple(masks.shape)}")
    if labels.shape != (n,):
        raise ValueError(f"IMP: labels must be (N={n},), got shape {tuple(labels.shape)}")
    if scores.shape != (n,):
        raise ValueError(f"IMP: scores must be (N={n},), got shape {tuple(scores.shape)}")
    if boxes.shape != (n, 4):
        raise ValueError(f"IMP: boxes must be (N={n}, 4), got shape {tuple(boxes.shape)}")
    if scores.device != masks.device or boxes.device != masks.device:
        raise ValueError(
            f"IMP: masks ({masks.device}), scores ({scores.device}) and boxes ({boxes.device}) must share a device"
        )
    if not masks.is_floating_point() or not scores.is_floating_point():
        raise ValueError(
            f"IMP: masks and scores must be floating point, got {masks.dtype} and {scores.dtype}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"IMP: labels must be an integer tensor, got {labels.dtype}")
    if n > 0:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"IMP: labels must lie in 0..{num_classes - 1}, got values in {lo}..{hi}")
        if not bool(torch.isfinite(boxes).all()):
            raise ValueError("IMP: boxes contain non-finite coordinates")
        if bool((boxes[:, 2] < boxes[:, 0]).any() | (boxes[:, 3] < boxes[:, 1]).any()):
            raise ValueError("IMP: boxes must satisfy x1 >= x0 and y1 >= y0 (x0, y0, x1, y1 format)")
    return int(canvas_hw[0]), int(canvas_hw[1])


def cell_spans(
    lo_edge: Tensor, hi_edge: Tensor, cells: int, stride: float, size: int
) -> tuple[Tensor, Tensor]:
    """Canvas index ranges covered by the cells of one box axis.

    lo_edge, hi_edge: (N,) box edges in image pixels (x0, x1 or y0, y1).
    Returns ``start, stop`` of shape (N, cells), int64: cell k covers canvas indices
    [start, stop) (empty when start == stop), i.e. [floor(a / stride), ceil(b / stride))
    with a = lo + k * (hi - lo) / cells, b = lo + (k + 1) * (hi - lo) / cells, at least one
    index wide, clipped to [0, size]. Computed in float64 so the rounding is reproducible.
    """
    lo = lo_edge.to(torch.float64)
    step = (hi_edge.to(torch.float64) - lo) / cells
    k = torch.arange(cells + 1, device=lo.device, dtype=torch.float64)
    edges = (lo[:, None] + k[None, :] * step[:, None]) / float(stride)  # (N, cells + 1)
    first = torch.floor(edges[:, :-1])
    last = torch.maximum(torch.ceil(edges[:, 1:]), first + 1)
    start = first.clamp(0, size).to(torch.int64)
    stop = last.clamp(0, size).to(torch.int64)
    return start, stop


def instance_mask_projection(
    labels: Tensor,
    scores: Tensor,
    masks: Tensor,
    boxes: Tensor,
    num_classes: int,
    canvas_hw: Sequence[int],
    stride: float,
    backend: str = "auto",
) -> Tensor:
    """Project the instance masks of one image onto a per-class canvas (IMP, Sec. 3.1).

    labels:    (N,) int64 class index of every instance, in 0..num_classes-1.
    scores:    (N,) float detection score.
    masks:     (N, M, M) float box-relative mask probabilities (M = 28 in Mask R-CNN);
               (N, M_h, M_w) also works.
    boxes:     (N, 4) float (x0, y0, x1, y1) in image pixels; may extend beyond the image.
    num_classes: C, the canvas depth.
    canvas_hw: (H, W) of the canvas.
    stride:    image pixels per canvas pixel (4 for the 1/4 canvas of Fig. 4).
    backend:   "auto", "compiled" or "torch" (module docstring); "compiled" on inputs it
               cannot take (not CPU float32/float64, or numba missing) is an error; NaN
               values take the torch backend either way.

    Returns (C, H, W) in the dtype of ``masks * scores``: per pixel and class, the maximum
    of ``mask * score`` over the cells that cover it, 0 where none does. See the module
    docstring for the exact cell-to-pixel rule and the gradient. N = 0 gives zeros.
    """
    if backend not in BACKENDS:
        raise ValueError(f"IMP: backend must be one of {BACKENDS}, got {backend!r}")
    height, width = _check_inputs(labels, scores, masks, boxes, num_classes, canvas_hw, stride)
    n, mh, mw = masks.shape
    values = (masks * scores[:, None, None]).reshape(-1)  # (N*Mh*Mw,) the projected cell values
    x_start, x_stop = cell_spans(boxes[:, 0], boxes[:, 2], mw, stride, width)
    y_start, y_stop = cell_spans(boxes[:, 1], boxes[:, 3], mh, stride, height)
    labels = labels.to(device=values.device, dtype=torch.int64)
    compiled = imp_cpu.supports(values)
    if backend == "compiled" and not compiled:
        raise ValueError(
            f"IMP: the compiled backend needs numba and CPU float32/float64 values, got "
            f"{values.dtype} on {values.device} (numba {'present' if imp_cpu.available() else 'missing'})"
        )
    # NaN values (a diverged mask) go to the torch backend, whose maximum propagates NaN, so
    # that the divergence shows in the canvas whatever the painting order (imp_cpu._paint).
    if compiled and backend != "torch" and not bool(torch.isnan(values).any()):
        project = imp_cpu.project_compiled
    else:
        project = project_torch
    canvas = project(values, labels, x_start, x_stop, y_start, y_stop, num_classes, (height, width))
    return canvas.view(num_classes, height, width)


def instance_mask_projection_batched(
    labels: Sequence[Tensor],
    scores: Sequence[Tensor],
    masks: Sequence[Tensor],
    boxes: Sequence[Tensor],
    num_classes: int,
    canvas_hw: Sequence[int],
    stride: float,
    backend: str = "auto",
) -> Tensor:
    """IMP over a batch: lists of per-image inputs (as in `instance_mask_projection`).

    Returns (B, C, H, W); all images share ``canvas_hw`` and ``stride`` (the padded batch
    canvas of the semantic head). B = 0 is an error (the dtype and device are unknown).
    """
    b = len(labels)
    if not (len(scores) == len(masks) == len(boxes) == b):
        raise ValueError(
            f"IMP batched: list lengths differ: labels {b}, scores {len(scores)}, masks {len(masks)}, boxes {len(boxes)}"
        )
    if b == 0:
        raise ValueError("IMP batched: empty batch")
    return torch.stack(
        [
            instance_mask_projection(
                labels[k], scores[k], masks[k], boxes[k], num_classes, canvas_hw, stride, backend
            )
            for k in range(b)
        ]
    )
