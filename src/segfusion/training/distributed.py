"""Data-parallel training with torch DistributedDataParallel (DDP), one process per device.

Launch: ``torchrun --standalone --nproc_per_node N -m segfusion.cli train ...`` (one node) or
``srun torchrun --nnodes M --rdzv_backend c10d ...`` (several SLURM nodes). torchrun exports
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; `init_distributed`
reads them (``init_method="env://"``, the default of `torch.distributed.init_process_group`).
Without them (a plain ``segfusion train``) everything here is a no-op for one process.

How the loop uses it (choices, following the usual DDP recipe of the PyTorch documentation
"Getting started with DistributedDataParallel"):

* the global batch of an iteration is ``batch_size`` images chosen by the deterministic
  `segfusion.training.loop.batch_indices`; rank r takes the contiguous slice
  ``[r * b, (r + 1) * b)`` with ``b = batch_size / world_size`` (`rank_slice`), so the ranks
  see disjoint images and together exactly the images of a one-process run;
* gradients are averaged over ranks by DDP during ``backward`` (DDP only hooks parameters used
  by ``forward``, which is why `PanopticModel.forward` dispatches to ``losses``);
  frozen parts have ``requires_grad=False`` and are not hooked, and every trainable
  parameter of our models takes part in every loss (Mask R-CNN's mask loss is a zero-weighted
  sum without positive RoIs), so DDP runs with ``find_unused_parameters=False`` (no extra
  graph traversal per step, no warning); a custom model that leaves trainable parameters
  out of a step needs config ``train.find_unused_parameters: true`` (DDP otherwise fails at
  the next step saying which parameters got no gradient);
* each rank's losses are normalised over its own images (Mask R-CNN's sampled RoIs, the
  semantic pixels) and the gradients are then averaged, as detectron2 and torchvision's
  reference scripts do; a multi-process run is therefore not bit-identical to a one-process
  run of the same global batch, only equivalent in expectation;
* logged loss terms are averaged over ranks (`all_mean`), so every rank takes the same
  non-finite-loss decision and none is left waiting in a collective.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from segfusion.specs import BACKENDS, DEVICES  # noqa: E402  (the torch-free registries of names)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job: rank, world size, local rank and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    find_unused_parameters: bool = False

    @property
    def enabled(self) -> bool:
        """True when several processes train together (collectives are needed)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, CSVs, plots and the final model."""
        return self.rank == 0

    @classmethod
    def current(cls, device: torch.device | None = None) -> "DistContext":
        """The context of an already initialised process group (or one process)."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), device or torch.device("cpu"))
        return cls(device=device or torch.device("cpu"))


def env_ranks(environ: dict | None = None) -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment variables; (0, 1, 0) without them."""
    env = os.environ if environ is None else environ
    try:
        rank = int(env.get("RANK", 0))
        world = int(env.get("WORLD_SIZE", 1))
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError as err:
        raise ValueError(f"bad torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK): {err}") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return rank, world, local


def resolve_backend(name: str) -> str:
    """``auto`` is nccl when CUDA is available, else gloo (the two backends DDP supports here)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown distributed backend {name!r}; choose one of {BACKENDS}")
    if name == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    return name


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` is ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU."""
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; choose one of {DEVICES}")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(backend: str = "auto", device: str = "auto", find_unused_parameters: bool = False) -> DistContext:
    """Join the process group described by the environment (torchrun); one process without it.
    ``find_unused_parameters`` is passed to DDP (`wrap`)."""
    rank, world, local = env_ranks()
    dev = resolve_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        chosen = resolve_backend(backend)
        if chosen == "nccl" and dev.type != "cuda":
            raise ValueError("backend 'nccl' needs CUDA devices; use backend 'gloo' for CPU training")
        dist.init_process_group(chosen, rank=rank, world_size=world)
    return DistContext(rank, world, local, dev, find_unused_parameters)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (after the last collective)."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def rank_slice(items: list, ctx: DistContext) -> list:
    """This rank's contiguous share of a global batch (the batch size must divide evenly)."""
    if len(items) % ctx.world_size:
        raise ValueError(f"batch_size {len(items)} is not divisible by the {ctx.world_size} training processes")
    per = len(items) // ctx.world_size
    return items[ctx.rank * per : (ctx.rank + 1) * per]


def rank_seed(seed: int, rank: int) -> int:
    """The torch seed of a rank: ``seed`` itself on rank 0 (a one-process run is unchanged),
    an independent stream from ``SeedSequence([seed, rank])`` on the others."""
    if rank == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def wrap(model: nn.Module, ctx: DistContext) -> nn.Module:
    """The module the loop calls: DDP over ``model`` with several processes, else ``model``."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if getattr(getattr(model, "spec", None), "resolved_norm", None) == "sync_bn":
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # batch statistics over every process
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=ctx.find_unused_parameters)


def all_mean(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Element-wise mean over ranks (a copy; the input is left alone)."""
    out = values.detach().clone().to(ctx.device)
    if ctx.enabled:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= ctx.world_size
    return out.cpu()


def all_gather(obj, ctx: DistContext) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not ctx.enabled:
        return [obj]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj, ctx: DistContext):
    """Rank 0's ``obj`` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def sync_buffers(model: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (e.g. BatchNorm running statistics) to every rank."""
    if ctx.enabled:
        for buf in model.buffers():
            dist.broadcast(buf.data, src=0)


def check_in_sync(model: nn.Module, ctx: DistContext) -> float:
    """Largest absolute difference between this rank's parameters and rank 0's, over all ranks.

    Raises RuntimeError when the ranks disagree (a DDP bug or a non-deterministic reduction
    would make the saved rank-0 model differ from what the other ranks trained).
    """
    if not ctx.enabled:
        return 0.0
    worst = torch.zeros((), dtype=torch.float64, device=ctx.device)
    for p in model.parameters():
        ref = p.detach().clone()
        dist.broadcast(ref, src=0)
        worst = torch.maximum(worst, (p.detach() - ref).abs().max().double() if p.numel() else worst)
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    diff = float(worst)
    if diff != 0.0:
        raise RuntimeError(f"training processes ended with different weights (max |difference| {diff:g})")
    return diff
