"""ResNet normalisation (frozen BatchNorm with pretrained weights) and prediction on a device."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from torchvision.ops.misc import FrozenBatchNorm2d  # noqa: E402

from segfusion.datasets.cityscapes import cityscapes_classes  # noqa: E402
from segfusion.models.backbones import build_backbone  # noqa: E402
from segfusion.models.build import build_model  # noqa: E402
from segfusion.specs import MODEL_PRESETS, InferenceSpec, ModelSpec  # noqa: E402

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CI has none)")


def test_auto_norm_freezes_batchnorm_only_with_pretrained_weights():
    assert ModelSpec(backbone="resnet18").resolved_norm == "bn"
    assert ModelSpec(backbone="resnet18", pretrained="w.pth").resolved_norm == "frozen_bn"
    assert ModelSpec(backbone="resnet18", pretrained="w.pth", norm="sync_bn").resolved_norm == "sync_bn"
    kinds = {norm: {type(m) for m in build_backbone("resnet18", 32, norm).body.modules()} for norm in ("bn", "frozen_bn")}
    assert FrozenBatchNorm2d in kinds["frozen_bn"] and torch.nn.BatchNorm2d not in kinds["frozen_bn"]
    assert torch.nn.BatchNorm2d in kinds["bn"] and FrozenBatchNorm2d not in kinds["bn"]
    # frozen statistics do not move in training mode
    body = build_backbone("resnet18", 32, "frozen_bn").train()
    before = copy.deepcopy(body.state_dict())
    body(torch.rand(2, 3, 64, 64))
    assert all(torch.equal(v, body.state_dict()[k]) for k, v in before.items())


def test_model_files_from_before_norm_keep_trainable_batchnorm():
    assert ModelSpec.from_stored({"backbone": "resnet18", "pretrained": "w.pth"}, "old.pt").resolved_norm == "bn"


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_predict_on_a_device_matches_the_cpu(device):
    torch.manual_seed(0)
    model = build_model(MODEL_PRESETS["panoptic_fpn_imp"], ModelSpec(min_size=(64,), max_size=128), cityscapes_classes())
    images = [torch.rand(3, 64, 128, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    inference = InferenceSpec(test_min_size=64, box_score_thresh=0.0, detections_per_image=5)
    reference = model.predict(images, inference)
    on_device = copy.deepcopy(model).to(device)
    got = on_device.predict([i.to(device) for i in images], inference)
    for a, b in zip(reference, got):
        assert a.image_size == b.image_size and a.semantic_prob.shape == b.semantic_prob.shape
        assert abs(a.semantic_prob - b.semantic_prob).max() <= (0 if device == "cpu" else 1e-3)
        assert len(a.scores) == len(b.scores) == 5
