"""Inputs of the workflow's aggregate step, as pure functions of the config (used by ``report.smk``).

They return the paths of the workflow layout (DESIGN.md "Paths") that the report reads
besides the gathered metrics: the declared loss CSVs, the canonical evaluation splits and
the fused shards drawn by the qualitative figures; `report_inputs` returns the same
structured, for the ``--params`` of ``segfusion aggregate``.

Config keys read (all optional; ``report`` is validated by the schema):

* ``report.qualitative_images`` (default 4; 0 turns the qualitative grid and the gallery off);
* ``report.gallery_model`` / ``report.gallery_fusion``: the model and fusion of the
  worst-images gallery; by default the last configured model that has a fused (non-semantic)
  output, with its first non-semantic fusion, else the first model with ``semantic``.

The grid and the gallery use each dataset's first evaluation split and the first seed;
sweep variants (``method@param=value``) are left out of the grid.
"""

from __future__ import annotations

from typing import Callable

from segfusion.config import dataset_models

DEFAULT_QUALITATIVE_IMAGES = 4

FusionsFor = Callable[[str], list[str]]


def _report_cfg(config: dict) -> dict:
    return config.get("report") or {}


def qualitative_images(config: dict) -> int:
    return int(_report_cfg(config).get("qualitative_images", DEFAULT_QUALITATIVE_IMAGES))


def _shards(config: dict) -> int:
    return int(config.get("predict", {}).get("shards", 1))


def fused_shards(config: dict, dataset: str, model: str, seed: int, fusion: str, split: str) -> list[str]:
    k = _shards(config)
    return [f"results/{dataset}/fused/{model}/seed{seed}/{fusion}/{split}/shard-{i}-of-{k}" for i in range(k)]


def loss_curves(config: dict, trains_stage2: Callable[[str], bool]) -> list[dict]:
    """``[{"dataset", "model", "seed", "stage", "path"}]``: stage 1 (Mask R-CNN) per dataset and
    seed (only the first seed's with config ``shared_stage1``), and stage 2 of every model that
    trains one (``trains_stage2(model)``)."""
    out = []
    shared = bool(config.get("shared_stage1"))
    for dataset in config["datasets"]:
        for seed in config["seeds"]:
            if not shared or seed == config["seeds"][0]:  # a shared stage 1 is trained once, with the first seed
                out.append({"dataset": dataset, "model": "maskrcnn", "seed": int(seed), "stage": 1,
                            "path": f"results/{dataset}/models/maskrcnn/seed{seed}/stage1_loss.csv"})  # fmt: skip
            for model in dataset_models(config, dataset):
                if trains_stage2(model):
                    out.append({"dataset": dataset, "model": model, "seed": int(seed), "stage": 2,
                                "path": f"results/{dataset}/models/{model}/seed{seed}/stage2_loss.csv"})  # fmt: skip
    return out


def gallery_choice(config: dict, fusions_for: FusionsFor, dataset: str | None = None) -> tuple[str, str] | None:
    """(model, fusion) of the worst-images gallery (see the module docstring), among the models
    run on ``dataset`` (config ``datasets.NAME.models``); None when the configured
    ``report.gallery_model`` does not run there."""
    cfg = _report_cfg(config)
    models = dataset_models(config, dataset) if dataset else list(config["models"])
    if not models:
        return None
    if cfg.get("gallery_model"):
        model = cfg["gallery_model"]
        if model not in config["models"]:
            raise ValueError(f"report.gallery_model {model!r} is not among the configured models {list(config['models'])}")
        if model not in models:
            return None
    else:
        fused = [m for m in models if any(f != "semantic" and "@" not in f for f in fusions_for(m))]
        model = fused[-1] if fused else models[0]
    choices = [f for f in fusions_for(model) if "@" not in f]
    if cfg.get("gallery_fusion"):
        fusion = cfg["gallery_fusion"]
        if fusion not in fusions_for(model):
            raise ValueError(f"report.gallery_fusion {fusion!r} is not run for model {model!r} (runs {fusions_for(model)})")
    else:
        non_sem = [f for f in choices if f != "semantic"]
        fusion = non_sem[0] if non_sem else choices[0]
    return model, fusion


def report_inputs(config: dict, fusions_for: FusionsFor, trains_stage2: Callable[[str], bool]) -> dict:
    """Structured inputs for ``segfusion aggregate --params``: loss curves, grid and gallery specs."""
    n = qualitative_images(config)
    out: dict = {"loss_curves": loss_curves(config, trains_stage2), "qualitative": [], "gallery": []}
    if n <= 0 or not config["seeds"]:
        return out
    seed = int(config["seeds"][0])
    for dataset, d in config["datasets"].items():
        choice = gallery_choice(config, fusions_for, dataset)
        splits = d.get("eval_splits", ["val"])
        if not splits:
            continue
        split = splits[0]
        data = f"results/{dataset}/data/{split}"
        variants = [
            {"model": m, "fusion": f, "seed": seed, "fused": fused_shards(config, dataset, m, seed, f, split)}
            for m in dataset_models(config, dataset)
            for f in fusions_for(m)
            if "@" not in f
        ]
        out["qualitative"].append({"dataset": dataset, "split": split, "data": data, "images": n, "variants": variants})
        if choice:
            model, fusion = choice
            out["gallery"].append(
                {"dataset": dataset, "split": split, "data": data, "model": model, "fusion": fusion, "seed": seed,
                 "images": n, "fused": fused_shards(config, dataset, model, seed, fusion, split)}
            )  # fmt: skip
    return out


def report_paths(config: dict, fusions_for: FusionsFor, trains_stage2: Callable[[str], bool]) -> dict[str, list[str]]:
    """The files of `report_inputs` as rule inputs: ``losses``, ``data`` and ``fused`` path lists."""
    spec = report_inputs(config, fusions_for, trains_stage2)
    data, fused = [], []
    for s in spec["qualitative"] + spec["gallery"]:
        data.append(s["data"])
        for v in s.get("variants", [s]):
            fused += v["fused"]
    unique = lambda xs: list(dict.fromkeys(xs))  # noqa: E731
    return {"losses": [c["path"] for c in spec["loss_curves"]], "data": unique(data), "fused": unique(fused)}


PLOT_KINDS = {
    "bars": "Metric bars",
    "boundary": "Accuracy near boundaries (IMP Fig. 5)",
    "iou_delta": "Per-class IoU gain of IMP (IMP Table 4)",
    "loss": "Training loss",
    "sweep": "Fusion parameter sweeps",
    "qualitative": "Qualitative comparison",
    "worst": "Worst images",
    "claims": "The papers' claims (forest plots)",
}


def plot_subcategory(wildcards) -> str:
    """Report subcategory of a figure from its ``kind`` pattern wildcard (``metrics_bars.png`` has none)."""
    kind = getattr(wildcards, "kind", None)
    return PLOT_KINDS.get(kind or "bars", str(kind))
