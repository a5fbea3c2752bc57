# Integrity (README "Integrity"): stale outputs cannot survive a killed job, a deleted file or a
# config change that Snakemake's metadata does not record.
#
# 1. Every intermediate (prediction caches, fused shards, metric shard states) is a target of
#    `all`. Snakemake reruns a missing *target*; a missing intermediate that is no target is not
#    regenerated while what was derived from it exists. So a cache deleted by a killed predict
#    job (Snakemake removes a failed job's output) or by hand is predicted again, and everything
#    after it reruns because its input is newer (`--rerun-triggers mtime`).
# 2. At startup, each existing cache's format version and, when the working directory has no
#    `.snakemake` metadata (results copied from another machine), its recorded test-time settings
#    (`lineage.settings`) are compared with the config; a cache of an older format or other
#    settings is dated to 1970 (its content is untouched), so the mtime trigger reruns it and
#    everything after it, with a warning. With metadata, Snakemake's params trigger reruns a
#    changed prediction itself (the default triggers). Reading the
#    attributes costs ~1 ms per cache; the model file is not hashed here (a retrained model is
#    newer than its caches, which the mtime trigger catches).
#    The same holds for model files: without metadata, a stage-1 or stage-2 file whose recorded
#    training settings (`extra.train`, and the architecture or variant) differ from the config is
#    dated to 1970, so it is retrained and everything after it reruns. The header is read without
#    torch (`segfusion.io.model_header`, a few ms per file).
# 3. Consumers verify the chain (segfusion.provenance, segfusion.verify): evaluate, gather and
#    aggregate refuse a mismatched or stale input with both identities named.
import os

from segfusion.provenance import prediction_settings_hash


def all_caches():
    return [
        f"results/{dataset}/predictions/{model}/seed{seed}/{split}/shard-{i}-of-{SHARDS}.h5"
        for dataset, d in config["datasets"].items()
        for split in d["eval_splits"]
        for model in dataset_models(config, dataset)
        for seed in config["seeds"]
        for i in range(SHARDS)
    ]


def all_intermediates():
    """Caches, fused shards and metric shard states of every result `all` gathers."""
    out = all_caches()
    for dataset, d in config["datasets"].items():
        for split in d["eval_splits"]:
            for model in [
                *dataset_models(config, dataset),
                *dataset_pairs(config, dataset),
            ]:
                for seed in config["seeds"]:
                    for fusion in fusions_for(model):
                        for i in range(SHARDS):
                            shard = f"{split}/shard-{i}-of-{SHARDS}"
                            out.append(
                                f"results/{dataset}/fused/{model}/seed{seed}/{fusion}/{shard}"
                            )
                            out.append(
                                f"results/{dataset}/metrics/{model}/seed{seed}/{fusion}/{shard}.json"
                            )
    return out


def snakemake_metadata_present():
    """Whether this working directory has Snakemake's job metadata (`.snakemake/metadata`): then
    Snakemake's own params trigger reruns a prediction whose settings changed."""
    metadata = Path(".snakemake/metadata")
    return metadata.is_dir() and any(metadata.iterdir())


def stale_caches():
    """(path, reason) of existing caches whose format, or (without Snakemake's metadata, e.g.
    results copied from another machine) recorded settings, differ from the config."""
    import json as _json
    import os as _os

    from segfusion.inference.cache import FORMAT_VERSION

    existing = [p for p in all_caches() if _os.path.exists(p)]
    if not existing:
        return []
    import h5py

    want = prediction_settings_hash(config["predict"], config["inference"])
    # With metadata, a settings change is Snakemake's params trigger's job; marking here would
    # also date the caches of a merely previewed (`-n`) and reverted change as stale.
    check_settings = not snakemake_metadata_present()
    out = []
    for path in existing:
        try:
            with h5py.File(path, "r") as f:
                version = f.attrs.get("format_version")
                lineage = _json.loads(f.attrs.get("lineage", "{}"))
        except (OSError, ValueError) as err:
            out.append((path, f"unreadable ({err})"))
            continue
        if version != FORMAT_VERSION:
            out.append(
                (
                    path,
                    f"format_version {version}, this segfusion writes {FORMAT_VERSION}",
                )
            )
        elif check_settings and lineage.get("settings") not in (None, want):
            out.append(
                (
                    path,
                    f"predicted with settings hash {lineage['settings']}, the config gives {want}",
                )
            )
    return out


def all_model_files():
    """(path, stage, seed, model) of every model file the config trains."""
    out = []
    for dataset in config["datasets"]:
        for seed in sorted({stage1_seed(s) for s in config["seeds"]}):
            out.append((stage1_file(dataset, seed), 1, seed, None))
        for model in dataset_models(config, dataset):
            if MODEL_VARIANTS[model].trains_stage2:
                for seed in config["seeds"]:
                    out.append(
                        (
                            f"results/{dataset}/models/{model}/seed{seed}/stage2.pt",
                            2,
                            seed,
                            model,
                        )
                    )
    return out


def stale_models():
    """(path, reason) of existing model files trained with other settings than the config's;
    checked only without Snakemake's metadata (with it, the params trigger reruns them).
    """
    import os as _os

    if snakemake_metadata_present():
        return []
    existing = [m for m in all_model_files() if _os.path.exists(m[0])]
    if not existing:
        return []
    from segfusion.io.model_header import read_model_header
    from segfusion.provenance import model_settings_mismatch
    from segfusion.specs import ModelSpec, TrainSpec

    arch = ModelSpec.from_dict(config["architecture"]).to_dict()
    out = []
    for path, stage, seed, model in existing:
        train = TrainSpec.from_dict(
            config[f"stage{stage}"], f"stage{stage}", seed=seed
        ).to_dict()
        try:
            header = read_model_header(path)
        except ValueError as err:
            out.append((path, str(err)))
            continue
        why = model_settings_mismatch(
            header,
            train,
            arch=arch if stage == 1 else None,
            variant=MODEL_VARIANTS[model].to_dict() if model else None,
        )
        if why:
            out.append((path, why))
    return out


_STALE = stale_caches() + stale_models()
for _path, _why in _STALE:
    # The DAG settings (--forcerun) are not yet set while the Snakefile is parsed; dating the stale
    # cache to 1970 makes it older than its inputs, so the mtime trigger reruns it and its consumers.
    # Only the modification time changes (never the content), and only of a file that is stale.
    os.utime(_path, (1, 1))  # not 0: Snakemake reads an mtime of 0 as "no mtime"
    logger.warning(
        f"segfusion integrity: {_path} is stale ({_why}); it and everything derived from it are regenerated"
    )
