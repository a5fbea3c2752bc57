"""The frozen-trunk cache of stage 2: bit-identical to recomputing, in memory or memory-mapped,
and across a kill and resume; its conditions, each named."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from segfusion.datasets.canonical import CanonicalSplit  # noqa: E402
from segfusion.datasets.torch_dataset import PanopticTrainingData  # noqa: E402
from segfusion.models.build import build_model  # noqa: E402
from segfusion.specs import MODEL_PRESETS, Augmentation, ModelSpec, Schedule, TrainSpec  # noqa: E402
from segfusion.training.checkpoint import init_from  # noqa: E402
from segfusion.training.loop import train  # noqa: E402
from segfusion.training.stage import frozen_trunk  # noqa: E402

SPEC = ModelSpec(min_size=(64,), max_size=128)
FROZEN = ("backbone", "rpn", "roi_heads")


@pytest.fixture(scope="module")
def stage1(street_canonical):
    split = CanonicalSplit(street_canonical)
    torch.manual_seed(0)
    return build_model(MODEL_PRESETS["maskrcnn_imp"], SPEC, split.classes).state_dict()


def _stage2(street_canonical, stage1, run_dir, mode, model="panoptic_fpn_imp", iterations=6, data=None, data_workers=0, **spec_kw):
    split = CanonicalSplit(street_canonical)
    torch.manual_seed(1)
    net = build_model(MODEL_PRESETS[model], SPEC, split.classes)
    init_from(net, stage1, "stage1")
    net.freeze(FROZEN)
    net.initial_head = {k: v.clone() for k, v in net.head.state_dict().items()}
    spec = TrainSpec(Schedule(iterations=iterations, lr=0.02), batch_size=2, checkpoint_every=2, freeze=FROZEN, frozen_trunk=mode, seed=3, **spec_kw)
    trunks = frozen_trunk(net, split, spec, run_dir, print)
    history = train(net, data or PanopticTrainingData(split, spec.augmentation), spec, run_dir, progress=False, trunks=trunks,
                    data_workers=data_workers)
    return net, history, trunks


@pytest.mark.parametrize("model", ["panoptic_fpn_imp", "panoptic_fpn"])
def test_cached_trunk_is_bit_identical_to_recomputing_it(street_canonical, stage1, tmp_path, model):
    cached, hist_c, cache = _stage2(street_canonical, stage1, tmp_path / "c", "cache", model)
    fresh, hist_r, recompute = _stage2(street_canonical, stage1, tmp_path / "r", "recompute", model)
    assert cache.hits > 0 and cache.misses <= cache.rows  # the cache was really reused
    assert recompute.hits == 0 and recompute.misses == 12  # 6 iterations x 2 images, nothing kept
    assert [r["loss_semantic"] for r in hist_c] == [r["loss_semantic"] for r in hist_r]
    for key, value in fresh.state_dict().items():
        assert torch.equal(cached.state_dict()[key], value), key
    # the head learned (the comparison is not between two untouched models) and nothing else moved
    assert any(not torch.equal(v, cached.initial_head[k]) for k, v in cached.head.state_dict().items())
    for key, value in stage1.items():
        assert torch.equal(cached.state_dict()[key], value), key


def test_dataloader_workers_feed_the_cached_trunk_the_same_samples(street_canonical, stage1, tmp_path):
    threaded, hist_t, cache_t = _stage2(street_canonical, stage1, tmp_path / "t", "cache")
    workers, hist_w, cache = _stage2(street_canonical, stage1, tmp_path / "w", "cache", data_workers=2)
    assert cache.hits == cache_t.hits > 0  # the same (index, flip) keys came through the workers and hit the cache
    assert [r["loss_semantic"] for r in hist_t] == [r["loss_semantic"] for r in hist_w]
    for key, value in threaded.state_dict().items():
        assert torch.equal(workers.state_dict()[key], value), key


def test_memory_mapped_cache_equals_the_in_memory_one(street_canonical, stage1, tmp_path):
    in_memory, hist_m, cache_m = _stage2(street_canonical, stage1, tmp_path / "m", "cache")
    mapped, hist_d, cache_d = _stage2(street_canonical, stage1, tmp_path / "d", "cache", trunk_cache_mb=0)
    assert not cache_m.on_disk and cache_d.on_disk and (tmp_path / "d" / "trunk_cache" / "feature_0.npy").exists()
    assert [r["loss"] for r in hist_m] == [r["loss"] for r in hist_d]
    for key, value in in_memory.state_dict().items():
        assert torch.equal(mapped.state_dict()[key], value), key


class _Killed(Exception):
    pass


class _DiesAt(PanopticTrainingData):
    """Training data that stops the run (like a kill) when iteration ``at``'s batch is drawn."""

    def __init__(self, split, aug, at, batch):
        super().__init__(split, aug)
        self.calls, self.limit = 0, at * batch

    def sample(self, index, rng=None):
        self.calls += 1
        if self.calls > self.limit:
            raise _Killed()
        return super().sample(index, rng)


def test_a_killed_cached_run_resumes_to_identical_weights(street_canonical, stage1, tmp_path):
    whole, _, _ = _stage2(street_canonical, stage1, tmp_path / "whole", "cache", iterations=6)
    split = CanonicalSplit(street_canonical)
    with pytest.raises(_Killed):
        # dies while iteration 5 is prefetched: the last checkpoint is after iteration 4
        _stage2(street_canonical, stage1, tmp_path / "killed", "cache", iterations=6, data=_DiesAt(split, Augmentation(), 5, 2))
    resumed, history, cache = _stage2(street_canonical, stage1, tmp_path / "killed", "cache", iterations=6)
    assert [r["iteration"] for r in history] == list(range(6)) and cache.misses <= 4  # only iterations 5 and 6 ran
    for key, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_each_condition_that_blocks_the_frozen_trunk_is_named():
    variant = MODEL_PRESETS["panoptic_fpn_imp"]
    ok = TrainSpec(freeze=FROZEN)
    assert ok.frozen_trunk_blockers(variant, SPEC, {(64, 128)}) == []
    cases = {
        "frozen_trunk is off": (TrainSpec(freeze=FROZEN, frozen_trunk="off"), variant, SPEC, 1),
        "not frozen: ['roi_heads']": (TrainSpec(freeze=("backbone", "rpn")), variant, SPEC, 1),
        "imp_end_to_end back-propagates through the canvas": (TrainSpec(freeze=FROZEN, imp_end_to_end=True), variant, SPEC, 1),
        "colour jitter": (TrainSpec(freeze=FROZEN, augmentation=Augmentation(color_jitter=0.4)), variant, SPEC, 1),
        "random crop": (TrainSpec(freeze=FROZEN, augmentation=Augmentation(crop_size=(32, 32))), variant, SPEC, 1),
        "multi-scale training (min_size [64, 96])": (TrainSpec(freeze=FROZEN), variant, ModelSpec(min_size=(64, 96)), 1),
        "images of 2 different sizes": (TrainSpec(freeze=FROZEN), variant, SPEC, 2),
        "the model has no semantic head": (TrainSpec(freeze=FROZEN), MODEL_PRESETS["maskrcnn_imp"], SPEC, 1),
    }
    for reason, (spec, v, model_spec, n_sizes) in cases.items():
        sizes = {(64, 128), (64, 96)} if n_sizes == 2 else {(64, 128)}
        assert spec.frozen_trunk_blockers(v, model_spec, sizes) == [reason]
    # a detector-less model needs only its backbone frozen
    assert TrainSpec(freeze=("backbone",)).frozen_trunk_blockers(MODEL_PRESETS["semantic_fpn"], SPEC, {(64, 128)}) == []


def test_flip_of_is_the_flip_that_sample_applies(street_canonical):
    data = PanopticTrainingData(CanonicalSplit(street_canonical), Augmentation(hflip=True))
    flips = set()
    for seed in range(12):
        image, _ = data.sample(0, np.random.default_rng(seed))
        plain, _ = data.sample(0, None)
        flipped = bool(torch.equal(image, plain.flip(-1)))
        assert data.flip_of(0, np.random.default_rng(seed)) == flipped
        flips.add(flipped)
    assert flips == {True, False}
