"""`predict` stores the IMP canvas of IMP models with a head when asked (cache issue)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from segfusion.datasets.canonical import CanonicalSplit  # noqa: E402
from segfusion.inference.cache import CacheReader, CacheWriter  # noqa: E402
from segfusion.inference.predict import predict_split  # noqa: E402
from segfusion.models.build import MODEL_PRESETS, Architecture, build_model  # noqa: E402


@pytest.mark.parametrize("store", [True, False])
def test_canvas_on_request(street_canonical, tmp_path, store):
    split = CanonicalSplit(street_canonical)
    torch.manual_seed(0)
    arch = Architecture(min_size=(64,), test_min_size=64, max_size=128, box_score_thresh=0.0)
    model = build_model(MODEL_PRESETS["panoptic_fpn_imp"], arch, split.classes)
    path = tmp_path / "c.h5"
    with CacheWriter(path, "panoptic_fpn_imp", "h", split.classes) as w:
        stats = predict_split(model, split, split.images[:2], w, batch_size=2, store_canvas=store)
    assert stats["images"] == 2
    with CacheReader(path) as r:
        cached = r.read(r.names[0])
        sem = cached.semantic.prob
        if store:
            assert cached.canvas is not None and cached.canvas.shape == sem.shape  # (C, H/4, W/4)
            assert np.all(cached.canvas >= 0) and np.all(cached.canvas <= 1)
        else:
            assert cached.canvas is None
