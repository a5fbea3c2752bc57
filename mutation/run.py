"""Mutation testing of the pure core: one mutmut session per module, per-module kill rates, survivors.

    python mutation/run.py                      # all modules (what `make mutate` runs)
    python mutation/run.py --modules fusion,paste
    python mutation/run.py --modules imp --keep # reuse the previous session's cached verdicts
    python mutation/run.py --report-only        # re-print the last results without running anything
    python mutation/run.py --modules paste --keep --rerun-survivors   # after adding tests: re-test survivors

Each module runs in its own scratch copy of the work tree, ``results/mutation/<module>/`` (git-ignored,
removed by `make clean`), so mutmut's ``mutants/`` never lands in the tree and the source is a snapshot
taken at start. The copy's pyproject.toml keeps the repo's ``[tool.mutmut]`` settings and overrides two of
them: ``only_mutate`` (the module's files) and ``pytest_add_cli_args_test_selection`` (the module's own unit
tests, never the slow workflow tests). Inside that set, mutmut records which tests call each mutated
function and runs only those against each of its mutants.

Killed = killed by a failing test, by a timeout or by a crash. Mutants listed in mutation/EQUIVALENT.md
(by mutmut name) are counted apart: the "adjusted" rate is killed / (total - equivalent).

Limitation: mutmut does not mutate decorated functions, so the numba kernels of models/imp_cpu.py
(``@_jit`` -> numba.njit) are not mutated at all; only the Python glue of that file is. See EQUIVALENT.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# module -> (files to mutate, its own unit tests). Globs are expanded against the repo at run time, so new
# tests/<area>/test_edges_<module>.py files join their module's selection without editing this table.
MODULES: dict[str, tuple[list[str], list[str]]] = {
    "fusion": (
        ["src/segfusion/fusion/*"],
        ["tests/fusion"],
    ),
    "metrics": (
        ["src/segfusion/metrics/*"],
        ["tests/metrics", "tests/report/test_gather.py", "tests/test_evaluation.py"],
    ),
    "imp": (
        ["src/segfusion/models/imp.py", "src/segfusion/models/imp_cpu.py", "src/segfusion/models/imp_torch.py"],
        ["tests/models/test_imp.py", "tests/models/test_edges_imp*.py"],
    ),
    "paste": (
        ["src/segfusion/inference/paste.py"],
        ["tests/inference/test_paste.py", "tests/inference/test_edges_paste.py"],
    ),
}

SKIP = {".git", ".venv", "results", ".snakemake", "mutants", "__pycache__", ".pytest_cache", ".ruff_cache",
        ".hypothesis", "benchmarks/out"}  # fmt: skip

# mutmut's exit-code -> status table (mutmut/stats.py), folded into the four columns printed here.
KILLED = {"killed", "timeout", "segfault", "caught by type check"}


def status_of(code: int | None) -> str:
    from mutmut.stats import status_by_exit_code

    return status_by_exit_code[code]


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} to TOML")


def toml_table(name: str, table: dict) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in table.items()) + "\n"


def expand(patterns: list[str]) -> list[str]:
    out = []
    for p in patterns:
        hits = sorted(str(h.relative_to(REPO)) for h in REPO.glob(p)) if any(c in p for c in "*?[") else [p]
        out += [h for h in hits if (REPO / h).exists()]
    return out


def prepare(module: str, work: Path, keep: bool) -> None:
    """Snapshot the tree into ``work`` and write its pyproject.toml with the module's mutmut settings."""
    if work.exists() and not keep:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)

    def ignore(directory: str, names: list[str]) -> set[str]:
        rel = Path(directory).relative_to(REPO)
        return {n for n in names if n in SKIP or str(rel / n) in SKIP or n.endswith(".pyc")}

    for entry in REPO.iterdir():
        if entry.name in SKIP or entry.name == "pyproject.toml":
            continue
        target = work / entry.name
        if entry.is_dir():
            # copy2 keeps mtimes: with --keep, mutmut regenerates only files changed since the last session
            shutil.copytree(entry, target, ignore=ignore, dirs_exist_ok=True, copy_function=shutil.copy2)
        else:
            shutil.copy2(entry, target)

    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    mutmut = dict(data["tool"]["mutmut"])
    files, tests = MODULES[module]
    mutmut["only_mutate"] = files
    mutmut["pytest_add_cli_args_test_selection"] = expand(tests)
    text = toml_table("tool.mutmut", mutmut)
    if "pytest" in data.get("tool", {}):
        text += toml_table("tool.pytest.ini_options", data["tool"]["pytest"]["ini_options"])
    new = work / "pyproject.toml"
    if not new.exists() or new.read_text() != text:
        new.write_text(text)


def run_mutmut(work: Path, max_children: int, log: Path, names: list[str] | None = None) -> int:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["NUMBA_CACHE_DIR"] = str(work / ".numba_cache")
    env.pop("PYTHONPATH", None)
    cmd = ["nice", "-n", "19", str(BIN / "mutmut"), "run", "--max-children", str(max_children), *(names or [])]
    with open(log, "w") as out:
        return subprocess.call(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)


def load_results(work: Path) -> dict[str, dict[str, str]]:
    """{source file: {mutant name: status}} from mutmut's mutants/**/*.py.meta files."""
    results = {}
    for meta in sorted((work / "mutants").rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        src = str(meta.relative_to(work / "mutants"))[: -len(".meta")]
        results[src] = {k: status_of(v) for k, v in data["exit_code_by_key"].items()}
    return results


def load_equivalent() -> dict[str, str]:
    path = REPO / "mutation" / "EQUIVALENT.md"
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^\s*[-*]\s*`([\w.]+__mutmut_\d+)`\s*[:—-]*\s*(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def report(module: str, work: Path, equivalent: dict[str, str], show_diffs: bool) -> tuple[int, int, int]:
    results = load_results(work)
    if not results:
        print(f"[{module}] no results (see {work / 'mutmut.log'})")
        return 0, 0, 0
    print(f"\n== {module} ==")
    print(f"  {'file':52s} {'mutants':>7s} {'killed':>6s} {'surv.':>5s} {'equiv':>5s} {'rate':>7s} {'adjusted':>8s}")
    tot = kil = eqv = 0
    survivors: list[tuple[str, str]] = []
    for src, mutants in results.items():
        n = len(mutants)
        k = sum(s in KILLED for s in mutants.values())
        e = sum(name in equivalent and s not in KILLED for name, s in mutants.items())
        survivors += [(name, s) for name, s in mutants.items() if s not in KILLED]
        tot, kil, eqv = tot + n, kil + k, eqv + e
        rate = f"{100 * k / n:6.1f}%" if n else "    -  "
        adj = f"{100 * k / (n - e):7.1f}%" if n - e else "     -  "
        print(f"  {src:52s} {n:7d} {k:6d} {n - k - e:5d} {e:5d} {rate} {adj}")
    rate = f"{100 * kil / tot:6.1f}%" if tot else "    -  "
    adj = f"{100 * kil / (tot - eqv):7.1f}%" if tot - eqv else "     -  "
    print(f"  {'TOTAL ' + module:52s} {tot:7d} {kil:6d} {tot - kil - eqv:5d} {eqv:5d} {rate} {adj}")
    live = [(n, s) for n, s in survivors if n not in equivalent]
    if live:
        print(f"  surviving mutants ({len(live)}; `python mutation/run.py --show NAME` prints the diff):")
        for name, status in live:
            print(f"    {name}: {status}")
            if show_diffs:
                print(indent(diff(work, name), 6))
    stale = [n for n in equivalent if n.startswith(f"{prefix_of(module)}") and n not in
             {m for ms in results.values() for m in ms}]  # fmt: skip
    for name in stale:
        print(f"  note: EQUIVALENT.md lists {name}, which this session did not generate (renumbered? re-check it)")
    return tot, kil, eqv


def prefix_of(module: str) -> str:
    files = MODULES[module][0]
    return os.path.commonprefix([f.replace("src/", "").replace("/", ".").removesuffix(".py").rstrip("*")
                                 for f in files])  # fmt: skip


def indent(text: str, n: int) -> str:
    return "\n".join(" " * n + line for line in text.splitlines())


def diff(work: Path, name: str) -> str:
    out = subprocess.run([str(BIN / "mutmut"), "show", name], cwd=work, capture_output=True, text=True)
    return out.stdout.strip() or out.stderr.strip()


def module_of(name: str) -> str | None:
    for module in MODULES:
        if name.startswith(prefix_of(module)):
            return module
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", default=",".join(MODULES), help=f"comma-separated subset of {','.join(MODULES)}")
    parser.add_argument("--workdir", type=Path, default=REPO / "results" / "mutation")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--keep", action="store_true", help="reuse the scratch copy and mutmut's cached verdicts")
    parser.add_argument("--rerun-survivors", action="store_true",
                        help="with --keep: re-test only the last session's survivors (after adding tests)")
    parser.add_argument("--report-only", action="store_true", help="print the last results, run nothing")
    parser.add_argument("--diffs", action="store_true", help="print each surviving mutant's diff")
    parser.add_argument("--show", metavar="NAME", help="print one mutant's diff and exit")
    parser.add_argument("--fail-under", type=float, default=None, help="exit 1 if an adjusted module rate is lower")
    args = parser.parse_args(argv)

    if args.show:
        module = module_of(args.show)
        if module is None:
            parser.error(f"{args.show} belongs to none of {list(MODULES)}")
        print(diff(args.workdir / module, args.show))
        return 0

    modules = [m.strip() for m in args.modules.split(",") if m.strip()]
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; choose from {list(MODULES)}")
    equivalent = load_equivalent()
    summary = []
    failed = False
    for module in modules:
        work = args.workdir / module
        seconds = None
        if not args.report_only:
            names = None
            if args.rerun_survivors:
                if not args.keep:
                    parser.error("--rerun-survivors needs --keep")
                names = sorted(n for r in load_results(work).values() for n, s in r.items() if s not in KILLED)
                if not names:
                    print(f"[{module}] no survivors to re-test")
            prepare(module, work, args.keep)
            print(f"[{module}] mutmut run in {work} (log: {work / 'mutmut.log'}) ...", flush=True)
            start = time.monotonic()
            code = 0 if names == [] else run_mutmut(work, args.max_children, work / "mutmut.log", names)
            seconds = time.monotonic() - start
            print(f"[{module}] done in {seconds:.0f} s (mutmut exit code {code})", flush=True)
            if code != 0:
                print((work / "mutmut.log").read_text()[-3000:])
                failed = True
        tot, kil, eqv = report(module, work, equivalent, args.diffs)
        summary.append((module, tot, kil, eqv, seconds))

    print("\n== summary ==")
    print(f"  {'module':10s} {'mutants':>7s} {'killed':>6s} {'equiv':>5s} {'rate':>7s} {'adjusted':>8s} {'wall':>7s}")
    for module, tot, kil, eqv, seconds in summary:
        rate = 100 * kil / tot if tot else float("nan")
        adj = 100 * kil / (tot - eqv) if tot - eqv else float("nan")
        wall = f"{seconds:6.0f}s" if seconds is not None else "      -"
        print(f"  {module:10s} {tot:7d} {kil:6d} {eqv:5d} {rate:6.1f}% {adj:7.1f}% {wall}")
        if args.fail_under is not None and not adj >= args.fail_under:
            failed = True
    total_wall = sum(s for *_, s in summary if s is not None)
    if total_wall:
        print(f"  total wall time {total_wall / 60:.1f} min")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
