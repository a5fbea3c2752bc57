"""Training loop: determinism, resume after a kill, divergence guard, stage-2 init."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from segfusion.datasets.canonical import CanonicalSplit  # noqa: E402
from segfusion.datasets.torch_dataset import PanopticTrainingData  # noqa: E402
from segfusion.models.build import build_model  # noqa: E402
from segfusion.specs import MODEL_PRESETS, ModelSpec, Schedule, TrainSpec  # noqa: E402
from segfusion.training.loop import TrainingDiverged, batch_indices, train  # noqa: E402

PARAMS = {
    "stage": {"schedule": {"iterations": 6, "lr": 0.01, "warmup_iters": 2, "steps": [4]}, "batch_size": 2, "checkpoint_every": 2},
    "architecture": {"min_size": [64], "max_size": 128},
    "seed": 1,
}


def _train_cli(data, out, run_root, params=PARAMS):
    return subprocess.Popen(
        [sys.executable, "-m", "segfusion.cli", "train", "--stage", "1", "--data", str(data), "--params", json.dumps(params),
         "--out", str(out), "--run-dir", str(run_root), "--threads", "1", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def test_schedule_and_batches():
    s = Schedule(iterations=10, lr=1.0, warmup_iters=4, warmup_factor=0.0, steps=(6, 8), gamma=0.1)
    assert s.lr_at(0) == 0.0 and s.lr_at(2) == pytest.approx(0.5) and s.lr_at(5) == 1.0
    assert s.lr_at(6) == pytest.approx(0.1) and s.lr_at(9) == pytest.approx(0.01)
    seen = [i for it in range(5) for i in batch_indices(10, 2, 0, it)]
    assert sorted(seen) == list(range(10))  # one epoch covers every image once
    assert batch_indices(10, 2, 0, 3) == batch_indices(10, 2, 0, 3)


def test_killed_training_resumes_to_identical_weights(street_canonical, tmp_path):
    full = _train_cli(street_canonical, tmp_path / "full.pt", tmp_path / "runs_full")
    assert full.wait(timeout=300) == 0, full.stdout.read()
    victim = _train_cli(street_canonical, tmp_path / "resumed.pt", tmp_path / "runs_resumed")
    deadline = time.time() + 240
    while not list((tmp_path / "runs_resumed").glob("*/last.pt")) and time.time() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "resumed.pt").exists()
    again = _train_cli(street_canonical, tmp_path / "resumed.pt", tmp_path / "runs_resumed")
    log = again.communicate(timeout=300)[0]
    assert again.returncode == 0, log
    assert "resuming" in log
    a, b = _weights(tmp_path / "full.pt"), _weights(tmp_path / "resumed.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    run = next((tmp_path / "runs_full").iterdir())
    assert (run / "loss.csv").exists() and (run / "loss.png").exists()
    assert len((run / "loss.csv").read_text().splitlines()) == 1 + PARAMS["stage"]["schedule"]["iterations"]


class _NaNModel(torch.nn.Module):
    variant = MODEL_PRESETS["maskrcnn_imp"]

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def freeze(self, parts):
        assert not parts

    def losses(self, images, targets, **kw):
        return {"loss_a": self.w * 1.0, "loss_b": self.w * float("nan") if self.w.item() < 0.999 else self.w * 0.0}


class _Data:
    def __len__(self):
        return 3

    def sample(self, i, rng):
        return torch.zeros(3, 4, 4), {}


def test_nan_loss_stops_with_iteration_and_terms(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"iteration 1: \{'loss_a': .*'loss_b': nan\}") as err:
        train(_NaNModel(), _Data(), TrainSpec(Schedule(iterations=5, lr=0.1), batch_size=1, checkpoint_every=1), tmp_path, progress=False)
    assert "last.pt" in str(err.value) and (tmp_path / "last.pt").exists()


def test_weights_that_become_non_finite_stop_training_at_the_checkpoint(tmp_path):
    model = torch.nn.Module()
    model.variant = MODEL_PRESETS["maskrcnn_imp"]
    model.w = torch.nn.Parameter(torch.full((1,), 1e38))
    model.losses = lambda images, targets, **kw: {"loss_a": model.w * 3e-38}  # 3.0: finite
    spec = TrainSpec(Schedule(iterations=3, lr=1e38, momentum=0.0, weight_decay=1.0), batch_size=1, checkpoint_every=1)
    # weight decay 1 at lr 1e38: w - lr * (grad + w) = 1e38 - 1e38 * 1e38 -> -inf after the first step;
    # the loss of that step (3.0) is finite, so only the weight check can catch it.
    with pytest.raises(TrainingDiverged, match=r"non-finite weights after iteration 1 \(1 parameter tensor\(s\), first w\); the last good checkpoint is kept at \(none yet\)"):
        train(model, _Data(), spec, tmp_path, progress=False)
    assert not (tmp_path / "last.pt").exists()  # nothing of the diverged weights was written


def test_stage2_init_keeps_stage1_weights(street_canonical):
    split = CanonicalSplit(street_canonical)
    from segfusion.training.checkpoint import init_from

    arch = ModelSpec(min_size=(64,), max_size=128)
    s1 = build_model(MODEL_PRESETS["maskrcnn_imp"], arch, split.classes)
    s2 = build_model(MODEL_PRESETS["panoptic_fpn_imp"], arch, split.classes)
    init_from(s2, s1.state_dict(), "stage1")
    for k, v in s1.state_dict().items():
        assert torch.equal(s2.state_dict()[k], v)
    s2.freeze(["backbone", "rpn", "roi_heads"])
    s2.train()
    assert not s2.detector.roi_heads.training and s2.head.training
    data = PanopticTrainingData(split)
    images, targets = zip(*[data.sample(i, np.random.default_rng(i)) for i in range(2)])
    losses = s2.losses(list(images), list(targets), train_detector=False)
    assert set(losses) == {"loss_semantic"} and torch.isfinite(losses["loss_semantic"])
    losses["loss_semantic"].backward()
    assert all(p.grad is None for p in s2.detector.parameters())
    assert any(p.grad is not None for p in s2.head.parameters())


def _short_run(data_dir, run_dir, validator=None, validate_every=None, data_workers=0, iterations=2):
    split = CanonicalSplit(data_dir)
    torch.manual_seed(PARAMS["seed"])
    model = build_model(MODEL_PRESETS["maskrcnn_imp"], ModelSpec(min_size=(64,), max_size=128), split.classes)
    spec = TrainSpec(Schedule(iterations=iterations, lr=0.01, warmup_iters=1), seed=PARAMS["seed"], batch_size=2, checkpoint_every=10,
                     validate_every=validate_every)  # fmt: skip
    history = train(model, PanopticTrainingData(split), spec, run_dir, progress=False, validator=validator, data_workers=data_workers)
    return model.state_dict(), history


def test_dataloader_workers_give_the_same_batches_and_weights(street_canonical, tmp_path):
    # batches are pure functions of (seed, iteration, slot): loading them in 2 worker processes
    # (random flips included) must not change a single loss or weight
    a, hist_a = _short_run(street_canonical, tmp_path / "thread", iterations=4)
    b, hist_b = _short_run(street_canonical, tmp_path / "workers", iterations=4, data_workers=2)
    assert [r["loss"] for r in hist_a] == [r["loss"] for r in hist_b]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_loaded_keeps_the_iteration_order_with_workers():
    from segfusion.training.loop import loaded

    def load(it):
        return [torch.from_numpy(np.random.default_rng(it).random(3))]

    direct = [(it, load(it)) for it in range(3, 11)]
    for workers in (0, 1, 3):
        got = list(loaded(load, range(3, 11), workers))
        assert [it for it, _ in got] == list(range(3, 11)), workers
        assert all(torch.equal(b[0], d[0]) for (_, b), (_, d) in zip(got, direct)), workers


def test_same_seed_gives_identical_weights_and_validation_changes_nothing(street_canonical, tmp_path):
    from segfusion.training.validation import Validator

    a, hist_a = _short_run(street_canonical, tmp_path / "a")
    b, hist_b = _short_run(street_canonical, tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["loss"] for r in hist_a] == [r["loss"] for r in hist_b]
    # Validating every iteration (model.predict inside fork_rng) leaves the trajectory alone.
    c, _ = _short_run(street_canonical, tmp_path / "c", Validator(CanonicalSplit(street_canonical), stage=1, batch_size=3), validate_every=1)
    for k in a:
        assert torch.equal(a[k], c[k]), k
    rows = (tmp_path / "c" / "val.csv").read_text().splitlines()
    assert rows[0].startswith("iteration,ap_mask,") and [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
    assert (tmp_path / "c" / "val.png").stat().st_size > 1000


def test_unknown_loss_weight_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"unknown loss terms \['loss_clasifier'\].*loss_a"):
        train(_NaNModel(), _Data(), TrainSpec(Schedule(iterations=2, lr=0.1), batch_size=1, loss_weights={"loss_clasifier": 0.5}), tmp_path, progress=False)


def test_a_model_without_detector_freezes_its_backbone_and_skips_detector_parts(street_canonical):
    split = CanonicalSplit(street_canonical)
    model = build_model(MODEL_PRESETS["semantic_ppm"], ModelSpec(min_size=(64,), max_size=128), split.classes)
    assert model.freeze(("backbone", "rpn", "roi_heads")) == ("rpn", "roi_heads")
    assert model.frozen == ("backbone",)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    with pytest.raises(ValueError, match="cannot freeze 'roi_head'"):
        model.freeze(("roi_head",))
