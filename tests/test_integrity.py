"""Integrity of results (issue 12): checksummed caches, value checks, the provenance chain,
`segfusion verify`, leftover temporaries, and no stale metrics after a killed job.

Tests that modify results copy the session's ``micro_run`` workdir first.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from segfusion.datasets.cityscapes import cityscapes_classes
from segfusion.inference.cache import CacheError, CacheReader, CacheWriter
from segfusion.io.atomic import atomic_dir, atomic_path, write_json
from tests.conftest import REPO, run_snakemake

V = "results/micro"
FUSED = f"{V}/fused/panoptic_fpn/seed0/kirillov/val/shard-0-of-1"
CACHE = f"{V}/predictions/panoptic_fpn/seed0/val/shard-0-of-1.h5"
OTHER_CACHE = f"{V}/predictions/panoptic_fpn_imp/seed0/val/shard-0-of-1.h5"
STATE = f"{V}/metrics/panoptic_fpn/seed0/kirillov/val/shard-0-of-1.json"


# --------------------------------------------------------------------------- checksummed caches
def _write(path, compression="zstd", checksum=True):
    classes = cityscapes_classes()
    rng = np.random.default_rng(0)
    with CacheWriter(path, "m", "h", classes, compression=compression, checksum=checksum) as w:
        for k in range(2):
            w.add(
                f"img{k}", k, (32, 64),
                boxes=np.array([[1, 2, 10, 12], [5, 5, 30, 20]], np.float32), scores=np.array([0.9, 0.4]),
                labels=np.array([11, 13]), mask_prob=rng.random((2, 28, 28)),
                semantic_prob=rng.dirichlet(np.ones(19), size=(8, 16)).transpose(2, 0, 1),
                proposals=np.array([[0, 0, 5, 5]], np.float32),
            )  # fmt: skip


def _flip(path, dataset, offset_in_chunk=7):
    """Flip one byte inside the first stored chunk of ``dataset`` (raw bytes of the file)."""
    with h5py.File(path, "r") as f:
        d = f[dataset].id
        start = (
            d.get_chunk_info(0).byte_offset if f[dataset].chunks else d.get_offset()
        )  # contiguous: no chunks
    with open(path, "r+b") as fh:
        fh.seek(start + offset_in_chunk)
        b = fh.read(1)
        fh.seek(start + offset_in_chunk)
        fh.write(bytes([b[0] ^ 0xFF]))


@pytest.mark.parametrize(
    ("dataset", "read"),
    [
        ("images/img1/semantic_prob", "read_semantic"),  # Zstd-compressed chunk
        ("images/img1/scores", "read_detections"),  # uncompressed
        ("images/img1/mask_prob", "read_detections"),  # uncompressed, the float16 masks
    ],
)
def test_flipped_byte_is_a_cache_error_naming_file_and_image(tmp_path, dataset, read):
    path = tmp_path / "c.h5"
    _write(path)
    with h5py.File(path, "r") as f:
        assert f[dataset].fletcher32
    _flip(path, dataset)
    with CacheReader(path) as r:
        with pytest.raises(CacheError, match=r"c\.h5: image 'img1' cannot be read.*checksum"):
            getattr(r, read)("img1")
        r.read("img0")  # the other image is intact


def test_without_checksum_a_flipped_byte_goes_unnoticed(tmp_path):
    """What the checksum buys: the same flip in an unchecksummed file silently changes a score."""
    path = tmp_path / "c.h5"
    _write(path, checksum=False)
    with CacheReader(path) as r:
        before = r.read_detections("img1").instances.scores.copy()
    _flip(path, "images/img1/scores", offset_in_chunk=1)
    with CacheReader(path) as r:
        after = r.read_detections("img1").instances.scores
    assert not np.array_equal(before, after)


def test_flipped_byte_in_the_index_names_the_file(tmp_path):
    path = tmp_path / "c.h5"
    _write(path)
    _flip(path, "index/image_size", offset_in_chunk=0)
    with pytest.raises(CacheError, match=r"c\.h5: corrupt or incomplete cache index"):
        CacheReader(path)


@pytest.mark.parametrize(
    ("dataset", "value", "message"),
    [
        ("scores", np.array([3e38, 0.4], np.float32), "scores outside"),
        ("scores", np.array([np.nan, 0.4], np.float32), "scores outside"),
        ("mask_prob", np.full((2, 28, 28), np.nan, np.float16), "mask probabilities not finite"),
        ("mask_prob", np.full((2, 28, 28), 1.5, np.float16), "outside"),
        ("boxes", np.array([[10, 2, 1, 12], [5, 5, 30, 20]], np.float32), "box 0"),
        ("boxes", np.array([[np.inf, 2, 10, 12], [5, 5, 30, 20]], np.float32), "boxes are not finite"),
    ],
)
def test_values_out_of_range_are_refused(tmp_path, dataset, value, message):
    path = tmp_path / "c.h5"
    _write(path)
    with h5py.File(path, "a") as f:  # a valid checksum over invalid values
        f[f"images/img0/{dataset}"][...] = value
    with CacheReader(path) as r, pytest.raises(CacheError, match=rf"c\.h5: image 'img0': .*{message}"):
        r.read("img0")


def test_older_format_is_refused_with_re_run_predict(tmp_path):
    path = tmp_path / "c.h5"
    _write(path)
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 2
    with pytest.raises(
        CacheError,
        match=r"c\.h5: cache format_version 2 \(an older format, without checksums\), this segfusion reads 3; re-run predict",
    ):
        CacheReader(path)


# --------------------------------------------------------------------------- leftover temporaries
def test_leftovers_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "shard-0-of-1.h5"
    killed = tmp_path / ".shard-0-of-1.h5.k1ll3d_x.tmp.h5"
    killed.write_bytes(b"half a file")
    other = tmp_path / ".shard-1-of-2.h5.k1ll3d_x.tmp.h5"  # another path's temporary: kept
    other.write_bytes(b"x")
    dead_dir = tmp_path / ".fused.abcdefgh.tmp"
    dead_dir.mkdir()
    (dead_dir / "panoptic.json").write_text("{}")
    _write(target)
    with atomic_dir(tmp_path / "fused") as d:
        (d / "x").write_text("1")
    write_json(tmp_path / "m.json", {})
    with atomic_path(tmp_path / "m.json") as t:
        t.write_text("{}")
    assert not killed.exists() and not dead_dir.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other.name, "fused", "m.json", target.name])


# --------------------------------------------------------------------------- the provenance chain
def _micro_copy(micro_run, tmp_path) -> Path:
    work = tmp_path / "w"
    shutil.copytree(micro_run, work, symlinks=True, ignore=shutil.ignore_patterns(".snakemake"))
    return work


def _cli(cwd, *argv):
    """Run the CLI in ``cwd`` (recorded paths are relative to the workdir); returns (rc, stderr)."""
    proc = subprocess.run(
        [str(REPO / ".venv/bin/segfusion"), *argv], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_every_artefact_records_its_lineage(micro_run):
    with CacheReader(micro_run / CACHE) as r:
        lin = r.lineage
        assert set(lin) >= {"model", "data", "shard", "settings"} and len(lin["model"]["digest"]) == 64
        cache_id = r.identity
    meta = json.loads((micro_run / FUSED / "panoptic.json").read_text())["meta"]
    assert meta["lineage"]["cache"]["identity"] == cache_id and meta["lineage"]["fusion"]
    state = json.loads((micro_run / STATE).read_text())["lineage"]
    assert state["cache"]["identity"] == cache_id and state["fused"]["path"] == FUSED
    gathered = json.loads((micro_run / f"{V}/metrics/panoptic_fpn/seed0/kirillov/val.json").read_text())[
        "lineage"
    ]
    assert [s["path"] for s in gathered["shards"]] == [STATE] and gathered["generation"]


def test_evaluate_refuses_another_models_cache_and_another_splits_ground_truth(micro_run, tmp_path):
    out = str(tmp_path / "s.json")
    rc, err = _cli(
        micro_run,
        "evaluate",
        "--data",
        f"{V}/data/val",
        "--fused",
        FUSED,
        "--cache",
        OTHER_CACHE,
        "--out",
        out,
    )
    with CacheReader(micro_run / OTHER_CACHE) as other, CacheReader(micro_run / CACHE) as own:
        ids = (other.identity, own.identity)
    assert rc == 1 and err.count("\n") == 1, err
    assert OTHER_CACHE in err and ids[0] in err and ids[1] in err and FUSED in err
    rc, err = _cli(
        micro_run, "evaluate", "--data", f"{V}/data/train", "--fused", FUSED, "--cache", CACHE, "--out", out
    )
    assert rc == 1 and err.count("\n") == 1 and f"{V}/data/train" in err and "identity" in err, err
    assert not Path(out).exists()


def test_gather_refuses_shards_of_different_generations(micro_run, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    shutil.copy(micro_run / STATE, a)
    # The same fused shard evaluated with other evaluation params: another generation.
    rc, err = _cli(
        micro_run,
        "evaluate",
        "--data",
        f"{V}/data/val",
        "--fused",
        FUSED,
        "--cache",
        CACHE,
        "--params",
        '{"boundary_bins": [0, 3, 9]}',
        "--out",
        str(b),
    )
    assert rc == 0, err
    rc, err = _cli(micro_run, "gather", str(a), str(b), "--out", str(tmp_path / "m.json"))
    assert rc == 1 and "different generations" in err and str(a) in err and str(b) in err, err


def test_verify_on_a_clean_run_finds_nothing(micro_run):
    rc, out = _cli(micro_run, "verify", "results")
    assert rc == 0 and "none stale or orphaned" in out, out


def test_one_stale_shard_is_found_by_verify_and_refused_by_aggregate(micro_run, tmp_path):
    work = _micro_copy(micro_run, tmp_path)
    # Re-fuse one shard with another parameter: its metric state (and everything after) is stale.
    rc, err = _cli(
        work,
        "fuse",
        "--cache",
        CACHE,
        "--method",
        "kirillov",
        "--params",
        '{"overlap_threshold": 0.3}',
        "--out",
        FUSED,
    )
    assert rc == 0, err
    rc, out = _cli(work, "verify", "results")
    assert rc == 1
    stale = [line for line in out.splitlines() if line.startswith("stale:")]
    assert stale == [f"stale: {STATE}: " + stale[0].split(": ", 2)[2]] and FUSED in stale[0], out
    metrics = sorted(str(p.relative_to(work)) for p in (work / V / "metrics").glob("*/seed0/*/val.json"))
    rc, err = _cli(work, "aggregate", *metrics, "--out", "results/summary2")
    assert (
        rc == 1
        and err.count("\n") == 1
        and "panoptic_fpn/seed0/kirillov/val.json is not current" in err
        and FUSED in err
    ), err
    assert not (work / "results/summary2/metrics.csv").exists()
    # A deleted cache: everything fused from it is orphaned.
    (work / OTHER_CACHE).unlink()
    rc, out = _cli(work, "verify", "results")
    assert (
        rc == 1
        and f"orphaned: {V}/fused/panoptic_fpn_imp/seed0/jsis/val/shard-0-of-1: its cache {OTHER_CACHE} no longer exists"
        in out
    ), out


# --------------------------------------------------------------------------- the workflow
def _predict_pids(workdir: Path) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(d / "cwd")
        except OSError:
            continue
        if any(c.endswith(b"segfusion") for c in cmd[:2]) and b"predict" in cmd and cwd == str(workdir):
            pids.append(int(d.name))
    return pids


def test_killed_predict_inside_snakemake_is_regenerated_with_everything_after_it(micro_run, tmp_path):
    """Issue 12, case 1: change predict.batch_size, kill -9 predict mid-run, run snakemake again."""
    work = tmp_path / "w"
    shutil.copytree(micro_run, work, symlinks=True)  # with .snakemake: the params trigger fires
    config = yaml.safe_load((work / "config.yaml").read_text())
    config["predict"]["batch_size"] = 1
    config["models"] = ["panoptic_fpn"]  # fewer jobs; the other models' results stay as they are
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    old_metrics = json.loads((work / V / "metrics/panoptic_fpn/seed0/kirillov/val.json").read_text())

    env = dict(os.environ, PATH=f"{REPO / '.venv/bin'}:{os.environ['PATH']}")
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(work),
        "--configfile",
        str(work / "config.yaml"),
        "--cores",
        "1",
    ]
    proc = subprocess.Popen(
        cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 300
    killed = False
    while time.monotonic() < deadline and proc.poll() is None:
        pids = _predict_pids(work)
        if pids:
            time.sleep(1.0)  # let it open its temporary cache
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.1)
    log = proc.communicate(timeout=300)[0]
    assert killed and proc.returncode != 0, log[-3000:]
    assert not (work / CACHE).exists()  # Snakemake removed the failed job's output

    rerun = run_snakemake(work, "--cores", "2")
    assert "rule predict" in rerun.stdout + rerun.stderr
    assert (work / CACHE).exists()
    leftovers = [p for p in (work / V / "predictions").rglob(".*tmp*")]
    assert leftovers == []
    with CacheReader(work / CACHE) as r:
        new_id = r.identity
    state = json.loads((work / STATE).read_text())
    assert state["lineage"]["cache"]["identity"] == new_id  # evaluated on the new predictions
    new_metrics = json.loads((work / V / "metrics/panoptic_fpn/seed0/kirillov/val.json").read_text())
    assert new_metrics["lineage"] != old_metrics["lineage"]
    rc, out = _cli(work, "verify", "results")
    # Only the models dropped from the config are left, and they are intact.
    assert rc == 0, out
    again = run_snakemake(work, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_changed_setting_without_metadata_is_rerun(micro_run, tmp_path):
    """Issue 12, case 2: results without `.snakemake` (copied), or `--rerun-triggers mtime`."""
    work = _micro_copy(micro_run, tmp_path)
    config = yaml.safe_load((work / "config.yaml").read_text())
    config["inference"]["box_score_thresh"] = 0.3
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    dry = run_snakemake(work, "-n", "--rerun-triggers", "mtime")
    text = dry.stdout + dry.stderr
    assert f"segfusion integrity: {CACHE} is stale" in text, text[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", text.split("Job stats:")[1], re.M))
    assert (
        counts["predict"] == "3"
        and counts["fuse"] == counts["evaluate"] == counts["gather"] == "11"
        and counts["aggregate"] == "1"
    )
    assert not any(rule.startswith("train") or rule == "convert" for rule in counts), counts


def test_changed_training_setting_without_metadata_retrains(micro_run, tmp_path):
    """Issue 12: a training parameter changed on results without `.snakemake` metadata."""
    work = _micro_copy(micro_run, tmp_path)
    config = yaml.safe_load((work / "config.yaml").read_text())
    config["stage2"]["schedule"]["lr"] = config["stage2"]["schedule"]["lr"] / 2
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    dry = run_snakemake(work, "-n", "--rerun-triggers", "mtime")
    text = dry.stdout + dry.stderr
    for model in ("panoptic_fpn", "panoptic_fpn_imp"):
        assert f"segfusion integrity: {V}/models/{model}/seed0/stage2.pt is stale (train.schedule.lr: trained with" in text, text[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", text.split("Job stats:")[1], re.M))
    assert counts["train_stage2"] == "2" and "train_stage1" not in counts, counts
    assert counts["predict"] == "2" and counts["aggregate"] == "1"  # maskrcnn_imp's cache is the stage-1 model's: kept


# --------------------------------------------------------------------------- conversion
def test_segment_absent_from_its_png_and_label_without_image_are_not_dropped(tmp_path):
    """Issue 12, case 5: panopticapi rejects a listed segment with no pixel; so does convert."""
    from segfusion.datasets.canonical import DatasetError
    from segfusion.datasets.registry import convert
    from tests.datasets.test_coco_panoptic import _edit_json, _write_raw

    raw = _write_raw(tmp_path / "raw")
    _edit_json(raw, lambda d: d["annotations"][1]["segments_info"].append({"id": 99, "category_id": 1, "iscrowd": 0}))
    with pytest.raises(DatasetError, match=r"panoptic_val/000000000001\.png: segments \[99\] of .*panoptic_val\.json segments_info .*no pixel"):
        convert("coco_panoptic", raw, "val", tmp_path / "out")
    skipped = convert("coco_panoptic", raw, "val", tmp_path / "out", skip_bad=True)
    assert [s["name"] for s in skipped] == ["000000000001"] and "[99]" in (tmp_path / "out" / "skipped.csv").read_text()

    raw2 = _write_raw(tmp_path / "raw2")
    _edit_json(raw2, lambda d: d["images"].pop(2))  # its label file and annotation remain
    with pytest.raises(DatasetError, match=r"000000000002\.png: label file of image id 12 in .*panoptic_val\.json, which lists no image"):
        convert("coco_panoptic", raw2, "val", tmp_path / "out2")
    convert("coco_panoptic", raw2, "val", tmp_path / "out2", skip_bad=True)
    assert "000000000002" in (tmp_path / "out2" / "skipped.csv").read_text()
