# Config validation, wildcard constraints and input functions shared by every rule.
import json

from pathlib import Path

from snakemake.logging import logger

import segfusion.fusion
import segfusion.metrics
from segfusion import sweeps
from segfusion.config import (
    dataset_models,
    dataset_pairs,
    selection_warnings,
    used_splits,
    validate_config,
    validation_split,
)
from segfusion.specs import PairSpec, resolve_variant

# Schema, then every spec (fusion parameters and sweeps included): errors name the key path
# before any job runs, the dry run included.
validate_config(
    config, workflow.source_path("../schemas/config.schema.yaml"), source="config"
)
for _message in selection_warnings(config):
    logger.warning(f"segfusion config warning: {_message}")

MODEL_VARIANTS = {
    m: resolve_variant(m, config["custom_models"]) for m in config["models"]
}
# Pairs (config `pairs`): the instances of one model's cache fused with the semantic output of
# another's; fused and evaluated like a model, under the pair's name.
PAIRS = {
    name: PairSpec.from_dict(name, p, MODEL_VARIANTS)
    for name, p in config["pairs"].items()
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
    only have a semantic output; a pair has instances and a semantic output, so every method.
    """
    if model in PAIRS:
        return sweeps.expand(config["fusion"]["methods"], config["sweeps"])
    v = MODEL_VARIANTS[model]
    if v.head == "none" or not v.detector:
        return ["semantic"]
    return sweeps.expand(config["fusion"]["methods"], config["sweeps"])


def stage1_seed(seed):
    """The seed whose stage-1 detector a seed uses: its own, or the first seed when
    `shared_stage1` (one detector per dataset, isolating the heads' variance)."""
    return config["seeds"][0] if config["shared_stage1"] else seed


def stage1_file(dataset, seed):
    return f"results/{dataset}/models/maskrcnn/seed{stage1_seed(seed)}/stage1.pt"


def model_file(wildcards):
    v = MODEL_VARIANTS[wildcards.model]
    base = f"results/{wildcards.dataset}/models"
    if not v.trains_stage2:
        return stage1_file(wildcards.dataset, wildcards.seed)
    return f"{base}/{wildcards.model}/seed{wildcards.seed}/stage2.pt"


def cache_path(w, model):
    return f"results/{w.dataset}/predictions/{model}/seed{w.seed}/{w.split}/shard-{w.i}-of-{w.k}.h5"


def fuse_inputs(w):
    """A model's cache; for a pair, its instances model's cache and its semantic model's."""
    if w.model in PAIRS:
        pair = PAIRS[w.model]
        return {
            "cache": cache_path(w, pair.instances),
            "semantic_cache": cache_path(w, pair.semantic),
        }
    return {"cache": cache_path(w, w.model)}


def evaluate_cache(w):
    """The cache evaluated for AP before fusion: a pair's is its instances model's."""
    return cache_path(w, PAIRS[w.model].instances if w.model in PAIRS else w.model)


def semantic_variant(model):
    """The variant whose semantic output a model or pair fuses."""
    return MODEL_VARIANTS[PAIRS[model].semantic if model in PAIRS else model]


def all_gathered_metrics():
    out = []
    for dataset, d in config["datasets"].items():
        for split in d["eval_splits"]:
            for model in [
                *dataset_models(config, dataset),
                *dataset_pairs(config, dataset),
            ]:
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


def stage_params(stage, model=None, seed=0):
    """The JSON params of a train job: the stage's config sub-tree as is, the seed, and what
    builds the network (stage 1: the architecture; stage 2: the variant, its shape comes
    from the stage-1 file)."""
    out = {"stage": config[stage], "seed": int(seed)}
    if model is None:
        out["architecture"] = config["architecture"]
    else:
        out["variant"] = MODEL_VARIANTS[model].to_dict()
    return as_json(out)


def fusion_params(w):
    """The configured parameters of the wildcard's method (config ``fusion.params.{method}``, as
    is); a sweep point's value travels in the method name (``--method``)."""
    method = sweeps.parse_variant(w.fusion)[0]
    p = config["fusion"]["params"].get(method, {})
    if method == "semantic" and semantic_variant(w.model).head == "none":
        # maskrcnn_imp: the canvas is not a distribution; low maxima are background (void).
        p = {
            "background_threshold": config["fusion"]["canvas_background_threshold"],
            **p,
        }
    return as_json(p)
