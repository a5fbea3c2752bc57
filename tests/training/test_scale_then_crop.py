"""IMP Sec. 4.3 order: multi-scale resize first, then a random crop of exactly ``crop_size``."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from segfusion.datasets.canonical import CanonicalSplit  # noqa: E402
from segfusion.datasets.torch_dataset import PanopticTrainingData, draw_params, scaled_size  # noqa: E402
from segfusion.models.build import build_model  # noqa: E402
from segfusion.specs import MODEL_PRESETS, Augmentation, ModelSpec, Schedule, TrainSpec  # noqa: E402
from segfusion.training.stage import training_data  # noqa: E402

CROP = (32, 64)
SCALES = (64, 96, 128)


def test_scaled_size_follows_torchvision():
    assert scaled_size((64, 128), 96, 1000) == (96, 192)
    assert scaled_size((64, 128), 96, 160) == (80, 160)  # the long side caps the scale
    assert scaled_size((1024, 2048), 512, 4096) == (512, 1024)


def test_every_training_input_is_the_crop_and_the_scale_is_seeded(street_canonical):
    split = CanonicalSplit(street_canonical)
    data = PanopticTrainingData(split, Augmentation(crop_size=CROP), scales=SCALES, max_size=512)
    sizes = set()
    for seed in range(16):
        params = draw_params(data.aug, (64, 128), np.random.default_rng(seed), SCALES, 512)
        sizes.add(params.size)
        image, target = data.sample(seed % len(split), np.random.default_rng(seed))
        again, _ = data.sample(seed % len(split), np.random.default_rng(seed))
        assert torch.equal(image, again)  # a pure function of the seed
        assert tuple(image.shape) == (3, *CROP) and tuple(target["semantic"].shape) == CROP
        assert target["masks"].shape[1:] == CROP
        # the semantic target is the nearest-resized ground truth, cut where the image was cut
        rec = split.images[seed % len(split)]
        gt = torch.from_numpy(split.semantic(rec).astype(np.float32))[None, None]
        resized = torch.nn.functional.interpolate(gt, size=params.size, mode="nearest")[0, 0].long()
        y0, x0, h, w = params.crop
        expected = resized[y0 : y0 + h, x0 : x0 + w]
        assert torch.equal(target["semantic"], expected.flip(-1) if params.flip else expected)
    assert sizes == {scaled_size((64, 128), s, 512) for s in SCALES}


def test_the_detector_does_not_resize_the_crops_again(street_canonical):
    split = CanonicalSplit(street_canonical)
    model = build_model(MODEL_PRESETS["maskrcnn_imp"], ModelSpec(min_size=SCALES, max_size=512), split.classes)
    spec = TrainSpec(Schedule(iterations=1), augmentation=Augmentation(crop_size=CROP))
    data = training_data(model, split, spec)
    model.train()
    images = [data.sample(i, np.random.default_rng(i))[0] for i in range(3)]
    il, _ = model.transform(images, None)
    assert il.image_sizes == [CROP] * 3
    # without a crop, the detector's transform keeps doing the multi-scale resize
    plain = build_model(MODEL_PRESETS["maskrcnn_imp"], ModelSpec(min_size=(96,), max_size=512), split.classes).train()
    assert training_data(plain, split, TrainSpec(Schedule(iterations=1))).scales == ()
    assert plain.transform([images[0]], None)[0].image_sizes == [(96, 192)]
