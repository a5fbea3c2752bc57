"""The training loop shared by both stages: SGD, warm-up + step schedule, resume, divergence guard,
data-parallel training (DDP), validation with keep-best.

Batches are a pure function of (seed, iteration): image order is a seeded permutation per
epoch and augmentation draws from ``default_rng([seed, iteration, slot])``; the torch RNG
(RPN/RoI sampling, multi-scale choice) of every rank is saved in every checkpoint. So a killed
run that resumes from its last checkpoint ends with the same weights as an uninterrupted one,
and two runs of the same config and seed on the CPU end with identical weights.

With several processes (torchrun, see `segfusion.training.distributed`) rank r trains on its
slice of the same global batch; only rank 0 writes checkpoints, CSVs and plots, and every rank
resumes from the same ``last.pt``.

Validation (optional, `segfusion.training.validation`) runs every ``validate_every``
iterations and after the last one, inside `torch.random.fork_rng`, so validating never changes
the trained weights. ``keep_best`` keeps the weights of the best validation in ``best.pt``
and loads them into the model at the end: the final model file is then the best checkpoint,
not the last one.

Schedule: SGD with momentum, linear warm-up and step decay, the Mask R-CNN / Panoptic FPN
recipe that the IMP paper follows for both stages (Sec. 4.1: "we follow the Mask R-CNN
training settings", lr dropped by 0.1 at fixed iterations).
"""

from __future__ import annotations

import csv
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.utils.data
from tqdm import tqdm

from segfusion.io.atomic import atomic_path, save_figure
from segfusion.specs import TrainSpec
from segfusion.training.checkpoint import load_checkpoint, save_best, save_checkpoint
from segfusion.training.distributed import (
    DistContext,
    all_gather,
    all_mean,
    barrier,
    check_in_sync,
    rank_seed,
    rank_slice,
    sync_buffers,
    wrap,
)

LOG_SECONDS = 30.0
"""Seconds between progress lines when the output is not a terminal (a log file)."""


class TrainingDiverged(ValueError):
    """A non-finite loss, or weights that became non-finite: the message gives the iteration,
    the loss terms or the first bad parameter, and the kept checkpoint."""


def batch_indices(n: int, batch_size: int, seed: int, iteration: int) -> list[int]:
    """Image indices of one batch: epoch-wise seeded permutations, consumed in order."""
    out = []
    start = iteration * batch_size
    for pos in range(start, start + batch_size):
        epoch, k = divmod(pos, n)
        out.append(int(np.random.default_rng([seed, epoch]).permutation(n)[k]))
    return out


def _rng_state(ctx: DistContext) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if ctx.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(ctx.device)
    return state


def _set_rng_state(state: dict, ctx: DistContext) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and ctx.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], ctx.device)


def prefetched(load, iterations):
    """Yield ``(it, load(it))`` for each iteration while ``load(it + 1)`` runs in a background thread.

    Overlaps data loading (PNG decoding, targets, augmentation) with the training step inside
    the training process (``data_workers=0``). At most one batch is loaded ahead.
    """
    its = list(iterations)
    if not its:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="segfusion-data") as pool:
        pending = pool.submit(load, its[0])
        for k, it in enumerate(its):
            batch = pending.result()
            if k + 1 < len(its):
                pending = pool.submit(load, its[k + 1])
            yield it, batch


class _IterationBatches(torch.utils.data.Dataset):
    """Item k is ``(its[k], load(its[k]))``: a map-style dataset over iterations for a DataLoader."""

    def __init__(self, load, its):
        self.load, self.its = load, its

    def __len__(self) -> int:
        return len(self.its)

    def __getitem__(self, k: int):
        return self.its[k], self.load(self.its[k])


def _as_is(batch):
    return batch


def loaded(load, iterations, workers: int):
    """``(it, load(it))`` for each iteration, loaded ahead by ``workers`` DataLoader worker
    processes (two batches each), or by one thread (`prefetched`) when ``workers`` is 0.

    Every batch is a pure function of (seed, iteration, slot) (`_load_batch` seeds each sample's
    generator), so the worker count and torch's per-worker seeds never change a batch; the
    DataLoader keeps the iteration order. Workers are forked, so ``load`` needs no pickling. The
    DataLoader draws its workers' base seed from its own generator: drawn from the global torch
    RNG it would shift the RPN / RoI sampling of training.
    """
    its = list(iterations)
    if workers == 0 or not its:
        yield from prefetched(load, its)
        return
    context = "fork" if "fork" in torch.multiprocessing.get_all_start_methods() else None
    loader = torch.utils.data.DataLoader(_IterationBatches(load, its), batch_size=None, shuffle=False, num_workers=workers,
                                         collate_fn=_as_is, prefetch_factor=2, multiprocessing_context=context,
                                         generator=torch.Generator().manual_seed(0))  # fmt: skip
    yield from loader


def _to(device: torch.device, sample: tuple) -> tuple:
    image, target = sample
    return image.to(device), {k: v.to(device) for k, v in target.items()}


@dataclass
class _Run:
    """The mutable state of one training run: where it is, what it logged, the best validation."""

    start: int = 0
    history: list = field(default_factory=list)
    val_history: list = field(default_factory=list)
    best_value: float | None = None


def train(
    model, data, spec: TrainSpec, run_dir: Path, progress: bool = True, validator=None, ctx: DistContext | None = None, trunks=None,
    data_workers: int = 0,
) -> list[dict]:
    """Train ``model`` in place with ``spec``; checkpoints, loss.csv (and val.csv, val.png, best.pt) go to ``run_dir``.

    ``model`` has ``losses(images, targets, **options) -> {term: loss}`` and a ``variant``
    (whether it has a detector); its frozen parts are frozen already (`PanopticModel.freeze`
    with ``spec.freeze``). ``validator(model, ctx) -> dict`` (a
    `segfusion.training.validation.Validator`) scores the model; its ``metric`` key is the
    one ``keep_best`` maximises. ``ctx`` is the distributed context (default: the
    initialised process group, or one process on the CPU). ``trunks``: a
    `segfusion.training.trunk_cache.TrunkCache` when stage 2 runs on a frozen trunk (``data``
    then also gives each sample's flip, `PanopticTrainingData.flip_of`). ``data_workers``:
    DataLoader worker processes loading the batches (`loaded`; 0 = one thread). Returns the
    loss history (identical on every rank).
    """
    ctx = ctx or DistContext.current()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec.check_processes(ctx.world_size)  # fail early on an indivisible batch
    if spec.validate_every is not None and validator is None:
        raise ValueError("validate_every is set but no validation split was given (--val-data)")
    torch.manual_seed(rank_seed(spec.seed, ctx.rank))
    model.to(ctx.device)
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=spec.schedule.lr, momentum=spec.schedule.momentum, weight_decay=spec.schedule.weight_decay
    )
    run = _resume(model, optimizer, run_dir, getattr(validator, "metric", None), ctx)
    net = wrap(model, ctx)
    model.train()
    progress_log = _Progress(spec, run.start, enabled=progress and ctx.is_main)
    t_wait = time.perf_counter()
    batches = loaded(lambda i: _load_batch(data, spec, i, ctx, trunks is not None), range(run.start, spec.schedule.iterations), data_workers)
    for it, batch in progress_log.wrap(batches):
        row = _step(model, net, optimizer, spec, it, batch, ctx, run_dir / "last.pt", trunks)
        row["seconds"] = time.perf_counter() - t_wait  # includes waiting for the batch when loading is slower
        run.history.append(row)
        progress_log.update(row)
        done = it + 1
        if validator is not None and ((spec.validate_every and done % spec.validate_every == 0) or done == spec.schedule.iterations):
            _validate(model, validator, spec, run, done, run_dir, ctx, progress_log)
        if done % spec.checkpoint_every == 0 or done == spec.schedule.iterations:
            _checkpoint(model, optimizer, run, done, run_dir, ctx)
        t_wait = time.perf_counter()
    progress_log.close()
    sync_buffers(model, ctx)
    check_in_sync(model, ctx)
    if spec.keep_best:
        _load_best(model, run_dir / "best.pt", ctx)
    return run.history


def _resume(model, optimizer, run_dir: Path, metric: str | None, ctx: DistContext) -> _Run:
    """Load ``last.pt`` of ``run_dir`` when there is one (weights, optimizer, RNG, histories)."""
    run = _Run()
    last, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if last.exists():
        state = load_checkpoint(last)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        run.start, run.history = state["iteration"], state["history"]
        run.val_history = list(state.get("val_history", []))
        ranks = state.get("rng_ranks")
        if ranks and state.get("world_size", 1) == ctx.world_size:
            _set_rng_state(ranks[ctx.rank], ctx)
        elif ctx.rank == 0 and state.get("world_size", 1) == 1:
            torch.set_rng_state(state["torch_rng"])
        elif ctx.is_main:
            print(f"warning: {last} was written by {state.get('world_size', 1)} processes, this run has {ctx.world_size}: "
                  "the resumed run is not bit-identical to an uninterrupted one", flush=True)
        if ctx.is_main:
            print(f"resuming {run_dir} from iteration {run.start}", flush=True)
    for row in run.val_history:
        if _better(row.get(metric), run.best_value):
            run.best_value = row[metric]
    if ctx.is_main and best_path.exists() and load_checkpoint(best_path)["iteration"] > run.start:
        best_path.unlink()  # written after the checkpoint we resume from: recomputed
    return run


def _load_batch(data, spec: TrainSpec, it: int, ctx: DistContext, with_keys: bool = False) -> list:
    """This rank's samples of iteration ``it``: a pure function of (seed, iteration).

    Each is ``(image, target)``, or ``(image, target, index, flip)`` with ``with_keys``."""
    slots = list(enumerate(batch_indices(len(data), spec.batch_size, spec.seed, it)))
    out = []
    for slot, i in rank_slice(slots, ctx):
        seed = [spec.seed, it, slot]
        sample = data.sample(i, np.random.default_rng(seed))
        out.append((*sample, i, data.flip_of(i, np.random.default_rng(seed))) if with_keys else sample)
    return out


def _step(model, net, optimizer, spec: TrainSpec, it: int, batch: list, ctx: DistContext, last: Path, trunks=None) -> dict:
    """One SGD step; returns the logged row (losses averaged over ranks). A non-finite loss
    raises `TrainingDiverged` before the weights change."""
    lr = spec.schedule.lr_at(it)
    for group in optimizer.param_groups:
        group["lr"] = lr
    samples = [_to(ctx.device, s[:2]) for s in batch]
    images, targets = [s[0] for s in samples], [s[1] for s in samples]
    kwargs = {"train_detector": spec.trains_detector(model.variant), "imp_end_to_end": spec.imp_end_to_end, "bootstrap_fraction": spec.bootstrap_fraction}
    if trunks is not None:
        kwargs["trunks"] = [trunks.get(s[2], s[3], image) for s, image in zip(batch, images)]
    terms = net(images, targets, **kwargs) if ctx.enabled else model.losses(images, targets, **kwargs)
    unknown = sorted(set(spec.loss_weights) - set(terms))
    if unknown:  # a typo in loss_weights would otherwise be silently ignored
        raise ValueError(f"loss_weights: unknown loss terms {unknown}; this model's terms are {sorted(terms)}")
    total = sum(spec.loss_weights.get(k, 1.0) * v for k, v in terms.items())
    keys = list(terms)
    logged = all_mean(torch.stack([total.detach().float().reshape(())] + [terms[k].detach().float().reshape(()) for k in keys]), ctx)
    values = {k: float(v) for k, v in zip(keys, logged[1:])}
    if not math.isfinite(float(logged[0])):
        raise TrainingDiverged(
            f"non-finite loss at iteration {it}: {values}; the last good checkpoint is kept at {last if last.exists() else '(none yet)'}"
        )
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return {"iteration": it, "lr": lr, "loss": float(logged[0]), **values}


def _validate(model, validator, spec: TrainSpec, run: _Run, done: int, run_dir: Path, ctx: DistContext, progress_log) -> None:
    """Score the model without touching its RNG; keep its weights in best.pt when they are the best."""
    _check_weights(model, done, run_dir)  # a diverged model would fail inside the validator, obscurely
    cuda_devices = [ctx.device] if ctx.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        result = validator(model, ctx)
    model.train()
    run.val_history.append({"iteration": done, **result})
    metric = validator.metric
    improved = spec.keep_best and _better(result.get(metric), run.best_value)
    if improved:
        run.best_value = result[metric]
    if not ctx.is_main:
        return
    write_csv(run_dir / "val.csv", run.val_history)
    from segfusion.training.validation import plot_validation

    plot_validation(run_dir / "val.png", run.val_history, metric, f"validation {metric}")
    if improved:
        save_best(run_dir / "best.pt", model, done, metric, run.best_value)
    value = result.get(metric)
    progress_log.write(f"validation after {done} iterations: {metric} = {'n/a' if value is None else f'{value:.4f}'}" + (" (best so far)" if improved else ""))


def _check_weights(model, done: int, run_dir: Path) -> None:
    """`TrainingDiverged` naming the iteration and the first non-finite parameter, if any
    (checked before every validation and checkpoint, not every step: a pass over all weights)."""
    bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        last = run_dir / "last.pt"
        raise TrainingDiverged(
            f"non-finite weights after iteration {done} ({len(bad)} parameter tensor(s), first {bad[0]}); "
            f"the last good checkpoint is kept at {last if last.exists() else '(none yet)'}"
        )


def _checkpoint(model, optimizer, run: _Run, done: int, run_dir: Path, ctx: DistContext) -> None:
    """``last.pt`` (every rank's RNG state included) and loss.csv, written by rank 0.

    Non-finite weights raise `TrainingDiverged` instead: a loss check alone lets the last
    steps' divergence through (the loss of a step is finite, the update it makes is not; found
    by `make smoke`, whose untrained networks at the preset's learning rate produced a model of
    NaN weights that only failed at prediction). The previous ``last.pt`` is kept."""
    _check_weights(model, done, run_dir)
    rng_ranks = all_gather(_rng_state(ctx), ctx)
    if ctx.is_main:
        save_checkpoint(run_dir / "last.pt", model, optimizer, done, run.history, rng_ranks=rng_ranks, world_size=ctx.world_size, val_history=run.val_history)
        write_csv(run_dir / "loss.csv", run.history)


def _load_best(model, best_path: Path, ctx: DistContext) -> None:
    """keep_best: the final weights are those of ``best.pt`` when a validation gave a value."""
    barrier(ctx)
    if best_path.exists():
        best = load_checkpoint(best_path)
        model.load_state_dict(best["model"])
        if ctx.is_main:
            print(f"keep_best: final weights are those of iteration {best['iteration']} ({best['metric']} = {best['value']:.4f})", flush=True)
    elif ctx.is_main:
        print("keep_best: no validation gave a value; the final weights are the last ones", flush=True)


class _Progress:
    """A tqdm bar on a terminal; on a log file (Snakemake's {log}) one plain line every
    `LOG_SECONDS` with loss, lr, it/s and ETA, instead of carriage-return updates."""

    def __init__(self, spec: TrainSpec, start: int, enabled: bool):
        self.total, self.batch_size, self.start = spec.schedule.iterations, spec.batch_size, start
        interactive = sys.stderr.isatty()
        self.log_lines = enabled and not interactive
        self.bar_enabled = enabled and interactive
        self.t_start, self.last_line = time.perf_counter(), -math.inf
        self.bar = None

    def wrap(self, iterable):
        self.bar = tqdm(iterable, initial=self.start, total=self.total, disable=not self.bar_enabled, desc="train", unit="it")
        return self.bar

    def update(self, row: dict) -> None:
        self.bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.2g}", refresh=False)
        done, now = row["iteration"] + 1, time.perf_counter()
        if self.log_lines and (now - self.last_line >= LOG_SECONDS or done == self.total):
            self.last_line = now
            rate = (done - self.start) / max(now - self.t_start, 1e-9)
            eta = tqdm.format_interval((self.total - done) / rate) if rate > 0 else "?"
            print(f"train {done}/{self.total} loss {row['loss']:.4f} lr {row['lr']:.3g} | {rate:.2f} it/s, "
                  f"{rate * self.batch_size:.1f} images/s, ETA {eta}", flush=True)

    def write(self, line: str) -> None:
        self.bar.write(line, file=sys.stdout)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _better(value, best) -> bool:
    from segfusion.training.validation import is_better

    return is_better(value, best)


def read_best(run_dir: Path) -> dict | None:
    """{"iteration", "metric", "value"} of ``best.pt`` in ``run_dir``, or None."""
    path = Path(run_dir) / "best.pt"
    if not path.exists():
        return None
    state = load_checkpoint(path)
    return {k: state[k] for k in ("iteration", "metric", "value")}


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows (dicts) as CSV with the union of their keys as columns, in first-seen order."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def write_loss_csv(path: Path, history: list[dict]) -> None:
    """The loss history (every term, lr, seconds per iteration) as CSV."""
    write_csv(path, history)


def plot_loss(path: Path, history: list[dict], title: str) -> None:
    """Loss curves (every term, smoothed) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    keys = [k for k in history[-1] if k.startswith("loss")]
    its = np.array([r["iteration"] for r in history])
    fig, ax = plt.subplots(figsize=(7, 4))
    for k in keys:
        vals = np.array([r.get(k, np.nan) for r in history], float)
        win = max(1, len(vals) // 30)
        smooth = np.convolve(np.nan_to_num(vals), np.ones(win) / win, mode="valid")
        ax.plot(its[win - 1 :], smooth, label=k, lw=2 if k == "loss" else 1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
