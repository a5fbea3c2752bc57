"""Validation during training: the metrics of each stage, keep-best, and option checks."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from segfusion.datasets.canonical import CanonicalSplit  # noqa: E402
from segfusion.models.panoptic import RawPrediction  # noqa: E402
from segfusion.specs import MODEL_PRESETS, ModelSpec, Schedule, TrainSpec  # noqa: E402
from segfusion.training.loop import read_best, train  # noqa: E402
from segfusion.training.validation import Validator, is_better  # noqa: E402


class _Oracle(torch.nn.Module):
    """Predicts the ground truth of ``split`` (images are matched by content)."""

    spec = ModelSpec()  # validation takes its test-time settings from the model's shape

    def __init__(self, split, wrong_semantic=False):
        super().__init__()
        self.split = split
        self.wrong = wrong_semantic
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.by_image = {split.image(r).tobytes(): r for r in split.images}

    def predict(self, images, inference):
        assert inference.test_min_size == self.spec.min_size[0]
        out = []
        for img in images:
            rec = self.by_image[(img.permute(1, 2, 0) * 255).round().byte().numpy().tobytes()]
            pan = self.split.panoptic(rec)
            things = [s for s in pan.segments if s.is_thing and not s.iscrowd]
            boxes = np.array([[s.bbox[0], s.bbox[1], s.bbox[0] + s.bbox[2], s.bbox[1] + s.bbox[3]] for s in things], np.float32).reshape(-1, 4)
            sem = self.split.semantic(rec).astype(np.int64)
            c = self.split.classes.num_classes
            if self.wrong:
                sem = (sem + 1) % c
            prob = np.stack([(sem == k) for k in range(c)]).astype(np.float32)
            out.append(RawPrediction(
                image_size=(rec.height, rec.width), boxes=boxes, scores=np.linspace(1.0, 0.5, len(things), dtype=np.float32),
                labels=np.array([s.class_index for s in things], np.int64), mask_prob=np.ones((len(things), 28, 28), np.float32),
                semantic_prob=prob, proposals=np.zeros((0, 4), np.float32),
            ))
        return out


def _oracle_mask_ap(split) -> float:
    """COCO mask AP of `_Oracle`'s detections, recomputed without segfusion: the all-ones
    28 x 28 masks pasted into their boxes by torchvision's ``paste_masks_in_image``, binarised
    at 0.5, and pycocotools' COCOeval against the split's own ``instances.json``."""
    import contextlib
    import io

    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    results = []
    for rec in split.images:
        things = [s for s in split.panoptic(rec).segments if s.is_thing and not s.iscrowd]
        if not things:
            continue
        boxes = torch.tensor([[s.bbox[0], s.bbox[1], s.bbox[0] + s.bbox[2], s.bbox[1] + s.bbox[3]] for s in things], dtype=torch.float32)
        masks = paste_masks_in_image(torch.ones(len(things), 1, 28, 28), boxes, (rec.height, rec.width), padding=1)[:, 0] >= 0.5
        for s, m, score in zip(things, masks.numpy(), np.linspace(1.0, 0.5, len(things), dtype=np.float32), strict=True):
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            results.append({"image_id": rec.image_id, "category_id": split.classes.ids[s.class_index], "segmentation": rle, "score": float(score)})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(split.root / "instances.json"))
        ev = COCOeval(gt, gt.loadRes(results), iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def _plain_miou(split, recs, preds) -> float:
    """mIoU over the split: TP / (GT + P - TP) per class with GT + P > 0 (P on valid GT pixels)."""
    from segfusion.resize import resize_bilinear

    c = split.classes.num_classes
    cm = np.zeros((c, c), np.int64)
    for rec, pred in zip(recs, preds, strict=True):
        gt = split.semantic(rec).astype(np.int64)
        label = resize_bilinear(pred.semantic_prob, (rec.height, rec.width)).argmax(axis=0)
        valid = gt != split.classes.ignore_index
        cm += np.bincount(gt[valid] * c + label[valid], minlength=c * c).reshape(c, c)
    ious = []
    for k in range(c):
        tp, g, p = cm[k, k], cm[k].sum(), cm[:, k].sum()
        if g + p > 0:
            ious.append(tp / (g + p - tp))
    return float(np.mean(ious))


def test_stage_metrics_on_oracle_predictions(street_canonical):
    split = CanonicalSplit(street_canonical)
    v1 = Validator(split, stage=1, batch_size=4)
    r1 = v1(_Oracle(split))
    assert v1.metric == "ap_mask" and list(r1)[0] == "ap_mask"
    assert r1["ap_box"] == pytest.approx(1.0)  # exact ground-truth boxes
    assert 0.0 < r1["ap_mask"] < 1.0  # box-filling masks: right objects, imperfect shapes
    assert r1["ap_mask"] == pytest.approx(_oracle_mask_ap(split), abs=1e-12)
    assert r1["n_images"] == len(split) and r1["n_gt"] > 0
    v2 = Validator(split, stage=2)
    assert v2.metric == "miou"
    assert v2(_Oracle(split))["miou"] == pytest.approx(1.0)
    assert v2(_Oracle(split, wrong_semantic=True))["miou"] == pytest.approx(0.0)


def test_real_model_validation_keys(street_canonical):
    from segfusion.models.build import build_model

    split = CanonicalSplit(street_canonical)
    model = build_model(MODEL_PRESETS["panoptic_fpn"], ModelSpec(min_size=(64,), max_size=128), split.classes)
    model.train()
    seen, predict = [], model.predict

    def recording(*args, **kwargs):  # the predictions the validator scores
        out = predict(*args, **kwargs)
        seen.extend(out)
        return out

    model.predict = recording
    res = Validator(split, stage=2, batch_size=3)(model)
    del model.predict
    assert 0.0 <= res["miou"] <= 1.0 and res["n_images"] == len(split)
    # the mIoU of the model's own predictions, recomputed from a plain confusion matrix
    assert len(seen) == len(split)
    recs = sorted(split.images, key=lambda r: r.image_id)
    assert res["miou"] == pytest.approx(_plain_miou(split, recs, seen), abs=1e-12)
    assert model.training  # predict() restores the training mode


class _Line(torch.nn.Module):
    """Fits w to 3 with plain SGD; deterministic and fast."""

    variant = MODEL_PRESETS["maskrcnn_imp"]  # the loop asks whether a detector trains

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def losses(self, images, targets, **kw):
        return {"loss_fit": ((self.w - 3.0) ** 2).sum()}


class _Data:
    def __len__(self):
        return 4

    def sample(self, i, rng):
        return torch.zeros(3, 2, 2), {}


class _Scripted:
    """Returns scripted metric values and remembers the weights it saw."""

    metric = "miou"

    def __init__(self, values):
        self.values = list(values)
        self.seen = []

    def __call__(self, model, ctx=None):
        self.seen.append(model.w.detach().clone())
        return {"miou": self.values[len(self.seen) - 1]}


def test_keep_best_final_weights_are_the_best_validation(tmp_path):
    scripted = _Scripted([0.2, 0.7, None, 0.4])
    model = _Line()
    spec = TrainSpec(Schedule(iterations=8, lr=0.1), batch_size=1, checkpoint_every=2, validate_every=2, keep_best=True)
    train(model, _Data(), spec, tmp_path, progress=False, validator=scripted)
    assert len(scripted.seen) == 4
    assert torch.equal(model.w.detach(), scripted.seen[1])  # iteration 4, miou 0.7
    assert read_best(tmp_path) == {"iteration": 4, "metric": "miou", "value": 0.7}
    rows = (tmp_path / "val.csv").read_text().splitlines()
    assert rows == ["iteration,miou", "2,0.2", "4,0.7", "6,", "8,0.4"]
    assert (tmp_path / "val.png").exists()
    # Resuming the finished run re-validates nothing and still ends on the best weights.
    again = _Line()
    train(again, _Data(), spec, tmp_path, progress=False, validator=_Scripted([]))
    assert torch.equal(again.w.detach(), scripted.seen[1])


def test_option_checks(tmp_path):
    assert is_better(0.1, None) and not is_better(None, 0.1) and not is_better(float("nan"), None) and not is_better(0.1, 0.1)
    with pytest.raises(ValueError, match="keep_best needs validate_every"):
        TrainSpec(keep_best=True)
    with pytest.raises(ValueError, match="--val-data"):
        train(_Line(), _Data(), TrainSpec(Schedule(iterations=1, lr=0.1), batch_size=1, validate_every=1), tmp_path, progress=False)
