"""`predict` stores the IMP canvas of IMP models with a head when asked (cache issue)."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from segfusion.datasets.canonical import CanonicalSplit  # noqa: E402
from segfusion.inference.cache import CacheReader, CacheWriter  # noqa: E402
from segfusion.inference.predict import predict_split  # noqa: E402
from segfusion.models.build import build_model  # noqa: E402
from segfusion.specs import MODEL_PRESETS, InferenceSpec, ModelSpec, PredictSpec  # noqa: E402

INFERENCE = InferenceSpec(test_min_size=64, box_score_thresh=0.0)


@pytest.mark.parametrize("store", [True, False])
def test_canvas_on_request(street_canonical, tmp_path, store):
    split = CanonicalSplit(street_canonical)
    torch.manual_seed(0)
    arch = ModelSpec(min_size=(64,), max_size=128)
    model = build_model(MODEL_PRESETS["panoptic_fpn_imp"], arch, split.classes)
    path = tmp_path / "c.h5"
    with CacheWriter(path, "panoptic_fpn_imp", "h", split.classes) as w:
        stats = predict_split(model, split, split.images[:2], w, PredictSpec(batch_size=2, store_canvas=store), INFERENCE)
    assert stats["images"] == 2
    with CacheReader(path) as r:
        cached = r.read(r.names[0])
        sem = cached.semantic.prob
        if store:
            assert cached.canvas is not None and cached.canvas.shape == sem.shape  # (C, H/4, W/4)
            assert np.all(cached.canvas >= 0) and np.all(cached.canvas <= 1)
        else:
            assert cached.canvas is None
    if store:
        _check_canvas_is_the_projection_of_the_cached_detections(model, split, path)


def _check_canvas_is_the_projection_of_the_cached_detections(model, split, path):
    """The stored canvas is IMP run on the stored detections, in the canvas' coordinates.

    The model projects its detections in the coordinates of the transformed (resized) image
    at stride 4 and crops the batch canvas to (ceil(h / 4), ceil(w / 4)); the cache holds the
    boxes scaled back to the original image. Boxes are scaled forward again here (by 1 at
    these sizes, so exactly) and the masks are the cache's float16 ones: values agree to
    float16 rounding (the canvas is stored as float16 too).
    """
    from segfusion.models.imp import instance_mask_projection

    with CacheReader(path) as r:
        names = list(r.names)
        images = [torch.from_numpy(split.image(split.record(n))).permute(2, 0, 1).float() / 255.0 for n in names]
        was_training = model.training
        model.eval()
        transformed, _ = model.transform(images, None)  # the sizes the model's canvas is computed at
        model.train(was_training)
        for name, img, (h, w) in zip(names, images, transformed.image_sizes, strict=True):
            cached = r.read(name)
            oh, ow = img.shape[-2:]
            assert (h, w) == (oh, ow)  # 64 x 128 at min_size 64, max_size 128: not resized
            inst = cached.instances
            assert len(inst) > 0
            scale = torch.tensor([w / ow, h / oh, w / ow, h / oh], dtype=torch.float32)
            expected = instance_mask_projection(
                torch.from_numpy(inst.labels),
                torch.from_numpy(inst.scores),
                torch.from_numpy(inst.mask_prob.astype(np.float32)),
                torch.from_numpy(inst.boxes) * scale,
                split.classes.num_classes,
                (math.ceil(h / 4), math.ceil(w / 4)),
                4.0,
            ).numpy()
            assert cached.canvas.shape == expected.shape
            assert expected.max() > 0.05  # a canvas of zeros would not pass
            np.testing.assert_allclose(cached.canvas, expected, rtol=0, atol=2e-3)
