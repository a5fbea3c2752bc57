"""Test-time settings belong to prediction: `PanopticModel.predict` applies an `InferenceSpec`
and restores the model's own settings; model files of format 1 still load."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from segfusion.datasets.cityscapes import cityscapes_classes  # noqa: E402
from segfusion.models.build import build_model  # noqa: E402
from segfusion.specs import MODEL_PRESETS, InferenceSpec, ModelSpec  # noqa: E402
from segfusion.training.checkpoint import load_model, save_model  # noqa: E402

SPEC = ModelSpec(min_size=(64,), max_size=128)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(MODEL_PRESETS["panoptic_fpn_imp"], SPEC, cityscapes_classes())


@pytest.fixture(scope="module")
def images():
    gen = torch.Generator().manual_seed(1)
    return [torch.rand(3, 64, 128, generator=gen) for _ in range(2)]


def test_predict_applies_the_inference_spec_and_restores_the_model(model, images):
    roi, rpn = model.detector.roi_heads, model.detector.rpn
    before = (roi.score_thresh, roi.detections_per_img, dict(rpn._post_nms_top_n), model.transform.min_size, model.transform.max_size)
    many = model.predict(images, InferenceSpec(test_min_size=64, box_score_thresh=0.0, detections_per_image=7))
    assert all(len(p.scores) == 7 for p in many)  # an untrained head scores every class above 0
    none = model.predict(images, InferenceSpec(test_min_size=64, box_score_thresh=1.0))
    assert all(len(p.scores) == 0 for p in none)
    few = model.predict(images, InferenceSpec(test_min_size=64, rpn_post_nms_top_n_test=5))
    assert all(len(p.proposals) <= 5 for p in few)
    # the test size sets the stride-4 canvas the semantic output comes at
    small = model.predict(images, InferenceSpec(test_min_size=32))
    big = model.predict(images, InferenceSpec(test_min_size=96, test_max_size=192))
    assert small[0].semantic_prob.shape[1:] == (8, 16)
    assert big[0].semantic_prob.shape[1:] == (math.ceil(96 / 4), math.ceil(192 / 4))
    assert big[0].image_size == small[0].image_size == (64, 128)
    after = (roi.score_thresh, roi.detections_per_img, dict(rpn._post_nms_top_n), model.transform.min_size, model.transform.max_size)
    assert after == before


def test_model_files_of_format_1_load_and_foreign_files_say_what_to_do(model, tmp_path):
    path = tmp_path / "stage2.pt"
    save_model(path, model, cityscapes_classes(), stage=2)
    payload = torch.load(path, weights_only=False)
    assert payload["format"] == "segfusion-model/2" and "box_score_thresh" not in payload["arch"]
    payload["format"] = "segfusion-model/1"
    payload["arch"].update(test_min_size=64, box_score_thresh=0.3, detections_per_image=50, rpn_pre_nms_top_n_test=99, rpn_post_nms_top_n_test=9)
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    loaded, classes, _ = load_model(old)
    assert loaded.spec == SPEC and classes == cityscapes_classes()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    payload["format"] = "segfusion-model/0"
    torch.save(payload, old)
    with pytest.raises(ValueError, match=r"old\.pt: not a segfusion model file \(format segfusion-model/0.*retrain it"):
        load_model(old)
