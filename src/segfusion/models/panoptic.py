"""Mask R-CNN (torchvision) + a semantic head, optionally fed by the IMP canvas.

One module covers every variant of the IMP paper's ablation (Fig. 3): ``detector`` adds
torchvision's RPN and RoI heads on the shared FPN; ``head`` adds a semantic head on the
same FPN; ``imp`` projects the model's own detections of the same forward pass into a
C x H/4 x W/4 canvas (Sec. 3.1) that the head concatenates (Fig. 4).

Mask R-CNN labels are 1..T over the thing classes only; ``label_to_class`` maps them to
the dataset's class index.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from segfusion.models.heads import LEVELS as HEAD_LEVELS
from segfusion.models.imp import instance_mask_projection_batched
from segfusion.specs import FREEZABLE, InferenceSpec, ModelSpec, ModelVariant
from segfusion.types import ClassInfo

IMAGE_MEAN = [0.485, 0.456, 0.406]
IMAGE_STD = [0.229, 0.224, 0.225]


@dataclass
class RawPrediction:
    """One image's network outputs in original-image coordinates (numpy), before any fusion."""

    image_size: tuple[int, int]
    boxes: np.ndarray  # (N, 4) float32
    scores: np.ndarray  # (N,)
    labels: np.ndarray  # (N,) class index
    mask_prob: np.ndarray  # (N, 28, 28) float32
    semantic_prob: np.ndarray  # (C, h, w) float32: head softmax, or the IMP canvas for maskrcnn_imp
    proposals: np.ndarray  # (P, 4) RPN proposals, for the recall diagnostic
    canvas: np.ndarray | None = None  # (C, h, w) the IMP canvas of IMP models with a head


@dataclass
class Trunk:
    """What the frozen backbone, RPN and RoI heads give one training image (stage 2).

    features:    the semantic head's FPN levels (`segfusion.models.heads.LEVELS`), each (C, h_l, w_l)
    image_size:  (h, w) of the image after the detector transform
    padded_size: (H, W) of the padded tensor the backbone saw (divisible by 32)
    detections:  for IMP: boxes (N, 4) in transformed coordinates, scores (N,), labels (N,)
                 Mask R-CNN labels 1..T, masks (N, 1, 28, 28); None without IMP
    """

    features: dict[str, torch.Tensor]
    image_size: tuple[int, int]
    padded_size: tuple[int, int]
    detections: dict[str, torch.Tensor] | None


def semantic_loss(logits: torch.Tensor, target: torch.Tensor, bootstrap_fraction: float = 1.0) -> torch.Tensor:
    """Cross-entropy at input resolution, ignoring 255.

    logits (B, C, h, w) at stride 4 are bilinearly upsampled to target (B, H, W).
    ``bootstrap_fraction < 1`` keeps only the hardest fraction of valid pixels (hard-pixel
    bootstrapping, as the Seamless and IMP setups use).
    """
    logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    per_pixel = F.cross_entropy(logits, target, ignore_index=255, reduction="none").flatten()
    valid = target.flatten() != 255
    losses = per_pixel[valid]
    if losses.numel() == 0:
        return logits.sum() * 0.0
    if bootstrap_fraction < 1.0:
        k = max(1, int(math.ceil(bootstrap_fraction * losses.numel())))
        losses = losses.topk(k).values
    return losses.mean()


class PanopticModel(nn.Module):
    """A detector and/or a semantic head on one backbone with FPN; components are injected
    (`segfusion.models.build.build_model` makes them from the specs).

    detector: torchvision MaskRCNN (its backbone is the shared one) or None; body and resize:
    the backbone and transform of detector-less variants; head: the semantic head or None.
    """

    def __init__(
        self,
        variant: ModelVariant,
        spec: ModelSpec,
        classes: ClassInfo,
        *,
        detector: nn.Module | None,
        body: nn.Module | None,
        resize: GeneralizedRCNNTransform | None,
        head: nn.Module | None,
    ):
        super().__init__()
        if (detector is None) == (body is None) or (body is None) != (resize is None):
            raise ValueError("PanopticModel: give a detector, or a body and its resize transform")
        self.variant = variant
        self.spec = spec
        self.num_classes = classes.num_classes
        things = classes.thing_indices.tolist()
        self.register_buffer("label_to_class", torch.tensor([-1] + things, dtype=torch.long), persistent=False)
        self.detector = detector
        self.body = body
        if resize is not None:
            self.resize = resize
        self.head = head

    # -- freezing -------------------------------------------------------------------------------
    FREEZABLE = FREEZABLE

    def freeze(self, parts) -> tuple[str, ...]:
        """Freeze named parts (``backbone``, ``rpn``, ``roi_heads``): no gradients, kept in eval mode.

        A model without a detector (``semantic_*``) has no ``rpn`` or ``roi_heads``: those names
        are skipped, so one stage-2 ``freeze`` list serves every model of a run. Returns the
        skipped names (the caller logs them)."""
        unknown = [p for p in parts if p not in self.FREEZABLE]
        if unknown:
            raise ValueError(f"cannot freeze {unknown[0]!r}; choose from {self.FREEZABLE}")
        absent = tuple(p for p in parts if p != "backbone" and self.detector is None)
        self.frozen = tuple(p for p in parts if p not in absent)
        for part in self.frozen:
            self._part(part).requires_grad_(False)
        return absent

    def _part(self, name: str) -> nn.Module:
        if name not in self.FREEZABLE:
            raise ValueError(f"cannot freeze {name!r}; choose from {self.FREEZABLE}")
        if name == "backbone":
            return self.backbone
        if self.detector is None:
            raise ValueError(f"cannot freeze {name!r}: this model has no detector")
        return getattr(self.detector, name)

    def train(self, mode: bool = True):
        super().train(mode)
        for part in getattr(self, "frozen", ()):
            self._part(part).train(False)
        return self

    # -- shared pieces -------------------------------------------------------------------------
    @property
    def backbone(self) -> nn.Module:
        return self.detector.backbone if self.detector is not None else self.body

    @property
    def transform(self) -> GeneralizedRCNNTransform:
        return self.detector.transform if self.detector is not None else self.resize

    def _detect(self, images, features, grad: bool):
        """RPN + RoI heads in inference mode (detections for IMP), in transformed coordinates."""
        rpn, roi = self.detector.rpn, self.detector.roi_heads
        modes = (rpn.training, roi.training)
        rpn.train(False)
        roi.train(False)
        try:
            with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
                proposals, _ = rpn(images, features)
                detections, _ = roi(features, proposals, images.image_sizes)
        finally:
            rpn.train(modes[0])
            roi.train(modes[1])
        return proposals, detections

    def _canvas(self, detections, features) -> torch.Tensor:
        """IMP canvas (B, C, H/4, W/4) over the padded batch, at P2's stride."""
        p2 = features["0"]
        return instance_mask_projection_batched(
            [self.label_to_class[d["labels"]] for d in detections],
            [d["scores"] for d in detections],
            [d["masks"][:, 0] for d in detections],
            [d["boxes"] for d in detections],
            self.num_classes,
            tuple(p2.shape[-2:]),
            4.0,
        )

    # -- the frozen trunk of stage 2 -----------------------------------------------------------
    @torch.no_grad()
    def trunk(self, image: torch.Tensor) -> Trunk:
        """The frozen part's outputs for one training image: the head's FPN levels and, for IMP,
        the detections that feed the canvas (`Trunk`).

        The transform runs in eval mode (short side ``min_size[-1]``; training mode would draw a
        size from the torch RNG even when there is only one), so this is a pure function of the
        image and the frozen weights, which is what lets `segfusion.training.trunk_cache` keep it.
        """
        transform = self.transform
        mode = transform.training
        transform.train(False)
        try:
            il, _ = transform([image], None)
        finally:
            transform.train(mode)
        features = self.backbone(il.tensors)
        detections = None
        if self.variant.imp:
            _, (d,) = self._detect(il, features, grad=False)
            detections = {k: d[k] for k in ("boxes", "scores", "labels", "masks")}
        h, w = il.image_sizes[0]
        return Trunk({k: features[k][0] for k in HEAD_LEVELS}, (int(h), int(w)), tuple(int(v) for v in il.tensors.shape[-2:]), detections)

    def _head_losses(self, trunks: list[Trunk], semantics: list[torch.Tensor], bootstrap_fraction: float) -> dict[str, torch.Tensor]:
        """The semantic loss of a batch from its trunks: only the head runs (and learns)."""
        padded = {t.padded_size for t in trunks}
        if len(padded) != 1:
            raise ValueError(f"frozen trunk: the batch's images have different padded sizes {sorted(padded)}")
        features = {k: torch.stack([t.features[k] for t in trunks]) for k in HEAD_LEVELS}
        canvas = self._canvas([t.detections for t in trunks], features) if self.variant.imp else None
        logits = self.head(features, canvas)
        target = self._semantic_target(semantics, [t.image_size for t in trunks], padded.pop(), logits.device)
        return {"loss_semantic": semantic_loss(logits, target, bootstrap_fraction)}

    # -- training ------------------------------------------------------------------------------
    def losses(
        self,
        images: list[torch.Tensor],
        targets: list[dict[str, torch.Tensor]],
        train_detector: bool = True,
        imp_end_to_end: bool = False,
        bootstrap_fraction: float = 1.0,
        trunks: list[Trunk] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Loss terms for a batch. images: list of (3, H, W) float in [0, 1]; targets: boxes,
        labels (1..T), masks (N, H, W) uint8, semantic (H, W) long with 255 = ignore.

        ``trunks`` (stage 2 with a frozen trunk, one `Trunk` per image): only the semantic
        head runs; ``images`` and the detector targets are not used."""
        if trunks is not None:
            return self._head_losses(trunks, [t["semantic"] for t in targets], bootstrap_fraction)
        det_targets = [{k: v for k, v in t.items() if k != "semantic"} for t in targets]
        il, det_targets = self.transform(images, det_targets if self.detector is not None else None)
        features = self.backbone(il.tensors)
        losses: dict[str, torch.Tensor] = {}
        if self.detector is not None and train_detector:
            proposals, rpn_losses = self.detector.rpn(il, features, det_targets)
            _, roi_losses = self.detector.roi_heads(features, proposals, il.image_sizes, det_targets)
            losses.update(rpn_losses)
            losses.update(roi_losses)
        if self.head is not None:
            canvas = None
            if self.variant.imp:
                _, detections = self._detect(il, features, grad=imp_end_to_end)
                canvas = self._canvas(detections, features)
                if not imp_end_to_end:
                    canvas = canvas.detach()
            logits = self.head(features, canvas)
            target = self._semantic_target([t["semantic"] for t in targets], il.image_sizes, tuple(il.tensors.shape[-2:]), il.tensors.device)
            losses["loss_semantic"] = semantic_loss(logits, target, bootstrap_fraction)
        return losses

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]], **kwargs) -> dict[str, torch.Tensor]:
        """The training losses (same as `losses`): DistributedDataParallel synchronises the
        gradients of what goes through ``forward``, so the data-parallel loop calls the model."""
        return self.losses(images, targets, **kwargs)

    @staticmethod
    def _semantic_target(semantics: list[torch.Tensor], image_sizes, padded_size: tuple[int, int], device) -> torch.Tensor:
        """Resize each (H, W) map to its transformed size (nearest) and pad with 255 to the batch's padded size."""
        hp, wp = padded_size
        out = torch.full((len(semantics), hp, wp), 255, dtype=torch.long, device=device)
        for i, (sem, (h, w)) in enumerate(zip(semantics, image_sizes)):
            if sem.shape != (h, w):
                sem = F.interpolate(sem[None, None].float(), size=(h, w), mode="nearest")[0, 0].long()
            out[i, :h, :w] = sem
        return out

    # -- inference -----------------------------------------------------------------------------
    @contextmanager
    def test_time(self, inference: InferenceSpec):
        """Apply ``inference`` (test sizes, RPN test top-n, score threshold, detections per image)
        inside the block and restore the model's own settings after it."""
        transform = self.transform
        saved = [(transform, "min_size", transform.min_size), (transform, "max_size", transform.max_size)]
        transform.min_size = (inference.test_min_size,)
        transform.max_size = inference.test_max_size or self.spec.max_size
        if self.detector is not None:
            rpn, roi = self.detector.rpn, self.detector.roi_heads
            saved += [(rpn, "_pre_nms_top_n", rpn._pre_nms_top_n), (rpn, "_post_nms_top_n", rpn._post_nms_top_n)]
            saved += [(roi, "score_thresh", roi.score_thresh), (roi, "detections_per_img", roi.detections_per_img)]
            rpn._pre_nms_top_n = {**rpn._pre_nms_top_n, "testing": inference.rpn_pre_nms_top_n_test}
            rpn._post_nms_top_n = {**rpn._post_nms_top_n, "testing": inference.rpn_post_nms_top_n_test}
            roi.score_thresh = inference.box_score_thresh
            roi.detections_per_img = inference.detections_per_image
        try:
            yield
        finally:
            for obj, name, value in saved:
                setattr(obj, name, value)

    @torch.no_grad()
    def predict(self, images: list[torch.Tensor], inference: InferenceSpec) -> list[RawPrediction]:
        """Raw soft outputs per image, in original-image coordinates, with the test-time settings ``inference``."""
        was_training = self.training
        self.eval()
        try:
            with self.test_time(inference):
                original = [tuple(img.shape[-2:]) for img in images]
                il, _ = self.transform(images, None)
                features = self.backbone(il.tensors)
                b = len(images)
                proposals = [torch.zeros((0, 4))] * b
                detections = [
                    {"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros((0, 1, 28, 28))}
                ] * b
                if self.detector is not None:
                    proposals, detections = self._detect(il, features, grad=False)
                canvas = self._canvas(detections, features) if self.variant.imp else None
                semantic = torch.softmax(self.head(features, canvas), dim=1) if self.head is not None else canvas
        finally:
            self.train(was_training)
        out = []
        for i in range(b):
            (h, w), (oh, ow) = il.image_sizes[i], original[i]
            scale = torch.tensor([ow / w, oh / h, ow / w, oh / h])
            det = detections[i]
            crop = semantic[i, :, : math.ceil(h / 4), : math.ceil(w / 4)]
            out.append(
                RawPrediction(
                    image_size=(int(oh), int(ow)),
                    boxes=(det["boxes"].cpu() * scale).numpy().astype(np.float32),
                    scores=det["scores"].cpu().numpy().astype(np.float32),
                    labels=self.label_to_class[det["labels"]].cpu().numpy().astype(np.int64),
                    mask_prob=det["masks"][:, 0].cpu().numpy().astype(np.float32),
                    semantic_prob=crop.cpu().numpy().astype(np.float32),
                    proposals=(proposals[i].cpu() * scale).numpy().astype(np.float32),
                    canvas=(
                        canvas[i, :, : math.ceil(h / 4), : math.ceil(w / 4)].cpu().numpy().astype(np.float32)
                        if canvas is not None and self.head is not None
                        else None
                    ),
                )
            )
        return out
