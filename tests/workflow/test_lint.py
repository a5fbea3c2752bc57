"""The workflow passes `snakemake --lint` and snakefmt; ruff passes on the package."""

import subprocess
import sys

from tests.conftest import REPO

BIN = REPO / ".venv" / "bin"


def _bin(name):
    path = BIN / name
    return str(path) if path.exists() else str(__import__("pathlib").Path(sys.executable).parent / name)


def test_snakemake_lint_is_clean():
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "-s", str(REPO / "Snakefile"), "--directory", str(REPO)], capture_output=True, text=True, timeout=120, cwd=REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Congratulations" in out, out[-3000:]


def test_snakefmt_check_passes():
    files = [str(REPO / "Snakefile"), *map(str, sorted((REPO / "workflow" / "rules").glob("*.smk")))]
    proc = subprocess.run([_bin("snakefmt"), "--check", *files], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_is_clean():
    proc = subprocess.run([_bin("ruff"), "check", "src", "tests", "benchmarks"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:]
