"""A NaN canvas pixel sends no gradient, with or without same-class overlap (imp_torch backward)."""

import torch

from segfusion.models.imp import instance_mask_projection


def _grad_at_nan_pixel(same_class: bool) -> torch.Tensor:
    # Two 1x1-cell instances on the same 2x2 box (stride 1): every pixel is covered by cell 0 of
    # both. Instance 0's mask is NaN, so the canvas is NaN where both paint the same class.
    masks = torch.tensor([[[float("nan")]], [[0.5]]], requires_grad=True)
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0]])
    labels = torch.tensor([1, 1 if same_class else 2])
    canvas = instance_mask_projection(labels, torch.ones(2), masks, boxes, 3, (2, 2), 1.0, backend="torch")
    canvas[1].sum().backward()  # the gradient of class 1's canvas only
    return masks.grad.reshape(-1)


def test_nan_pixel_passes_no_gradient_when_instances_of_one_class_overlap():
    # no winner at a NaN pixel (NaN == NaN is False): neither cell gets its gradient
    assert torch.equal(_grad_at_nan_pixel(same_class=True), torch.zeros(2))


def test_nan_pixel_passes_no_gradient_without_overlap():
    assert torch.equal(_grad_at_nan_pixel(same_class=False), torch.zeros(2))


def test_compiled_backend_buffers_stay_on_the_cpu_under_another_default_device():
    masks = torch.full((1, 2, 2), 0.5)
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    labels, scores = torch.tensor([0]), torch.ones(1)
    with torch.device("meta"):  # a default device other than the CPU; the inputs are CPU tensors
        canvas = instance_mask_projection(labels, scores, masks, boxes, 1, (4, 4), 1.0, backend="compiled")
    assert canvas.device.type == "cpu" and torch.equal(canvas, torch.full((1, 4, 4), 0.5))
