"""Model files (final weights, declared outputs) and run checkpoints (resume state, undeclared).

A model file carries everything needed to rebuild the network: the variant, the network's
shape (`ModelSpec`), the class list and the stage, so `predict` needs no training config.

Format 2 (``segfusion-model/2``) stores no test-time settings: they are the `InferenceSpec`
of prediction. Files of format 1 still load: their test-time keys are dropped (the predict
config's ``inference`` section applies instead; to keep their values, copy
``architecture.test_min_size`` etc. to ``inference`` in the config).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict
from pathlib import Path

import torch

from segfusion.io.atomic import atomic_path
from segfusion.models.build import build_model
from segfusion.specs import ModelSpec, ModelVariant, stable_hash
from segfusion.types import ClassInfo

MODEL_FORMAT = "segfusion-model/2"
READABLE_FORMATS = ("segfusion-model/1", MODEL_FORMAT)


def save_model(path: str | os.PathLike, model, classes: ClassInfo, stage: int, extra: dict | None = None) -> None:
    payload = {
        "format": MODEL_FORMAT,
        "variant": asdict(model.variant),
        "arch": model.spec.to_dict(),
        "classes": classes.to_dict(),
        "stage": stage,
        "state_dict": model.state_dict(),
        "extra": extra or {},
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


def read_model_file(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for a truncated zip
        raise ValueError(f"{path}: not a readable model file ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or payload.get("format") not in READABLE_FORMATS:
        raise ValueError(
            f"{path}: not a segfusion model file (format {payload.get('format') if isinstance(payload, dict) else '?'}, "
            f"expected one of {list(READABLE_FORMATS)}); retrain it with this version, or load it with the version that wrote it"
        )
    return payload


def load_model(path: str | os.PathLike, variant: ModelVariant | None = None):
    """Rebuild the model stored at ``path``; with ``variant``, build that variant and load what fits.

    Returns (model, classes, payload). Loading a stage-1 file into a stage-2 variant keeps the
    detector/backbone weights and leaves the new head initialised (reported keys are checked:
    only head weights may be missing).
    """
    payload = read_model_file(path)
    classes = ClassInfo.from_dict(payload["classes"])
    spec = ModelSpec.from_stored(payload["arch"], str(path))
    stored = ModelVariant.from_dict(payload["variant"], where=f"{path}: variant")
    model = build_model(variant or stored, spec, classes)
    state = payload["state_dict"]
    if variant is None or variant == stored:
        model.load_state_dict(state)
    else:
        init_from(model, state, str(path))
    return model, classes, payload


def init_from(model, state: dict, source: str) -> None:
    """Copy matching weights from ``state`` (e.g. stage 1 into stage 2).

    A detector state maps onto a detector-less model by its backbone keys. Anything of the
    target other than the semantic head that finds no weights is an error naming the keys.
    """
    target = model.state_dict()
    mapped = {}
    for key, value in state.items():
        candidates = [key]
        if key.startswith("detector.backbone."):
            candidates.append("body." + key[len("detector.backbone."):])
        for cand in candidates:
            if cand in target and target[cand].shape == value.shape:
                mapped[cand] = value
    missing = [k for k in target if k not in mapped and not k.startswith("head.")]
    if missing:
        raise ValueError(f"{source}: cannot initialise {len(missing)} weights, e.g. {missing[:5]}")
    model.load_state_dict(mapped, strict=False)


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def run_hash(identity: dict, init_path: str | None) -> str:
    """Key of a run directory: what determines the stage's weights (its specs) and its init weights (DESIGN.md paths)."""
    if init_path:
        identity = {**identity, "init": file_digest(init_path)}
    return stable_hash(identity)[:12]


def save_checkpoint(path: Path, model, optimizer, iteration: int, history: list[dict], **extra) -> None:
    """Resume state of a run: weights, optimizer, this process's torch RNG, loss history.

    ``extra`` adds keys (the loop stores every rank's RNG state, the world size and the
    validation history). Written to a temporary name and renamed, so a kill never leaves a
    truncated checkpoint.
    """
    payload = {
        "iteration": iteration,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "history": history,
        **extra,
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


def save_best(path: Path, model, iteration: int, metric: str, value: float) -> None:
    """The weights of the best validation so far (``keep_best``), with where they come from."""
    payload = {"iteration": iteration, "metric": metric, "value": value, "model": model.state_dict()}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ValueError(f"{path}: corrupt checkpoint ({type(err).__name__}: {err}); delete it to restart the run") from None
