"""One training stage from specs to a model file: the body of ``segfusion train``.

Stage 1 builds Mask R-CNN alone (the ``maskrcnn_imp`` variant, no head) from the `ModelSpec`,
optionally from local pretrained weights; stage 2 starts from the stage-1 model file (its
shape comes from that file) and builds the requested variant. Both then run
`segfusion.training.loop.train` in the run directory ``run_root / run_hash`` and, on rank 0,
write the model file, the loss CSV and the loss plot.

The run hash covers what determines the weights: the `TrainSpec`, the variant, the
`ModelSpec` (stage 1) and the init weights' digest; never the test-time `InferenceSpec`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from segfusion.datasets.canonical import CanonicalSplit
from segfusion.datasets.torch_dataset import PanopticTrainingData
from segfusion.models.build import build_model
from segfusion.specs import MODEL_PRESETS, ModelSpec, ModelVariant, TrainSpec
from segfusion.training.checkpoint import load_model, run_hash, save_model
from segfusion.training.distributed import DistContext
from segfusion.training.loop import plot_loss, read_best, train, write_loss_csv
from segfusion.training.trunk_cache import TrunkCache

STAGE1_VARIANT = MODEL_PRESETS["maskrcnn_imp"]
"""Stage 1 trains Mask R-CNN alone; its file is also the ``maskrcnn_imp`` model (IMP Fig. 3a)."""


def run_identity(stage: int, spec: TrainSpec, variant: ModelVariant, model_spec: ModelSpec | None) -> dict:
    """What the run directory's hash covers (the init weights' digest is added by `run_hash`)."""
    identity = {"stage": stage, "train": spec.to_dict(), "variant": variant.to_dict()}
    if model_spec is not None:
        identity["model"] = model_spec.to_dict()
    return identity


def initial_model(stage: int, variant: ModelVariant, model_spec: ModelSpec | None, init: str | None, split: CanonicalSplit, log):
    """Stage 2 (or any run with ``init``): the variant initialised from the model file ``init``;
    stage 1 without it: a fresh Mask R-CNN of ``model_spec``, with its local pretrained weights."""
    if init:
        model, classes, _ = load_model(init, variant=variant)
        if classes != split.classes:
            raise ValueError(f"--init {init}: trained on classes {classes.names}, the training split has {split.classes.names}")
        return model
    if stage == 2:
        raise ValueError("stage 2 needs --init (the stage-1 model file)")
    model = build_model(variant, model_spec, split.classes)
    if model_spec.pretrained:
        from segfusion.training.pretrained import load_pretrained

        info = load_pretrained(model, model_spec.pretrained, split.classes, model_spec.class_remap)
        log(f"loaded {info['loaded']} pretrained tensors from {model_spec.pretrained}; remapped classes {info['remapped']}")
    return model


def writable_or_fail(folder: Path, option: str) -> None:
    """Fail before training, not after it, when ``folder`` cannot be created or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".segfusion-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OSError(err.errno, f"{option} is not writable ({err.strerror})", str(folder)) from None


def training_data(model, split: CanonicalSplit, spec: TrainSpec) -> PanopticTrainingData:
    """The training samples. With a random crop, the multi-scale resize happens in the data, before
    the crop (IMP Sec. 4.3), and the detector skips its own training resize, so every training
    input is exactly ``crop_size`` (or the whole resized image where it is smaller)."""
    if spec.augmentation.crop_size is None:
        return PanopticTrainingData(split, spec.augmentation)
    model.transform._skip_resize = True  # torchvision's switch: no resize in training mode
    return PanopticTrainingData(split, spec.augmentation, scales=model.spec.min_size, max_size=model.spec.max_size)


def frozen_trunk(model, split: CanonicalSplit, spec: TrainSpec, run_dir: Path, log) -> TrunkCache | None:
    """The frozen-trunk cache of a stage-2 run, or None (the log says which condition failed)."""
    sizes = {(r.height, r.width) for r in split.images}
    blockers = spec.frozen_trunk_blockers(model.variant, model.spec, sizes)
    if blockers:
        log(f"frozen trunk: not used ({'; '.join(blockers)}): the detector runs on every batch")
        return None
    max_detections = model.detector.roi_heads.detections_per_img if model.detector is not None else 0
    flips = 2 if spec.augmentation.hflip else 1
    cache = TrunkCache(model, len(split), flips, max_detections, spec.trunk_cache_mb, run_dir, store=spec.frozen_trunk == "cache")
    log(f"frozen trunk: {spec.frozen_trunk} (backbone{', RPN, RoI heads' if model.detector is not None else ''} run once per image"
        f"{' and flip' if flips == 2 else ''}{', kept' if cache.store else ', recomputed every step'})")
    return cache


def train_stage(
    stage: int,
    data: str,
    spec: TrainSpec,
    variant: ModelVariant,
    model_spec: ModelSpec | None,
    out: str,
    run_root: str,
    ctx: DistContext,
    init: str | None = None,
    val_data: str | None = None,
    loss_csv: str | None = None,
    progress: bool = True,
    data_workers: int = 0,
) -> Path:
    """Train one stage and write ``out`` (rank 0); returns the run directory. ``data_workers``:
    DataLoader worker processes that load the batches (0: one loading thread), `loop.train`."""

    def log(message: str) -> None:
        if ctx.is_main:
            print(message, flush=True)

    if ctx.is_main:
        writable_or_fail(Path(out).parent, "--out")
        writable_or_fail(Path(run_root), "--run-dir")
    split = CanonicalSplit(data)
    validator = None
    if val_data:
        from segfusion.training.validation import Validator

        val_split = CanonicalSplit(val_data)
        if val_split.classes != split.classes:
            raise ValueError(f"--val-data {val_data}: its classes {val_split.classes.names} differ from {data}'s {split.classes.names}")
        validator = Validator(val_split, stage, batch_size=spec.batch_size)
    run_dir = Path(run_root) / run_hash(run_identity(stage, spec, variant, model_spec if not init else None), init)
    log(f"stage {stage}: {variant}, run directory {run_dir}, {ctx.world_size} process(es) on {ctx.device}")
    torch.manual_seed(spec.seed)
    model = initial_model(stage, variant, model_spec, init, split, log)
    absent = model.freeze(spec.freeze)
    if absent:
        log(f"freeze: this model has no detector, so {list(absent)} are not frozen (there is nothing to freeze)")
    data_set = training_data(model, split, spec)
    trunks = frozen_trunk(model, split, spec, run_dir, log) if stage == 2 else None
    t0 = time.perf_counter()
    history = train(model, data_set, spec, run_dir, progress=progress, validator=validator, ctx=ctx, trunks=trunks,
                    data_workers=data_workers)
    if trunks is not None:
        log(trunks.summary())
    if not ctx.is_main:
        return run_dir
    model.to("cpu")
    plot_loss(run_dir / "loss.png", history, f"stage {stage} {variant.head}{' + IMP' if variant.imp else ''}")
    extra = {"train": spec.to_dict(), "run_dir": str(run_dir), "seconds": time.perf_counter() - t0, "world_size": ctx.world_size}
    if spec.keep_best:
        extra["best"] = read_best(run_dir)
    save_model(out, model, split.classes, stage, extra=extra)
    if loss_csv:
        write_loss_csv(Path(loss_csv), history)
    log(f"wrote {out} after {spec.schedule.iterations} iterations ({time.perf_counter() - t0:.1f} s)")
    return run_dir
