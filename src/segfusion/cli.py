"""The `segfusion` command: one subcommand per workflow rule, and the only place that parses arguments.

torch is imported only inside the subcommands that need it (train, predict), so
synthesize, convert, fuse, evaluate, gather and aggregate start fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _params(text: str | None) -> dict:
    """``--params``: a JSON object, or the path of a JSON file."""
    if not text:
        return {}
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise SystemExit(f"--params: invalid JSON ({err}): {text[:200]}") from None
    from segfusion.io.atomic import read_json

    return read_json(text)


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = text.lower().split("x")
        return int(h), int(w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like HxW, got {text!r}") from None


def _shard(text: str) -> tuple[int, int]:
    try:
        i, k = text.split("/")
        return int(i), int(k)
    except ValueError:
        raise argparse.ArgumentTypeError(f"shard must look like I/K (0-based I), got {text!r}") from None


def _threads(n: int) -> None:
    """Thread settings, applied before torch is imported.

    OpenMP's default (spin briefly, then sleep) is kept: Snakemake never schedules more
    threads than cores, and on an idle machine spinning is faster (tiny stage-1 model,
    2 threads, measured here: 0.39 s/iteration by default vs 0.53 s with
    OMP_WAIT_POLICY=PASSIVE). On a machine shared with other busy processes set
    OMP_WAIT_POLICY=PASSIVE yourself: there the default measured 7.4 s/iteration against
    1.7 s with passive waiting.
    """
    import os

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(n))


# -- data ----------------------------------------------------------------------------------------
def cmd_synthesize(a) -> None:
    from segfusion.datasets.synthetic import synthesize

    paths = synthesize(a.flavour, a.out, a.split, a.num, a.size, a.seed)
    print(f"wrote {len(paths)} {a.flavour} images of {a.size[0]}x{a.size[1]} to {a.out} ({a.split})")


def cmd_convert(a) -> None:
    from segfusion.datasets.registry import convert

    skipped = convert(a.format, a.raw, a.split, a.out, workers=a.threads, skip_bad=a.skip_bad, options=_params(a.params))
    print(f"converted {a.raw} ({a.format}, {a.split}) -> {a.out}; skipped {len(skipped)}")


def cmd_validate_dataset(a) -> None:
    from segfusion.datasets.validate import validate_split

    problems = validate_split(a.path)
    for p in problems:
        print(p)
    if problems:
        raise SystemExit(f"{a.path}: {len(problems)} problem(s)")
    print(f"{a.path}: OK")


def cmd_dataset_stats(a) -> None:
    from segfusion.datasets.stats import write_dataset_stats

    written = write_dataset_stats(a.path, a.out, max_overlays=a.max_overlays)
    print(f"dataset statistics of {a.path} -> {', '.join(str(p) for p in written.values())}")


# -- models --------------------------------------------------------------------------------------
def cmd_train(a) -> None:
    """Stage 1 or 2 training; under torchrun every rank runs this, only rank 0 writes files.

    ``--params``: ``{"stage": config stage1/stage2, "seed": N, "architecture": config
    architecture (stage 1), "variant": {detector, head, imp} (stage 2)}``.
    """
    from segfusion.specs import ModelSpec, ModelVariant, TrainSpec

    p = _params(a.params)
    _known(p, ("stage", "seed", "architecture", "variant"), "train --params")
    spec = TrainSpec.from_dict(p.get("stage"), where=f"stage{a.stage}", seed=p.get("seed", 0))
    model_spec = ModelSpec.from_dict(p.get("architecture"))
    _threads(a.threads)
    import torch

    from segfusion.training.distributed import init_distributed, shutdown
    from segfusion.training.stage import STAGE1_VARIANT, train_stage

    variant = STAGE1_VARIANT if a.stage == 1 else ModelVariant.from_dict(p.get("variant") or {}, where="train --params variant")
    torch.set_num_threads(a.threads)
    ctx = init_distributed(a.backend, a.device, a.find_unused_parameters)
    try:
        workers = max(1, a.threads // 2) if a.data_workers is None else a.data_workers
        if workers < 0:
            raise ValueError(f"--data-workers must be >= 0, got {workers}")
        train_stage(a.stage, a.data, spec, variant, model_spec, a.out, a.run_dir, ctx, init=a.init, val_data=a.val_data,
                    loss_csv=a.loss_csv, progress=not a.no_progress, data_workers=workers)
    finally:
        shutdown(ctx)


def _known(p: dict, keys, where: str) -> None:
    from segfusion.specs import unknown_key_error

    for key in p:
        if key not in keys:
            raise unknown_key_error(where, key, keys)


def cmd_predict(a) -> None:
    """``--params``: ``{"predict": config predict, "inference": config inference}``."""
    from segfusion.specs import InferenceSpec, PredictSpec

    p = _params(a.params)
    _known(p, ("predict", "inference"), "predict --params")
    spec = PredictSpec.from_dict(p.get("predict"))
    inference = InferenceSpec.from_dict(p.get("inference"))
    _threads(a.threads)
    import torch

    from segfusion.datasets.canonical import CanonicalSplit
    from segfusion.inference.cache import CacheWriter
    from segfusion.inference.predict import predict_split
    from segfusion.inference.shards import shard_records
    from segfusion.provenance import provenance
    from segfusion.training.checkpoint import file_digest, load_model
    from segfusion.training.distributed import resolve_device

    torch.set_num_threads(a.threads)
    device = resolve_device(spec.device)
    model, classes, payload = load_model(a.model)
    model.to(device)
    split = CanonicalSplit(a.data)
    if split.classes != classes:
        raise SystemExit(f"{a.model}: trained on classes {classes.names}, but {a.data} has {split.classes.names}")
    index, count = a.shard
    records = shard_records(split.images, index, count)
    digest = file_digest(a.model)
    config_hash = prediction_config_hash(spec, inference, digest)
    name = Path(a.model).parent.parent.name
    # Parameters and FLOPs (IMP Table 6, Seamless Sec. 5.4) on the split's first image by id,
    # so every shard of a split stores the same figures; they travel to the metrics via evaluate.
    efficiency: dict = {}
    if split.images:
        from segfusion.models.efficiency import efficiency_summary

        first = min(split.images, key=lambda r: r.image_id)
        efficiency = efficiency_summary(model, (first.height, first.width), image=split.image(first), inference=inference)
    extra = {**provenance(), "efficiency": efficiency, "inference": inference.to_dict(), "device": str(device)}
    from segfusion.provenance import cache_lineage, prediction_settings_hash

    # Provenance chain: the model file, the data split and the test-time settings (segfusion.provenance).
    lineage = cache_lineage(a.model, digest, a.data, a.shard, prediction_settings_hash(p.get("predict"), p.get("inference")))
    with CacheWriter(a.out, name, config_hash, classes, extra, lineage=lineage) as writer:
        stats = predict_split(model, split, records, writer, spec, inference)
    flops = f", {efficiency['flops'] / 1e9:.2f} GFLOPs/image, {efficiency['parameters'] / 1e6:.2f} M parameters" if efficiency else ""
    print(f"wrote {a.out}: {stats['images']} images on {device}, {stats['images_per_second']:.2f} images/s{flops}")


def cmd_import_predictions(a) -> None:
    from segfusion.inference.import_predictions import import_predictions

    stats = import_predictions(a.data, a.instances, a.semantic, a.out, semantic_format=a.semantic_format, shard=a.shard, model=a.model)
    print(f"wrote {a.out}: {stats['images']} images, {stats['detections']} detections (config_hash {stats['config_hash']})")


def cmd_export_predictions(a) -> None:
    from segfusion.inference.export_predictions import export_predictions

    stats = export_predictions(a.cache, a.out, threshold=a.threshold)
    print(f"wrote {a.out}: {stats['images']} images, {stats['detections']} detections (instances.json + semantic/*.npy)")


def prediction_config_hash(spec, inference, model_digest: str) -> str:
    """The cache's ``config_hash``: the model file, the test-time settings and what of the predict
    job changes its outputs (images per forward pass: padding; whether the canvas is stored)."""
    from segfusion.specs import stable_hash

    return stable_hash({"model": model_digest, "inference": inference.to_dict(), "batch_size": spec.batch_size, "store_canvas": spec.store_canvas})


# -- fusion and metrics --------------------------------------------------------------------------
def cmd_fuse(a) -> None:
    """``--method``: a method or a sweep point (``kirillov@overlap_threshold=0.3``); ``--params``:
    the method's parameters (config ``fusion.params.{method}``), checked before any image is read.
    ``--semantic-cache``: fuse the instances of ``--cache`` with the semantic output of this cache
    (a pair, `segfusion.inference.pair.PairedCacheReader`)."""
    from segfusion.specs import FusionSpec

    spec = FusionSpec.for_variant(a.method, _params(a.params))
    from tqdm import tqdm

    from segfusion.fusion import fuse
    from segfusion.inference.cache import CacheReader
    from segfusion.inference.pair import PairedCacheReader
    from segfusion.io.fused import write_fused

    meta = {**spec.to_dict(), "variant": a.method, "cache": str(a.cache)}
    if a.semantic_cache:
        meta["semantic_cache"] = str(a.semantic_cache)
    seconds: list[float] = []

    def items(reader):
        # fusion_ms_per_image is the whole per-image work of the job: read (the cache
        # iterator), fuse, and encode and write (write_fused, which handles the item before it
        # asks for the next one). Only the job's closing JSON writes are not in it.
        images = iter(tqdm(reader, total=len(reader), desc=f"fuse {a.method}"))
        while True:
            t0 = time.perf_counter()
            cached = next(images, None)
            if cached is None:
                break
            pan = fuse(spec.method, cached.instances, cached.semantic, reader.classes, **spec.params)
            yield cached.name, cached.image_id, pan
            seconds.append(time.perf_counter() - t0)
        # write_fused writes panoptic.json after consuming every item, so the timing lands in it.
        meta["fusion_ms_per_image"] = 1000 * sum(seconds) / max(len(seconds), 1)

    with PairedCacheReader(a.cache, a.semantic_cache) if a.semantic_cache else CacheReader(a.cache) as reader:
        meta["lineage"] = _fused_lineage(reader, spec)  # provenance chain (segfusion.provenance)
        n = write_fused(a.out, reader.classes, items(reader), meta=meta)
    print(f"fused {n} images with {a.method} ({meta['fusion_ms_per_image']:.1f} ms/image) -> {a.out}")


def _fused_lineage(reader, spec) -> dict:
    """The lineage of a fused output: the cache (a pair: both caches) and the fusion spec's hash."""
    from segfusion.provenance import fused_lineage

    if hasattr(reader, "semantic") and hasattr(reader, "instances"):  # a PairedCacheReader
        return fused_lineage(reader.instances, spec.hash(), semantic_reader=reader.semantic)
    return fused_lineage(reader, spec.hash())


def cmd_export_cityscapes(a) -> None:
    from segfusion.io.cityscapes_export import export_cityscapes

    summary = export_cityscapes(a.fused, a.out, a.formats, split=a.split)
    print(f"exported {summary['n_images']} images as {', '.join(summary['formats'])} (Cityscapes result formats) -> {a.out}")


def cmd_evaluate(a) -> None:
    from segfusion.evaluation import evaluate_fused

    state = evaluate_fused(a.data, a.fused, a.cache, _params(a.params))
    from segfusion.io.atomic import write_json

    write_json(a.out, state)
    print(f"wrote metric state for {state['n_images']} images -> {a.out}")


def cmd_gather(a) -> None:
    from segfusion.evaluation import gather_states
    from segfusion.io.atomic import write_json

    result = gather_states(a.states, _params(a.meta))
    write_json(a.out, result, indent=1)
    m = result["metrics"]
    shown = {k: m.get(k) for k in ("pq", "miou", "ap_mask")}
    print(f"{a.out}: " + ", ".join(f"{k} {'n/a' if v is None else f'{v:.4f}'}" for k, v in shown.items()))


def cmd_aggregate(a) -> None:
    from segfusion.report.aggregate import aggregate

    df = aggregate(a.metrics, a.out, _params(a.params))
    figures = sorted(p.name for p in (Path(a.out) / "plots").glob("*.png"))
    print(f"summary of {len(a.metrics)} metrics files ({len(df)} rows) written to {a.out}: tables.md, claims.md, claims.csv, metrics.csv, per_image.csv, {len(figures)} figures in plots/")


def cmd_verify(a) -> None:
    """Check every provenance chain under a results folder (`segfusion.verify`); exit 1 on any finding."""
    from segfusion.verify import verify_results

    findings, n = verify_results(a.results)
    for f in findings:
        print(f)
    if findings:
        kinds = sorted({f.kind for f in findings})
        print(f"{a.results}: {len(findings)} findings ({', '.join(kinds)}) in {n} artefacts; re-run the workflow (snakemake) to regenerate them", file=sys.stderr)
        raise SystemExit(1)
    print(f"{a.results}: {n} artefacts verified, none stale or orphaned")


def build_parser() -> argparse.ArgumentParser:
    from segfusion.config import registries as registry_names

    registries = registry_names()
    parser = argparse.ArgumentParser(prog="segfusion", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("synthesize", help="write seeded synthetic scenes in a raw native layout")
    s.add_argument("--flavour", choices=registries["flavours"], default="street")
    s.add_argument("--out", required=True)
    s.add_argument("--split", required=True)
    s.add_argument("--num", type=int, required=True)
    s.add_argument("--size", type=_size, default=(128, 256), help="HxW")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_synthesize)

    s = sub.add_parser("convert", help="raw dataset -> canonical dataset split")
    s.add_argument("--format", required=True, choices=registries["formats"])
    s.add_argument("--raw", required=True)
    s.add_argument("--split", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--skip-bad", action="store_true", help="skip bad images, listing them in skipped.csv")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--params", help="converter options (JSON or file)")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("validate-dataset", help="check a canonical split for consistency")
    s.add_argument("path")
    s.set_defaults(func=cmd_validate_dataset)

    s = sub.add_parser("dataset-stats", help="class frequencies, instance sizes and overlays of a canonical split")
    s.add_argument("path")
    s.add_argument("--out", required=True)
    s.add_argument("--max-overlays", type=int, default=8)
    s.set_defaults(func=cmd_dataset_stats)

    s = sub.add_parser("train", help="stage 1 (Mask R-CNN) or stage 2 (semantic/IMP head) training")
    s.add_argument("--stage", type=int, choices=[1, 2], required=True)
    s.add_argument("--data", required=True, help="canonical training split")
    s.add_argument("--params", required=True, help='training params (JSON or file): {"stage": {...}, "seed": N, "architecture": {...}, "variant": {...}}')
    s.add_argument("--out", required=True, help="final model file")
    s.add_argument("--run-dir", required=True, help="root of run directories; the run goes to ROOT/<params hash>")
    s.add_argument("--init", help="model file to start from (stage 1 weights for stage 2)")
    s.add_argument("--loss-csv", help="also write the loss history here (a declared output, for the report)")
    s.add_argument("--val-data", help="held-out canonical split validated during training (stage 1: mask AP, stage 2: mIoU)")
    s.add_argument("--backend", choices=registries["backends"], default="auto", help="torch.distributed backend under torchrun")
    s.add_argument("--device", choices=registries["devices"], default="auto", help="auto: cuda:LOCAL_RANK if available, else cpu")
    s.add_argument("--threads", type=int, default=1, help="torch threads per process")
    s.add_argument("--data-workers", type=int, default=None,
                   help="DataLoader worker processes (default: half of --threads, at least 1; 0: a loading thread)")
    s.add_argument("--find-unused-parameters", action="store_true",
                   help="DDP's find_unused_parameters, for models that leave trainable parameters out of a step")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("predict", help="run a model over a split (or shard) into the HDF5 cache")
    s.add_argument("--model", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--shard", type=_shard, default=(0, 1), help="I/K, 0-based")
    s.add_argument("--params", help='predict params (JSON or file): {"predict": {...}, "inference": {...}}')
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("import-predictions", help="another system's outputs (COCO results + semantic files) -> HDF5 cache")
    s.add_argument("--data", required=True, help="canonical split the predictions are of")
    s.add_argument("--instances", required=True, help="COCO results JSON (RLE masks, scores, native category ids)")
    s.add_argument("--semantic", required=True, help="folder of {name}.npy (C x h x w probabilities) or {name}.png (class index, 255 void)")
    s.add_argument("--semantic-format", choices=["npy", "png"], default="npy")
    s.add_argument("--shard", type=_shard, default=(0, 1), help="I/K, 0-based: import only that shard's images")
    s.add_argument("--model", default="imported", help="model name stored in the cache")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_import_predictions)

    s = sub.add_parser("export-predictions", help="HDF5 cache -> COCO results JSON + semantic .npy (the import format)")
    s.add_argument("--cache", required=True)
    s.add_argument("--out", required=True, help="output folder: instances.json, semantic/{name}.npy")
    s.add_argument("--threshold", type=float, default=0.5, help="mask binarisation: prob >= threshold")
    s.set_defaults(func=cmd_export_predictions)

    s = sub.add_parser("fuse", help="fuse a prediction cache (or the instances of one with the semantic output of another) with one method")
    s.add_argument("--cache", required=True)
    s.add_argument("--semantic-cache", help="take the semantic output from this cache, the instances from --cache (a pair); same images, sizes and classes")
    s.add_argument("--method", required=True, help=f"one of {registries['fusion_methods']}, or a sweep point METHOD@PARAM=VALUE")
    s.add_argument("--params", help="method params (JSON or file)")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_fuse)

    s = sub.add_parser("export-cityscapes", help="fused folder -> Cityscapes result formats for the official evaluators")
    s.add_argument("--fused", required=True, help="fused output folder")
    s.add_argument("--out", required=True)
    s.add_argument("--formats", default="semantic,panoptic,instance", help="comma-separated subset of semantic,panoptic,instance")
    s.add_argument("--split", default="val", help="names the panoptic JSON: cityscapes_panoptic_SPLIT.json")
    s.set_defaults(func=cmd_export_cityscapes)

    s = sub.add_parser("evaluate", help="metric state of a fused shard (or any COCO-panoptic prediction) against ground truth")
    s.add_argument("--data", required=True, help="canonical split: ground truth and classes (native category ids)")
    s.add_argument("--fused", required=True, help="fused folder, or any COCO-panoptic prediction (folder or JSON; PNGs in panoptic/, <json stem>/ or beside it)")
    s.add_argument("--cache", help="prediction cache, for AP before fusion and diagnostics")
    s.add_argument("--params", help="evaluation params (JSON or file)")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("gather", help="merge per-shard metric states into one metrics JSON")
    s.add_argument("states", nargs="+")
    s.add_argument("--meta", help="labels of this result (JSON): dataset, model, fusion, split, seed")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_gather)

    s = sub.add_parser("aggregate", help="metrics JSONs -> summary tables, plots, provenance")
    s.add_argument("metrics", nargs="+", help="gathered metrics JSONs (segfusion gather)")
    s.add_argument("--params", help='report params (JSON or file): {"config": ..., "inputs": {"loss_curves", "qualitative", "gallery"}}')
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_aggregate)

    s = sub.add_parser("verify", help="check the provenance chain of every artefact under a results folder: stale, orphaned, leftovers")
    s.add_argument("results", help="results folder (e.g. results)")
    s.set_defaults(func=cmd_verify)
    return parser


def _version() -> str:
    from segfusion import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, KeyError, OSError) as err:
        # Expected errors: bad input, a diverged training (TrainingDiverged is a ValueError), an
        # unwritable path or a full disk (OSError names the file): one line, no traceback.
        print(f"segfusion {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    return 0


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.filename}: {err.strerror or type(err).__name__}"
    return " ".join(str(err).split()) or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
