"""Validation on a held-out split during training: mask AP after stage 1, mIoU after stage 2.

The metric follows what each stage trains: stage 1 is Mask R-CNN alone, so its model is
scored by COCO mask AP of its raw detections (`segfusion.metrics.InstanceAP`, masks pasted
into the image with `segfusion.inference.paste.masks_to_image` and binarised at 0.5, as the
evaluate rule does for the prediction cache); stage 2 trains the semantic head, so it is
scored by the mIoU (`segfusion.metrics.SemanticConfusion`) of the argmax of the head's
probabilities upsampled with the shared `segfusion.resize.resize_bilinear`. Both are
computed on the network's own outputs, before any fusion (the fusion methods are compared
by the workflow after training).

Test-time settings: the model's own training-scale view, `validation_inference`, never the
predict config's ``inference`` section, so that inference settings never change what
training (and ``keep_best``) does.

With several training processes each rank predicts a disjoint share of the images; the
metric accumulators are merged on rank 0 (they are mergeable by design) and the result is
sent back to every rank, so all ranks take the same keep-best decision.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from segfusion.datasets.canonical import CanonicalSplit
from segfusion.io.atomic import save_figure
from segfusion.specs import InferenceSpec, ModelSpec
from segfusion.training.distributed import DistContext, all_gather, broadcast

STAGE_METRIC = {1: "ap_mask", 2: "miou"}


def validation_inference(spec: ModelSpec) -> InferenceSpec:
    """Test-time settings of validation: the `InferenceSpec` defaults at the median training
    short side (the only one for single-scale training)."""
    sizes = sorted(spec.min_size)
    return InferenceSpec(test_min_size=sizes[len(sizes) // 2])


class Validator:
    """Scores a model on ``split``; ``metric`` names the value to maximise (``ap_mask`` or ``miou``)."""

    def __init__(self, split: CanonicalSplit, stage: int, batch_size: int = 4):
        if stage not in STAGE_METRIC:
            raise ValueError(f"validation: stage must be 1 or 2, got {stage}")
        if batch_size < 1:
            raise ValueError(f"validation: batch_size must be >= 1, got {batch_size}")
        self.split = split
        self.stage = stage
        self.batch_size = batch_size
        self.metric = STAGE_METRIC[stage]
        self.records = sorted(split.images, key=lambda r: r.image_id)

    def _accumulator(self):
        from segfusion.metrics import InstanceAP, SemanticConfusion

        classes = self.split.classes
        if self.stage == 1:
            return InstanceAP(classes)
        return SemanticConfusion(classes.num_classes, classes.ignore_index, is_thing=list(classes.is_thing))

    def _update(self, acc, rec, pred) -> None:
        if self.stage == 1:
            from pycocotools import mask as mask_utils

            from segfusion.inference.paste import masks_to_image
            from segfusion.types import Instances

            inst = Instances(pred.boxes, pred.scores, pred.labels, pred.image_size, mask_prob=pred.mask_prob)
            masks = masks_to_image(inst, threshold=0.5) if len(inst) else np.zeros((0, *inst.image_size), bool)
            rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
            from segfusion.evaluation import add_instance_ground_truth

            # the split's instances.json as given when it has one (as the evaluate rule does)
            add_instance_ground_truth(acc, self.split, rec, self.split.panoptic(rec))
            acc.add_detections(rec.name, inst.labels, inst.scores, inst.boxes, rles)
        else:
            from segfusion.resize import resize_bilinear

            prob = resize_bilinear(pred.semantic_prob, pred.image_size)
            acc.update(self.split.semantic(rec), prob.argmax(axis=0).astype(np.uint8), image_id=rec.name)

    def __call__(self, model, ctx: DistContext | None = None) -> dict[str, float | None]:
        """Scalar results (the primary ``metric`` first); identical on every rank."""
        ctx = ctx or DistContext()
        t0 = time.perf_counter()
        mine = self.records[ctx.rank :: ctx.world_size]
        acc = self._accumulator()
        device = next(model.parameters()).device
        inference = validation_inference(model.spec)
        for start in range(0, len(mine), self.batch_size):
            batch = mine[start : start + self.batch_size]
            images = [torch.from_numpy(self.split.image(r)).permute(2, 0, 1).float().div(255.0).to(device) for r in batch]
            for rec, pred in zip(batch, model.predict(images, inference)):
                self._update(acc, rec, pred)
        parts = all_gather(acc, ctx)
        result = None
        if ctx.is_main:
            merged = parts[0]
            for other in parts[1:]:
                merged.merge(other)
            full = merged.result()
            result = {self.metric: full.get(self.metric)}
            result.update({k: v for k, v in full.items() if k != self.metric and isinstance(v, (int, float)) and not isinstance(v, bool)})
            result["seconds"] = time.perf_counter() - t0
        return broadcast(result, ctx)


def is_better(value: float | None, best: float | None) -> bool:
    """Strictly better (higher); a missing or NaN value never wins (e.g. AP with no ground truth)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return best is None or value > best


def plot_validation(path: Path, rows: list[dict], metric: str, title: str) -> None:
    """The validation curve (primary metric per validation iteration, best point marked) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    its = np.array([r["iteration"] for r in rows])
    vals = np.array([np.nan if r.get(metric) is None else r[metric] for r in rows], float)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(its, vals, marker="o", label=metric)
    if np.isfinite(vals).any():
        k = int(np.nanargmax(vals))
        ax.scatter([its[k]], [vals[k]], s=120, facecolors="none", edgecolors="C3", label=f"best {vals[k]:.4f} @ {its[k]}")
    ax.set_xlabel("iteration")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
