"""Pretrained Mask R-CNN weights from a local file, with COCO -> Cityscapes class remapping."""

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from segfusion.datasets.cityscapes import cityscapes_classes  # noqa: E402
from segfusion.models.build import build_model  # noqa: E402
from segfusion.specs import MODEL_PRESETS, ModelSpec  # noqa: E402
from segfusion.training.pretrained import load_pretrained  # noqa: E402

R50 = ModelSpec(
    backbone="resnet50", fpn_channels=256, head_channels=128, box_head_dim=1024, mask_head_layers=(256, 256, 256, 256),
    anchor_sizes=(32, 64, 128, 256, 512), min_size=(64,), max_size=128,
)
REMAP = {"person": 1, "car": 3, "truck": 8, "bus": 6, "train": 7, "motorcycle": 4, "bicycle": 2}


@pytest.fixture(scope="module")
def coco_state(tmp_path_factory):
    torch.manual_seed(0)
    coco = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    path = tmp_path_factory.mktemp("weights") / "coco.pth"
    torch.save(coco.state_dict(), path)
    return path, coco.state_dict()


def test_coco_to_cityscapes_remap(coco_state):
    path, coco = coco_state
    classes = cityscapes_classes()
    model = build_model(MODEL_PRESETS["panoptic_fpn_imp"], R50, classes)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    info = load_pretrained(model, path, classes, REMAP)
    state = model.state_dict()
    assert info["loaded"] > 300
    assert torch.equal(state["detector.backbone.body.layer3.0.conv1.weight"], coco["backbone.body.layer3.0.conv1.weight"])
    things = list(classes.thing_indices)
    label = {classes.names[c]: i + 1 for i, c in enumerate(things)}
    cls_w = state["detector.roi_heads.box_predictor.cls_score.weight"]
    assert torch.equal(cls_w[0], coco["roi_heads.box_predictor.cls_score.weight"][0])  # background
    assert torch.equal(cls_w[label["car"]], coco["roi_heads.box_predictor.cls_score.weight"][3])
    box = state["detector.roi_heads.box_predictor.bbox_pred.weight"]
    assert torch.equal(box[4 * label["truck"] : 4 * label["truck"] + 4], coco["roi_heads.box_predictor.bbox_pred.weight"][32:36])
    mask = state["detector.roi_heads.mask_predictor.mask_fcn_logits.weight"]
    assert torch.equal(mask[label["bicycle"]], coco["roi_heads.mask_predictor.mask_fcn_logits.weight"][2])
    # Rider has no COCO class: its rows keep the fresh initialisation (IMP Sec. 4.3).
    assert torch.equal(cls_w[label["rider"]], before["detector.roi_heads.box_predictor.cls_score.weight"][label["rider"]])
    head_keys = [k for k in before if k.startswith("head.")]
    assert head_keys and all(torch.equal(state[k], before[k]) for k in head_keys)  # the head is not in the file


def test_bad_remap_and_missing_file(coco_state, tmp_path):
    classes = cityscapes_classes()
    model = build_model(MODEL_PRESETS["maskrcnn_imp"], R50, classes)
    with pytest.raises(ValueError, match="cyclist"):
        load_pretrained(model, coco_state[0], classes, {"cyclist": 2})
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_pretrained(model, tmp_path / "nope.pth", classes)


def test_full_size_r50_fpn_imp_one_training_step():
    """Smoke test of the real-scale model: one step at 512 x 1024 on CPU."""
    classes = cityscapes_classes()
    arch = ModelSpec(**{**R50.__dict__, "min_size": (512,), "max_size": 1024})
    model = build_model(MODEL_PRESETS["panoptic_fpn_imp"], arch, classes)
    model.train()
    image = torch.rand(3, 512, 1024)
    masks = torch.zeros(1, 512, 1024, dtype=torch.uint8)
    masks[0, 200:300, 400:600] = 1
    sem = torch.zeros(512, 1024, dtype=torch.long)
    sem[200:300, 400:600] = 13
    target = {"boxes": torch.tensor([[400.0, 200.0, 600.0, 300.0]]), "labels": torch.tensor([3]), "masks": masks, "semantic": sem}
    losses = model.losses([image], [target], train_detector=True)
    assert {"loss_classifier", "loss_mask", "loss_semantic", "loss_objectness"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.head.parameters().__next__().grad is not None


SMALL = ModelSpec(backbone="resnet18", min_size=(64,), max_size=128)


@pytest.mark.parametrize("preset, root", [("maskrcnn_imp", "detector.backbone.body."), ("semantic_fpn", "body.body.")])
def test_resnet18_classifier_state_dict_loads_into_backbone(tmp_path, preset, root):
    torch.manual_seed(1)
    resnet = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), path)
    classes = cityscapes_classes()
    model = build_model(MODEL_PRESETS[preset], SMALL, classes)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    info = load_pretrained(model, path, classes)
    state = model.state_dict()
    body = {k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
    assert info["loaded"] == len(body)  # every tensor but the classifier (fc)
    for key, value in body.items():
        assert torch.equal(state[root + key], value), key
    fresh = [k for k in state if not k.startswith(root)]
    assert fresh and all(torch.equal(state[k], before[k]) for k in fresh)  # FPN and heads untouched


def test_tiny_backbone_state_dict_and_ddp_prefix(tmp_path):
    from segfusion.models.backbones import TinyBackbone

    torch.manual_seed(2)
    tiny = TinyBackbone()
    path = tmp_path / "tiny.pth"
    torch.save({f"module.{k}": v for k, v in tiny.state_dict().items()}, path)  # as saved from a DDP model
    classes = cityscapes_classes()
    model = build_model(MODEL_PRESETS["maskrcnn_imp"], ModelSpec(min_size=(64,), max_size=128), classes)
    info = load_pretrained(model, path, classes)
    assert info["loaded"] == len(tiny.state_dict())
    for key, value in tiny.state_dict().items():
        assert torch.equal(model.state_dict()["detector.backbone.body." + key], value), key
    # A resnet18 file does not fit the tiny backbone: the error says so instead of loading nothing.
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match="wrong backbone"):
        load_pretrained(model, tmp_path / "r18.pth", classes)
