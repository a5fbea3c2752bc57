"""The training loop shared by both stages: SGD, warm-up + step schedule, resume, divergence guard.

Batches are a pure function of (seed, iteration): image order is a seeded permutation per
epoch and augmentation draws from ``default_rng([seed, iteration, slot])``; the torch RNG
(RPN/RoI sampling, multi-scale choice) is saved in every checkpoint. So a killed run that
resumes from its last checkpoint ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from segfusion.io.atomic import atomic_path
from segfusion.training.checkpoint import load_checkpoint, save_checkpoint


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
    seed: int = 0
    batch_size: int = 4
    checkpoint_every: int = 50
    loss_weights: dict = field(default_factory=dict)  # term -> weight, default 1
    train_detector: bool = True
    imp_end_to_end: bool = False
    bootstrap_fraction: float = 1.0


def batch_indices(n: int, batch_size: int, seed: int, iteration: int) -> list[int]:
    """Image indices of one batch: epoch-wise seeded permutations, consumed in order."""
    out = []
    start = iteration * batch_size
    for pos in range(start, start + batch_size):
        epoch, k = divmod(pos, n)
        out.append(int(np.random.default_rng([seed, epoch]).permutation(n)[k]))
    return out


def train(model, data, schedule: Schedule, options: LoopOptions, run_dir: Path, progress: bool = True) -> list[dict]:
    """Train ``model`` in place; checkpoints and loss.csv go to ``run_dir``. Returns the loss history."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(options.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=schedule.lr, momentum=schedule.momentum, weight_decay=schedule.weight_decay)
    start, history = 0, []
    last = run_dir / "last.pt"
    if last.exists():
        state = load_checkpoint(last)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start, history = state["iteration"], state["history"]
        print(f"resuming {run_dir} from iteration {start}", flush=True)
    model.train()
    bar = tqdm(range(start, schedule.iterations), initial=start, total=schedule.iterations, disable=not progress, desc="train")
    for it in bar:
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr_at(it)
        t0 = time.perf_counter()
        samples = [data.sample(i, np.random.default_rng([options.seed, it, slot])) for slot, i in enumerate(batch_indices(len(data), options.batch_size, options.seed, it))]
        images = [s[0] for s in samples]
        targets = [s[1] for s in samples]
        terms = model.losses(
            images,
            targets,
            train_detector=options.train_detector,
            imp_end_to_end=options.imp_end_to_end,
            bootstrap_fraction=options.bootstrap_fraction,
        )
        total = sum(options.loss_weights.get(k, 1.0) * v for k, v in terms.items())
        values = {k: float(v.detach()) for k, v in terms.items()}
        if not math.isfinite(float(total.detach())):
            raise TrainingDiverged(
                f"non-finite loss at iteration {it}: {values}; the last good checkpoint is kept at {last if last.exists() else '(none yet)'}"
            )
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        row = {"iteration": it, "lr": schedule.lr_at(it), "loss": float(total.detach()), **values, "seconds": time.perf_counter() - t0}
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}")
        if (it + 1) % options.checkpoint_every == 0 or it + 1 == schedule.iterations:
            save_checkpoint(last, model, optimizer, it + 1, history)
            write_loss_csv(run_dir / "loss.csv", history)
    return history


def write_loss_csv(path: Path, history: list[dict]) -> None:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


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
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
