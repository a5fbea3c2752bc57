# Config validation, wildcard constraints and input functions shared by every rule.
import json

from pathlib import Path

from snakemake.logging import logger

import segfusion.fusion
import segfusion.metrics
from segfusion import sweeps
from segfusion.config import (
    selection_warnings,
    used_splits,
    validate_config,
    validation_split,
)
from segfusion.models.build import resolve_variant

validate_config(
    config, workflow.source_path("../schemas/config.schema.yaml"), source="config"
)
for _message in selection_warnings(config):
    logger.warning(f"segfusion config warning: {_message}")

MODEL_VARIANTS = {
    m: resolve_variant(m, config["custom_models"]) for m in config["models"]
}
SHARDS = config["predict"]["shards"]
# Framework files read by a job are its inputs. Editing a fusion (metric) module reruns fusion
# (evaluation) and what follows, never training or prediction.
FUSION_SOURCES = sorted(
    str(p) for p in Path(segfusion.fusion.__file__).parent.glob("*.py")
)
METRIC_SOURCES = sorted(
    str(p) for p in Path(segfusion.metrics.__file__).parent.glob("*.py")
)


def as_json(obj):
    """Params reach rules as one JSON string, so Snakemake's params trigger tracks them."""
    return json.dumps(obj, sort_keys=True)


def dataset_cfg(wildcards):
    return config["datasets"][wildcards.dataset]


def fusions_for(model):
    """Fusion methods that make sense for a variant: maskrcnn_imp and detector-less models
    only have a semantic output."""
    v = MODEL_VARIANTS[model]
    if v.head == "none" or not v.detector:
        return ["semantic"]
    return sweeps.expand(config["fusion"]["methods"], config["sweeps"])


def model_file(wildcards):
    v = MODEL_VARIANTS[wildcards.model]
    base = f"results/{wildcards.dataset}/models"
    if not v.trains_stage2:
        return f"{base}/maskrcnn/seed{wildcards.seed}/stage1.pt"
    return f"{base}/{wildcards.model}/seed{wildcards.seed}/stage2.pt"


def all_gathered_metrics():
    out = []
    for dataset, d in config["datasets"].items():
        for split in d["eval_splits"]:
            for model in config["models"]:
                for seed in config["seeds"]:
                    for fusion in fusions_for(model):
                        out.append(
                            f"results/{dataset}/metrics/{model}/seed{seed}/{fusion}/{split}.json"
                        )
    return out


def raw_inputs(wildcards):
    """The raw data of a split: the generator's marker for synthetic data, else the raw folder."""
    d = config["datasets"][wildcards.dataset]
    if d.get("synthesize"):
        return [f"results/raw/{wildcards.dataset}/{wildcards.split}.synthesized"]
    return [d["raw"]]


def all_dataset_stats():
    return [
        f"results/{dataset}/stats/{split}"
        for dataset, d in config["datasets"].items()
        for split in used_splits(d)
    ]


def stage_params(stage, variant=None, seed=0):
    """The JSON params of a train job: schedule, augmentation, loop options, architecture, seed."""
    p = dict(config[stage])
    loop = {
        k: p.pop(k)
        for k in (
            "batch_size",
            "checkpoint_every",
            "loss_weights",
            "imp_end_to_end",
            "bootstrap_fraction",
            "freeze",
        )
    }
    if stage == "stage1":
        loop.pop("freeze")
        loop.pop("imp_end_to_end")
        loop.pop("bootstrap_fraction")
    # Validation settings enter the params (and the run hash) only when used, so configs
    # without them keep their run directories.
    if p.get("validate_every") is not None:
        loop["validate_every"] = p["validate_every"]
        loop["keep_best"] = bool(p.get("keep_best", False))
    elif p.get("keep_best"):
        raise ValueError(f"config {stage}.keep_best needs {stage}.validate_every")
    out = {
        "schedule": p["schedule"],
        "augmentation": p["augmentation"],
        "loop": loop,
        "arch": config["architecture"],
        "seed": int(seed),
    }
    if variant is not None:
        out["variant"] = {
            "detector": variant.detector,
            "head": variant.head,
            "imp": variant.imp,
        }
    return as_json(out)


def fusion_method(w):
    return sweeps.parse_variant(w.fusion)[0]


def fusion_params(w):
    method, overrides = sweeps.parse_variant(w.fusion)
    p = {**config["fusion"]["params"].get(method, {}), **overrides}
    if method == "semantic" and MODEL_VARIANTS[w.model].head == "none":
        # maskrcnn_imp: the canvas is not a distribution; low maxima are background (void).
        p.setdefault(
            "background_threshold", config["fusion"]["canvas_background_threshold"]
        )
    return as_json(p)
