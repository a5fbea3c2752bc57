"""Model size and cost: parameter count and FLOPs of one forward pass (IMP Table 6, Seamless Sec. 5.4).

IMP (Fu et al., ICCV 2019) reports the inference time of every model in its appendix
(Table 6) and states that IMP adds about 1-2 ms per image; Seamless (Porzi et al., CVPR
2019, Sec. 5.4) compares parameters (≈ 51.4 M vs ≈ 78.1 M) and FLOPs (≈ 0.514 vs ≈ 0.864
TFLOP at 1024 × 2048) of a combined model against two independent ones. These helpers give
the same two numbers for our models; the measured time comes from the prediction cache.

Choices:

* **parameters** count every tensor of ``model.parameters()``, frozen ones included (they are
  part of the model that runs at test time), each shared tensor once;
* **FLOPs** are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass
  of one image of the evaluated size in inference mode (``model.predict`` when the model has
  it, which includes the test-time resize, otherwise ``model(x)``). FlopCounterMode counts a
  multiply-add as 2 FLOPs and only knows the dense operators (convolutions, matrix products,
  attention); torchvision's RoIAlign, NMS and element-wise operations are not counted. The
  detector's box and mask heads run on however many detections the input gives, so the
  count depends on the image: pass a real image (``image=``) for a representative figure,
  otherwise a seeded uniform-noise image is used.

torch is imported inside the functions; this module is only used by ``segfusion predict``.
"""

from __future__ import annotations

from typing import Any


def count_parameters(model: Any) -> int:
    """Number of scalar parameters of a ``torch.nn.Module`` (trainable and frozen, shared once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += int(p.numel())
    return total


def forward_flops(model: Any, image_hw: tuple[int, int], image: Any = None, inference: Any = None) -> int:
    """FLOPs of one inference forward pass on a 3 × H × W image (see the module docstring).

    ``image``: an optional (3, H, W) float tensor in [0, 1] (or an (H, W, 3) uint8 array) to
    run instead of noise; its size must be ``image_hw``. ``inference``: the `InferenceSpec`
    a `PanopticModel`'s ``predict`` runs with (default: the spec's defaults). Returns the
    total FLOP count.
    """
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    h, w = (int(v) for v in image_hw)
    if h < 1 or w < 1:
        raise ValueError(f"forward_flops: image size must be positive, got {image_hw}")
    if image is None:
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(3, h, w, generator=gen)
    else:
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"forward_flops: expected an (H, W, 3) image array, got shape {image.shape}")
            x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
        else:
            x = image.float()
        if tuple(x.shape) != (3, h, w):
            raise ValueError(f"forward_flops: image has shape {tuple(x.shape)}, expected (3, {h}, {w})")
    parameters = list(model.parameters()) if hasattr(model, "parameters") else []
    if parameters:
        x = x.to(parameters[0].device)
    was_training = getattr(model, "training", False)
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            if hasattr(model, "predict"):
                from segfusion.specs import InferenceSpec

                model.predict([x], inference or InferenceSpec())
            else:
                model.eval()
                model(x[None])
    finally:
        if hasattr(model, "train"):
            model.train(was_training)
    return int(counter.get_total_flops())


def efficiency_summary(model: Any, image_hw: tuple[int, int], image: Any = None, inference: Any = None) -> dict:
    """``{"parameters", "flops", "flops_image_hw"}`` for the prediction cache's provenance."""
    return {
        "parameters": count_parameters(model),
        "flops": forward_flops(model, image_hw, image=image, inference=inference),
        "flops_image_hw": [int(image_hw[0]), int(image_hw[1])],
    }
