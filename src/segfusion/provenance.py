"""Provenance of outputs: package version, git commit, library versions."""

from __future__ import annotations

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
