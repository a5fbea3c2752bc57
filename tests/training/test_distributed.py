"""Data-parallel training: two CPU processes on gloo end with identical, finite weights."""

import os
import socket

import pytest

torch = pytest.importorskip("torch")

from segfusion.specs import MODEL_PRESETS  # noqa: E402
from segfusion.training.distributed import DistContext, rank_seed, rank_slice  # noqa: E402

ARCH = {"min_size": (64,), "max_size": 128}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _build(data_dir):
    from segfusion.datasets.canonical import CanonicalSplit
    from segfusion.datasets.torch_dataset import PanopticTrainingData
    from segfusion.models.build import build_model
    from segfusion.specs import ModelSpec

    split = CanonicalSplit(data_dir)
    torch.manual_seed(5)
    model = build_model(MODEL_PRESETS["maskrcnn_imp"], ModelSpec(**ARCH), split.classes)
    return model, PanopticTrainingData(split)


class _Linear(torch.nn.Module):
    """Least squares: each rank's loss is the mean over its images, so DDP's gradient average
    is exactly the gradient of the mean over the global batch (one process)."""

    variant = MODEL_PRESETS["maskrcnn_imp"]  # the loop asks whether a detector trains

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))

    def losses(self, images, targets, **kw):
        x, y = torch.stack(images), torch.stack([t["y"] for t in targets])
        return {"loss_fit": ((x @ self.w - y) ** 2).mean()}

    forward = losses


class _Points:
    def __len__(self):
        return 8

    def sample(self, i, rng):
        x = torch.tensor([1.0, i, (i * 7) % 5], dtype=torch.float64)
        return x, {"y": x @ torch.tensor([0.5, -0.2, 0.3], dtype=torch.float64) + 0.01 * i}


def _linear_run(run_dir, ctx=None):
    from segfusion.specs import Schedule, TrainSpec
    from segfusion.training.loop import train

    model = _Linear()
    train(model, _Points(), TrainSpec(Schedule(iterations=5, lr=0.02), seed=3, batch_size=4, checkpoint_every=5), run_dir, progress=False, ctx=ctx)
    return model.w.detach()


def _worker(rank, world, port, data_dir, val_dir, run_dir, out_dir):
    """One training process (what torchrun would start): join the group, train, save its weights."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from segfusion.datasets.canonical import CanonicalSplit
    from segfusion.specs import Schedule, TrainSpec
    from segfusion.training.distributed import init_distributed, shutdown
    from segfusion.training.loop import train
    from segfusion.training.validation import Validator

    ctx = init_distributed("gloo", "cpu")
    try:
        assert (ctx.rank, ctx.world_size) == (rank, world)
        model, data = _build(data_dir)
        validator = Validator(CanonicalSplit(val_dir), stage=1, batch_size=2)
        train(model, data, TrainSpec(Schedule(iterations=3, lr=0.01), seed=2, batch_size=2, checkpoint_every=1), run_dir,
              progress=False, validator=validator, ctx=ctx)
        torch.save(model.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
        torch.save(_linear_run(os.path.join(out_dir, "linear"), ctx), os.path.join(out_dir, f"linear{rank}.pt"))
    finally:
        shutdown(ctx)


@pytest.fixture(scope="module")
def street_val(street_raw, tmp_path_factory):
    from segfusion.datasets.registry import convert

    out = tmp_path_factory.mktemp("canonical_val") / "val"
    convert("cityscapes", street_raw, "val", out)
    return out


def test_rank_slices_partition_the_global_batch():
    batch = [7, 3, 5, 1]
    parts = [rank_slice(batch, DistContext(rank=r, world_size=2)) for r in range(2)]
    assert parts == [[7, 3], [5, 1]]
    with pytest.raises(ValueError, match="not divisible"):
        rank_slice([1, 2, 3], DistContext(rank=0, world_size=2))
    assert rank_seed(4, 0) == 4 and rank_seed(4, 1) != rank_seed(4, 2)


@pytest.mark.timeout(300)  # a deadlocked collective would otherwise hang the suite
def test_two_gloo_processes_end_with_identical_weights(street_canonical, street_val, tmp_path):
    from segfusion.specs import Schedule, TrainSpec
    from segfusion.training.checkpoint import load_checkpoint
    from segfusion.training.loop import train

    run_dir = tmp_path / "run"
    # One single-process iteration first: both ranks must resume from this same checkpoint.
    model, data = _build(street_canonical)
    train(model, data, TrainSpec(Schedule(iterations=1, lr=0.01), seed=2, batch_size=2, checkpoint_every=1), run_dir, progress=False)
    after_one = {k: v.clone() for k, v in model.state_dict().items()}

    # fork: the children inherit the imported modules (spawn would re-import torch in each).
    torch.multiprocessing.start_processes(
        _worker, args=(2, _free_port(), street_canonical, street_val, run_dir, tmp_path), nprocs=2, join=True, start_method="fork"
    )

    w0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert w0.keys() == w1.keys() == after_one.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
        assert torch.isfinite(w0[k].float()).all(), k
    assert any(not torch.equal(w0[k], after_one[k]) for k in w0), "the two DDP iterations changed nothing"
    state = load_checkpoint(run_dir / "last.pt")
    assert state["iteration"] == 3 and state["world_size"] == 2 and len(state["rng_ranks"]) == 2
    assert all(torch.equal(state["model"][k], w0[k]) for k in w0)  # rank 0 wrote the checkpoint
    assert len((run_dir / "loss.csv").read_text().splitlines()) == 1 + 3  # one resumed history
    val = (run_dir / "val.csv").read_text().splitlines()
    assert len(val) == 2 and val[0].startswith("iteration,ap_mask")
    assert val[1].split(",")[val[0].split(",").index("n_images")] == "3"  # 2 + 1 images merged over the ranks
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("rank")) == ["rank0.pt", "rank1.pt"]
    # Gradient averaging: 2 ranks x 2 images give the weights of one process on the 4 images.
    lin0 = torch.load(tmp_path / "linear0.pt", weights_only=False)
    lin1 = torch.load(tmp_path / "linear1.pt", weights_only=False)
    single = _linear_run(tmp_path / "linear_single")
    assert torch.equal(lin0, lin1) and not torch.equal(single, torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(lin0, single, rtol=1e-12, atol=1e-12)
