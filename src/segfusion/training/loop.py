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
from tqdm import tqdm

from segfusion.io.atomic import atomic_path, save_figure
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


class TrainingDiverged(RuntimeError):
    """A non-finite loss: the message gives the iteration, the loss terms and the kept checkpoint."""


@dataclass(frozen=True)
class Schedule:
    """SGD with momentum, linear warm-up, step decay (Mask R-CNN / Panoptic FPN recipe)."""

    iterations: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 0
    warmup_factor: float = 0.001
    steps: tuple[int, ...] = ()
    gamma: float = 0.1

    def lr_at(self, it: int) -> float:
        factor = self.gamma ** sum(it >= s for s in self.steps)
        if it < self.warmup_iters:
            alpha = it / self.warmup_iters
            factor *= self.warmup_factor * (1 - alpha) + alpha
        return self.lr * factor


@dataclass(frozen=True)
class LoopOptions:
    """Loop settings of one stage (config ``stage1`` / ``stage2`` minus the schedule).

    batch_size:     global batch (all processes together); must divide by the process count.
    validate_every: validate every K iterations (and after the last); None = only after the
                    last, and only when a validator is given.
    keep_best:      the final weights are those of the best validation (needs validate_every).
    """

    seed: int = 0
    batch_size: int = 4
    checkpoint_every: int = 50
    loss_weights: dict = field(default_factory=dict)  # term -> weight, default 1
    train_detector: bool = True
    imp_end_to_end: bool = False
    bootstrap_fraction: float = 1.0
    validate_every: int | None = None
    keep_best: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError(f"batch_size and checkpoint_every must be >= 1, got {self.batch_size} and {self.checkpoint_every}")
        if self.validate_every is not None and self.validate_every < 1:
            raise ValueError(f"validate_every must be >= 1 (or null), got {self.validate_every}")
        if self.keep_best and self.validate_every is None:
            raise ValueError("keep_best needs validate_every (and a validation split)")


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

    Overlaps data loading (PNG decoding, targets, augmentation) with the training step, as a
    DataLoader worker would. Batches are pure functions of the iteration, so prefetching does
    not change them; at most one batch is loaded ahead.
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


def _to(device: torch.device, sample: tuple) -> tuple:
    image, target = sample
    return image.to(device), {k: v.to(device) for k, v in target.items()}


def train(
    model,
    data,
    schedule: Schedule,
    options: LoopOptions,
    run_dir: Path,
    progress: bool = True,
    validator=None,
    ctx: DistContext | None = None,
) -> list[dict]:
    """Train ``model`` in place; checkpoints, loss.csv (and val.csv, val.png, best.pt) go to ``run_dir``.

    ``validator(model, ctx) -> dict`` (a `segfusion.training.validation.Validator`) scores the
    model; its ``metric`` key is the one ``keep_best`` maximises. ``ctx`` is the distributed
    context (default: the initialised process group, or one process on the CPU). Returns the
    loss history (identical on every rank).
    """
    ctx = ctx or DistContext.current()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rank_slice(list(range(options.batch_size)), ctx)  # fail early on an indivisible batch
    if options.validate_every is not None and validator is None:
        raise ValueError("validate_every is set but no validation split was given (--val-data)")
    torch.manual_seed(rank_seed(options.seed, ctx.rank))
    model.to(ctx.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=schedule.lr, momentum=schedule.momentum, weight_decay=schedule.weight_decay)
    start, history, val_history = 0, [], []
    last, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if last.exists():
        state = load_checkpoint(last)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, history = state["iteration"], state["history"]
        val_history = list(state.get("val_history", []))
        ranks = state.get("rng_ranks")
        if ranks and state.get("world_size", 1) == ctx.world_size:
            _set_rng_state(ranks[ctx.rank], ctx)
        elif ctx.rank == 0 and state.get("world_size", 1) == 1:
            torch.set_rng_state(state["torch_rng"])
        elif ctx.is_main:
            print(f"warning: {last} was written by {state.get('world_size', 1)} processes, this run has {ctx.world_size}: "
                  "the resumed run is not bit-identical to an uninterrupted one", flush=True)
        if ctx.is_main:
            print(f"resuming {run_dir} from iteration {start}", flush=True)
    metric = getattr(validator, "metric", None)
    best_value = None
    for row in val_history:
        if _better(row.get(metric), best_value):
            best_value = row[metric]
    if ctx.is_main and best_path.exists() and load_checkpoint(best_path)["iteration"] > start:
        best_path.unlink()  # written after the checkpoint we resume from: recomputed below
    net = wrap(model, ctx)
    model.train()
    cuda_devices = [ctx.device] if ctx.device.type == "cuda" else []
    # A terminal gets a tqdm bar (loss, lr, it/s, ETA); a log file (Snakemake's {log}) gets one
    # plain line every LOG_SECONDS with the same figures, instead of carriage-return updates.
    interactive = sys.stderr.isatty()

    def load(it: int) -> list:
        slots = list(enumerate(batch_indices(len(data), options.batch_size, options.seed, it)))
        return [data.sample(i, np.random.default_rng([options.seed, it, slot])) for slot, i in rank_slice(slots, ctx)]

    bar = tqdm(
        prefetched(load, range(start, schedule.iterations)),
        initial=start,
        total=schedule.iterations,
        disable=not (progress and ctx.is_main and interactive),
        desc="train",
        unit="it",
    )
    log_lines = progress and ctx.is_main and not interactive
    t_start, last_line = time.perf_counter(), -math.inf
    kwargs = {"train_detector": options.train_detector, "imp_end_to_end": options.imp_end_to_end, "bootstrap_fraction": options.bootstrap_fraction}
    t_wait = time.perf_counter()
    for it, batch in bar:
        t0 = t_wait  # includes waiting for the batch when loading is slower than training
        lr = schedule.lr_at(it)
        for group in optimizer.param_groups:
            group["lr"] = lr
        samples = [_to(ctx.device, s) for s in batch]
        images = [s[0] for s in samples]
        targets = [s[1] for s in samples]
        terms = net(images, targets, **kwargs) if ctx.enabled else model.losses(images, targets, **kwargs)
        unknown = sorted(set(options.loss_weights) - set(terms))
        if unknown:  # a typo in loss_weights would otherwise be silently ignored
            raise ValueError(f"loss_weights: unknown loss terms {unknown}; this model's terms are {sorted(terms)}")
        total = sum(options.loss_weights.get(k, 1.0) * v for k, v in terms.items())
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
        row = {"iteration": it, "lr": lr, "loss": float(logged[0]), **values, "seconds": time.perf_counter() - t0}
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{lr:.2g}", refresh=False)
        done = it + 1
        now = time.perf_counter()
        if log_lines and (now - last_line >= LOG_SECONDS or done == schedule.iterations):
            last_line = now
            rate = (done - start) / max(now - t_start, 1e-9)
            eta = tqdm.format_interval((schedule.iterations - done) / rate) if rate > 0 else "?"
            print(f"train {done}/{schedule.iterations} loss {row['loss']:.4f} lr {lr:.3g} | {rate:.2f} it/s, "
                  f"{rate * options.batch_size:.1f} images/s, ETA {eta}", flush=True)
        if validator is not None and ((options.validate_every and done % options.validate_every == 0) or done == schedule.iterations):
            with torch.random.fork_rng(devices=cuda_devices):
                result = validator(model, ctx)
            model.train()
            val_history.append({"iteration": done, **result})
            improved = options.keep_best and _better(result.get(metric), best_value)
            if improved:
                best_value = result[metric]
            if ctx.is_main:
                write_csv(run_dir / "val.csv", val_history)
                from segfusion.training.validation import plot_validation

                plot_validation(run_dir / "val.png", val_history, metric, f"validation {metric}")
                if improved:
                    save_best(best_path, model, done, metric, best_value)
                value = result.get(metric)
                bar.write(f"validation after {done} iterations: {metric} = {'n/a' if value is None else f'{value:.4f}'}"
                          + (" (best so far)" if improved else ""), file=sys.stdout)
        if done % options.checkpoint_every == 0 or done == schedule.iterations:
            rng_ranks = all_gather(_rng_state(ctx), ctx)
            if ctx.is_main:
                save_checkpoint(last, model, optimizer, done, history, rng_ranks=rng_ranks, world_size=ctx.world_size, val_history=val_history)
                write_csv(run_dir / "loss.csv", history)
        t_wait = time.perf_counter()
    bar.close()
    sync_buffers(model, ctx)
    check_in_sync(model, ctx)
    if options.keep_best:
        barrier(ctx)
        if best_path.exists():
            best = load_checkpoint(best_path)
            model.load_state_dict(best["model"])
            if ctx.is_main:
                print(f"keep_best: final weights are those of iteration {best['iteration']} ({best['metric']} = {best['value']:.4f})", flush=True)
        elif ctx.is_main:
            print("keep_best: no validation gave a value; the final weights are the last ones", flush=True)
    return history


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
