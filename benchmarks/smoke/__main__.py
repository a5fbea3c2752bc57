"""`python -m benchmarks.smoke [--presets a,b] [--out results/smoke] [--cores N]`: every preset end to end.

Per preset, in ``OUT/<preset>/``: the overlay ``smoke.yaml`` (`benchmarks.smoke.overlay`), raw data
of the preset's format and real image size (`benchmarks.smoke.rawdata`), a stand-in for local
pretrained weights the preset names (a randomly initialised torchvision Mask R-CNN state dict:
same keys and shapes, nothing downloaded), then ``snakemake --configfile PRESET smoke.yaml``.
Every `segfusion` call goes through a shim (`benchmarks.smoke.measure`), so each job's wall time
and peak RSS land in ``measure.jsonl``; the table goes to ``OUT/smoke.md``.

`python -m benchmarks.smoke write-raw ...` is the raw-data step (a subprocess, so it is measured
like a job). `--dry-run` writes the overlays and tiny raw folders and plans each preset only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmarks.smoke.overlay import smoke_overlay
from benchmarks.smoke.report import PresetResult, markdown, read_log

REPO = Path(__file__).resolve().parents[2]
MEASURE = Path(__file__).resolve().parent / "measure.py"


def preset_paths(names: list[str] | None) -> list[Path]:
    """The preset files, all of presets/ by default; an unknown name is an error naming the choices."""
    available = {p.stem: p for p in sorted((REPO / "presets").glob("*.yaml"))}
    if not names:
        return list(available.values())
    unknown = [n for n in names if n not in available]
    if unknown:
        raise SystemExit(f"PRESETS: unknown preset(s) {unknown}; available: {sorted(available)}")
    return [available[n] for n in names]


def _env(bin_dir: Path) -> dict:
    env = dict(os.environ)
    # The worktree's package and benchmarks, whatever an editable install of the venv points at.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["PATH"] = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env["PATH"]])
    return env


def write_shim(bin_dir: Path, log: Path) -> None:
    """``bin_dir/segfusion``: the real CLI run under `measure.py`, appending to ``log``."""
    real = shutil.which("segfusion", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if real is None:
        raise SystemExit("segfusion is not installed next to this Python nor on PATH (make install)")
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "segfusion"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{MEASURE}" "{log}" "{real}" "$@"\n')
    shim.chmod(0o755)


def write_standin_weights(workdir: Path, preset: dict) -> str:
    """A local ``architecture.pretrained`` file the preset expects: random torchvision Mask R-CNN weights."""
    rel = (preset.get("architecture") or {}).get("pretrained")
    if not rel:
        return ""
    path = workdir / rel
    backbone = preset["architecture"].get("backbone", "resnet50")
    if backbone != "resnet50":
        raise SystemExit(f"architecture.pretrained: no stand-in for backbone {backbone!r} (torchvision ships Mask R-CNN on resnet50)")
    import torch
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91).state_dict(), path)
    return f"random stand-in for {rel}"


def snakemake(workdir: Path, preset: Path, env: dict, cores: int | str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(preset), str(workdir / "smoke.yaml"), "--cores", str(cores), *extra]
    with open(workdir / "snakemake.log", "w") as out:
        return subprocess.run(cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)


def prepare(preset_path: Path, out: Path) -> tuple[Path, dict, list]:
    """A fresh work directory with the overlay; returns (workdir, preset, raw jobs)."""
    preset = yaml.safe_load(preset_path.read_text())
    overlay, jobs = smoke_overlay(preset, source=str(preset_path))
    workdir = out / preset_path.stem
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / "smoke.yaml").write_text(f"# smoke overlay of {preset_path.name} (benchmarks/smoke/overlay.py)\n" + yaml.safe_dump(overlay, sort_keys=False))
    return workdir, preset, jobs


def run_preset(preset_path: Path, out: Path, cores: int | str, dry_run: bool = False) -> PresetResult:
    workdir, preset, jobs = prepare(preset_path, out)
    log = workdir / "measure.jsonl"
    write_shim(workdir / ".bin", log)
    env = _env(workdir / ".bin")
    sizes = [f"{d} {'x'.join(map(str, c['synthesize']['size']))}" for d, c in preset["datasets"].items() if c.get("synthesize")]
    sizes += [f"{j.dataset} {j.size[0]}x{j.size[1]}" for j in jobs]
    result = PresetResult(preset_path.stem, ", ".join(sizes))
    for job in jobs:
        size = (32, 64) if dry_run else job.size
        for split, num in job.num.items():
            cmd = [sys.executable, str(MEASURE), str(log), sys.executable, "-m", "benchmarks.smoke", "write-raw", "--format", job.fmt,
                   "--root", str(workdir / job.root), "--split", split, "--num", str(num), "--size", f"{size[0]}x{size[1]}"]
            if subprocess.run(cmd, cwd=REPO, env=env).returncode != 0:
                result.note = f"raw data of {job.dataset}/{split} failed"
                return read_log(result, log)
    if not dry_run:
        result.note = write_standin_weights(workdir, preset)
    t0 = time.perf_counter()
    proc = snakemake(workdir, preset_path, env, cores, *(["-n"] if dry_run else []))
    result.workflow_s = time.perf_counter() - t0
    result.ok = proc.returncode == 0
    if not result.ok:
        result.note = "; ".join(filter(None, [result.note, f"snakemake exit {proc.returncode}, see {workdir / 'snakemake.log'}"]))
    return read_log(result, log)


def cmd_write_raw(a) -> int:
    from benchmarks.smoke.rawdata import write_raw

    h, w = (int(v) for v in a.size.lower().split("x"))
    write_raw(a.format, a.root, a.split, a.num, (h, w))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "write-raw":
        p = argparse.ArgumentParser(prog="python -m benchmarks.smoke write-raw")
        for opt in ("--format", "--root", "--split", "--size"):
            p.add_argument(opt, required=True)
        p.add_argument("--num", type=int, required=True)
        return cmd_write_raw(p.parse_args(argv[1:]))
    p = argparse.ArgumentParser(prog="python -m benchmarks.smoke", description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="", help="comma-separated preset names (default: all of presets/)")
    p.add_argument("--out", default=str(REPO / "results" / "smoke"))
    p.add_argument("--cores", default="all", help="cores of each snakemake run (a number or all)")
    p.add_argument("--dry-run", action="store_true", help="plan each preset (snakemake -n) on tiny raw data")
    a = p.parse_args(argv)
    if a.cores != "all" and not a.cores.isdigit():
        raise SystemExit(f"--cores: a number or all, got {a.cores!r}")
    out = Path(a.out).resolve()
    results = []
    for path in preset_paths([n for n in a.presets.split(",") if n]):
        print(f"smoke: {path.stem} ...", flush=True)
        results.append(run_preset(path, out, a.cores, a.dry_run))
        print(markdown(results[-1:]), flush=True)
    table = markdown(results, f"# make smoke ({'dry run' if a.dry_run else time.strftime('%Y-%m-%d %H:%M')}, --cores {a.cores})")
    (out / "smoke.md").write_text(table)
    print(table)
    print(f"written to {out / 'smoke.md'}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
