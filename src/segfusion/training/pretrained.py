"""Pretrained weights from a local file (nothing is downloaded).

Accepted files: a torchvision Mask R-CNN state dict (keys ``backbone.*``, ``rpn.*``,
``roi_heads.*``, e.g. ``maskrcnn_resnet50_fpn`` trained on COCO), or a backbone state dict:
a classification network's (torchvision ResNet keys ``conv1.*``, ``layer1.*``, …; ``fc.*`` is
ignored; our ``tiny`` backbone's ``stem.*``, ``layer1.*``, …), or a backbone with FPN (``body.*``
and ``fpn.*``, optionally under ``backbone.``). A ``module.`` prefix (a model saved from
DistributedDataParallel) is stripped. Only tensors whose name and shape match are loaded.

The class-specific predictor layers (box classifier, box regression, mask logits) are
copied row by row through ``class_remap`` ({our class name: label in the checkpoint}),
as the IMP paper does for Cityscapes from COCO: "reusing the weights in the prediction
layer for all classes except Rider" (Sec. 4.3). Background (label 0) is always copied;
unmapped thing classes keep their fresh initialisation.
"""

from __future__ import annotations

import os

import torch

from segfusion.types import ClassInfo

# Predictor parameters whose first dimension is (labels) or (4 * labels).
_PER_CLASS = {
    "roi_heads.box_predictor.cls_score.weight": 1,
    "roi_heads.box_predictor.cls_score.bias": 1,
    "roi_heads.box_predictor.bbox_pred.weight": 4,
    "roi_heads.box_predictor.bbox_pred.bias": 4,
    "roi_heads.mask_predictor.mask_fcn_logits.weight": 1,
    "roi_heads.mask_predictor.mask_fcn_logits.bias": 1,
}


def _read(path: str | os.PathLike) -> dict:
    if not os.path.exists(path):
        raise FileNotFoundError(f"pretrained weights not found: {path} (segfusion never downloads weights; put the file there)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict")
    if state and all(k.startswith("module.") for k in state):  # saved from a DDP-wrapped model
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def remap_predictor(source: torch.Tensor, target: torch.Tensor, rows: list[tuple[int, int]], width: int) -> torch.Tensor:
    """Copy label rows (``(our label, their label)``, ``width`` rows per label) of source into target."""
    out = target.clone()
    for ours, theirs in rows:
        out[ours * width : (ours + 1) * width] = source[theirs * width : (theirs + 1) * width]
    return out


def load_pretrained(model, path: str | os.PathLike, classes: ClassInfo, class_remap: dict[str, int] | None = None) -> dict:
    """Load ``path`` into ``model`` (a `PanopticModel`); returns {"loaded": n, "remapped": [...]}."""
    state = _read(path)
    class_remap = dict(class_remap or {})
    unknown = sorted(set(class_remap) - set(classes.names))
    if unknown:
        raise ValueError(f"class_remap names {unknown} are not classes of this dataset ({list(classes.names)})")
    target = model.state_dict()
    new = {}
    if any(k.startswith(("rpn.", "roi_heads.")) for k in state):  # a full Mask R-CNN
        if model.detector is None:
            prefix_map = {"backbone.": "body."}
        else:
            prefix_map = {"": "detector."}
        things = classes.thing_indices.tolist()
        rows = [(0, 0)] + [(things.index(classes.names.index(n)) + 1, lab) for n, lab in class_remap.items() if classes.names.index(n) in things]
        for key, value in state.items():
            for src, dst in prefix_map.items():
                if not key.startswith(src):
                    continue
                ours = dst + key[len(src):]
                if ours not in target:
                    continue
                if key in _PER_CLASS:
                    value = remap_predictor(value, target[ours], rows, _PER_CLASS[key])
                if target[ours].shape == value.shape:
                    new[ours] = value
    else:  # a backbone: classifier keys (conv1.*, layer1.*), or a backbone + FPN (body.*, fpn.*)
        root = "detector.backbone." if model.detector is not None else "body."
        for key, value in state.items():
            key = key[len("backbone."):] if key.startswith("backbone.") else key
            ours = root + (key if key.startswith(("body.", "fpn.")) else "body." + key)
            if ours in target and target[ours].shape == value.shape:
                new[ours] = value
    if not new:
        raise ValueError(f"{path}: no tensor matches this model's architecture (wrong backbone?)")
    model.load_state_dict(new, strict=False)
    return {"loaded": len(new), "remapped": sorted(class_remap)}
