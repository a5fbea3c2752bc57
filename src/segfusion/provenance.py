"""Provenance of outputs: package version, git commit, library versions."""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from segfusion import __version__

    info = {"segfusion": __version__, "git_commit": git_commit(), "python": platform.python_version()}
    for pkg in ("torch", "torchvision", "snakemake", "numpy", "pycocotools", "cityscapesscripts"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            info[pkg] = None
    return info


# --------------------------------------------------------------------------- the provenance chain
# DESIGN.md "Provenance chain". Every artefact records a ``lineage``: the identity of each input
# (and the path it was read from, for messages and for `segfusion.verify`), and its own identity
# is the hash of that lineage without the paths (so a results folder can be copied or moved).
#
#   cache     (HDF5 attrs ``lineage``)   model file digest, data split identity, shard, test-time settings
#   fused     (panoptic.json meta)       cache identity (+ semantic cache for a pair), fusion spec hash
#   state     (metric shard JSON)        fused identity, ground-truth identity, cache identity, evaluate params
#   gathered  (metrics JSON)             every shard state's identity, their common generation
#
# A *generation* is what all shards of one result share (no shard index, no image list): the
# caches' config hashes, the data, the fusion spec. Shards of different generations never merge.

PATH_KEYS = ("path",)


def _hash(obj) -> str:
    from segfusion.specs import stable_hash

    return stable_hash(obj)


def without_paths(obj):
    """``obj`` with every ``"path"`` key removed (recursively): identities never depend on where files are."""
    if isinstance(obj, dict):
        return {k: without_paths(v) for k, v in obj.items() if k not in PATH_KEYS}
    if isinstance(obj, list):
        return [without_paths(v) for v in obj]
    return obj


def lineage_identity(lineage: dict) -> str:
    """The identity of an artefact: the hash of its lineage without paths."""
    return _hash(without_paths(lineage))


def split_identity(root) -> str:
    """Identity of a canonical data split without reading its images: the SHA-256 of its index
    files (``panoptic.json``, ``classes.json``, ``instances.json`` when present) and the name and
    size of every label PNG (``panoptic/``, ``semantic/``). Modification times are left out, so a
    copied results folder keeps its identities. Raises FileNotFoundError naming a missing split."""
    import hashlib
    import os

    root = Path(root)
    if not (root / "panoptic.json").exists():
        raise FileNotFoundError(f"{root}: not a canonical dataset split (no panoptic.json)")
    parts: dict = {}
    for name in ("panoptic.json", "classes.json", "instances.json"):
        f = root / name
        if f.exists():
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
            parts[name] = h.hexdigest()
    for folder in ("panoptic", "semantic"):
        d = root / folder
        if d.is_dir():
            parts[folder] = sorted((e.name, e.stat().st_size) for e in os.scandir(d) if not e.name.startswith("."))
    return _hash(parts)


def file_identity(path) -> str:
    """SHA-256 of a file's content (the model file's digest, as `training.checkpoint.file_digest`)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def prediction_settings_hash(predict_params: dict | None, inference_params: dict | None) -> str:
    """Hash of the test-time settings of a predict job, from the config sub-trees as the workflow
    passes them (``predict``, ``inference``): the workflow compares it with each cache's at startup
    (``workflow/rules/integrity.smk``), without the model file. ``shards`` is left out (it is in the path)."""
    from segfusion.specs import InferenceSpec, PredictSpec

    spec = PredictSpec.from_dict(predict_params)
    inference = InferenceSpec.from_dict(inference_params)
    return _hash({"inference": inference.to_dict(), "batch_size": spec.batch_size, "store_canvas": spec.store_canvas})


def _first_difference(recorded, wanted, where: str = "") -> str | None:
    """The first key path at which two JSON-like values differ, with both values."""
    if isinstance(recorded, dict) and isinstance(wanted, dict):
        for key in sorted(set(recorded) | set(wanted), key=str):
            found = _first_difference(recorded.get(key), wanted.get(key), f"{where}.{key}" if where else str(key))
            if found:
                return found
        return None
    return None if recorded == wanted else f"{where or 'value'}: trained with {recorded!r}, the config gives {wanted!r}"


def model_settings_mismatch(header: dict, train: dict, arch: dict | None = None, variant: dict | None = None) -> str | None:
    """Why a model file (its header, `segfusion.io.model_header.read_model_header`) was not trained
    with the configured stage settings ``train`` (`TrainSpec.to_dict`), network ``arch``
    (`ModelSpec.to_dict`, stage 1) or ``variant`` (stage 2); None when it was. Values are
    compared as JSON (tuples and lists alike)."""

    def plain(x):
        return json.loads(json.dumps(x, sort_keys=True))

    checks = [("train", (header.get("extra") or {}).get("train"), train)]
    if arch is not None:
        checks.append(("architecture", header.get("arch"), arch))
    if variant is not None:
        checks.append(("variant", header.get("variant"), variant))
    for what, recorded, wanted in checks:
        if recorded is None:
            return f"{what}: not recorded in the model file"
        found = _first_difference(plain(recorded), plain(wanted), what)
        if found:
            return found
    return None


def cache_lineage(model_path, model_digest: str, data_root, shard: tuple[int, int], settings_hash: str | None = None) -> dict:
    """The ``lineage`` of a prediction cache (`CacheWriter(lineage=...)`)."""
    out = {
        "model": {"path": str(model_path), "digest": model_digest},
        "data": {"path": str(data_root), "identity": split_identity(data_root)},
        "shard": f"{shard[0]}/{shard[1]}",
    }
    if settings_hash is not None:
        out["settings"] = settings_hash
    return out


def cache_identity(model: str, config_hash: str, lineage: dict) -> str:
    """Identity of a cache: its model name, config hash and lineage (no paths)."""
    return _hash({"model": model, "config_hash": config_hash, "lineage": without_paths(lineage)})


def _cache_ref(reader) -> dict:
    return {
        "path": str(reader.path),
        "identity": reader.identity,
        "config_hash": reader.config_hash,
        "data": (reader.lineage.get("data") or {}).get("identity"),
    }


def fused_lineage(reader, fusion_hash: str, semantic_reader=None) -> dict:
    """The ``lineage`` of a fused output made from ``reader`` (a `CacheReader`; with
    ``semantic_reader``, the instances cache of a pair) with the fusion spec of hash ``fusion_hash``."""
    return {
        "cache": _cache_ref(reader),
        "semantic_cache": None if semantic_reader is None else _cache_ref(semantic_reader),
        "fusion": fusion_hash,
    }


def generation(lineage: dict | None) -> str | None:
    """What all shards of one result share: for a fused lineage, the caches' config hashes, the
    data and the fusion; for a state lineage, its fused output's generation, the ground truth and
    the evaluate params. None without lineage (foreign predictions, older files)."""
    if not lineage:
        return None
    if "fused" in lineage:
        return _hash({"fused": (lineage["fused"] or {}).get("generation"), "ground_truth": lineage["ground_truth"]["identity"], "evaluate": lineage.get("evaluate")})
    sem = lineage.get("semantic_cache") or {}
    return _hash({"cache": lineage["cache"]["config_hash"], "data": lineage["cache"].get("data"), "semantic": sem.get("config_hash"), "fusion": lineage["fusion"]})


class LineageError(ValueError):
    """An artefact given to a consumer is not the one its lineage names (stale or mismatched)."""


def fused_meta_lineage(fused) -> dict | None:
    """The lineage stored in a fused folder's ``panoptic.json`` meta (None for foreign predictions)."""
    path = Path(fused)
    path = path / "panoptic.json" if path.is_dir() else path
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text()).get("meta") or {}
    except (ValueError, AttributeError):
        return None
    return meta.get("lineage")


def evaluation_lineage(data, fused, cache=None, params: dict | None = None) -> dict:
    """Check the inputs of ``segfusion evaluate`` against each other and return the state's lineage.

    Refuses (LineageError naming both files and both values): a fused output made from data of
    another identity than the ground truth ``data``; a ``cache`` that is not the one the fused
    output was made from (another model, another config, a rewritten cache); a cache of another
    data split; a cache whose images or image sizes are not those of the fused shard.
    """
    from segfusion.inference.cache import CacheReader

    gt = split_identity(data)
    fl = fused_meta_lineage(fused)
    fused_ref = None
    if fl:
        made_from = fl["cache"].get("data")
        if made_from is not None and made_from != gt:
            raise LineageError(f"{fused}: fused from predictions of data split identity {made_from}, but the ground truth {data} has identity {gt}")
        fused_ref = {"path": str(fused), "identity": lineage_identity(fl), "generation": generation(fl)}
    cache_ref = None
    if cache:
        with CacheReader(cache) as reader:
            own = (reader.lineage.get("data") or {}).get("identity")
            if own is not None and own != gt:
                raise LineageError(f"{cache}: predictions of data split identity {own}, but the ground truth {data} has identity {gt} (a cache of another dataset or split)")
            if fl and fl["cache"]["identity"] != reader.identity:
                raise LineageError(
                    f"{cache}: cache identity {reader.identity} (model {reader.model}, config_hash {reader.config_hash}) is not the cache "
                    f"{fl['cache']['identity']} (config_hash {fl['cache']['config_hash']}) that {fused} was fused from"
                )
            sizes = {n: reader._meta[n][1] for n in reader.names}
            cache_ref = {"path": str(cache), "identity": reader.identity}
        pan = Path(fused) / "panoptic.json" if Path(fused).is_dir() else Path(fused)
        images = json.loads(pan.read_text()).get("images") or [] if pan.exists() else []
        for im in images:
            name = Path(str(im.get("file_name", ""))).stem
            if name not in sizes:
                raise LineageError(f"{cache}: has no image {name!r} of the fused shard {fused} (a cache of another model, split or shard)")
            hw = (im.get("height"), im.get("width"))
            if None not in hw and tuple(sizes[name]) != tuple(hw):
                raise LineageError(f"{cache}: image {name!r} is {sizes[name][0]}x{sizes[name][1]}, but {hw[0]}x{hw[1]} in the fused shard {fused}")
    return {
        "fused": fused_ref,
        "ground_truth": {"path": str(data), "identity": gt},
        "cache": cache_ref,
        "evaluate": _hash(params or {}),
    }


def check_same_generation(first_path, first: dict | None, path, lineage: dict | None) -> None:
    """Refuse to merge shard ``path`` with the first shard when their generations differ (both named)."""
    g0, g = generation(first), generation(lineage)
    if g != g0:
        raise LineageError(
            f"gather: shards of different generations: {first_path} is of generation {g0}, {path} of {g} "
            "(made from other predictions, data, fusion or evaluation parameters); re-run the stale shards"
        )


def gathered_lineage(paths: list, lineages: list[dict | None]) -> dict:
    """The lineage of a gathered result; refuses shards of different generations (naming two shards)."""
    gens = [generation(lin) for lin in lineages]
    for p, lin in zip(paths, lineages):
        check_same_generation(paths[0], lineages[0], p, lin)
    return {
        "shards": [{"path": str(p), "identity": None if lin is None else lineage_identity(lin)} for p, lin in zip(paths, lineages)],
        "generation": gens[0] if gens else None,
    }
