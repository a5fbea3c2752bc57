"""Verify the provenance chain (DESIGN.md "Provenance chain"): ``segfusion verify RESULTS_DIR``
and the check `segfusion.report.aggregate.aggregate` runs on every metric it reports.

A chain runs gathered metrics -> shard states -> fused shards -> caches -> model file and data
split (and states -> ground truth). Each link records the identity of the artefact it was made
from (`segfusion.provenance`); a link is

* **stale** when the artefact it names exists but has another identity now (rewritten since),
* **orphaned** when the artefact it names no longer exists (deleted, or its job was killed).

Recorded paths are relative to the directory the workflow ran in (``results/...``); they are
resolved against ``base`` (the results folder's parent for ``segfusion verify``, the current
directory for ``aggregate``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from segfusion.provenance import file_identity, generation, lineage_identity, split_identity

TEMP_PATTERN = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")
"""Names of `segfusion.io.atomic` temporaries (``.{name}.{random}.tmp[.suffix]``)."""


@dataclass(frozen=True)
class Finding:
    """One problem: ``kind`` (stale, orphaned, unverified, leftover, corrupt), the artefact, the reason."""

    kind: str
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.reason}"


class Chain:
    """Memoised identities of the files a chain names (each file is read at most once)."""

    def __init__(self, base: str | os.PathLike | None = None):
        self.base = Path(base) if base is not None else Path.cwd()
        self._ids: dict[tuple[str, str], tuple[str | None, str | None]] = {}

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.base / p

    def _memo(self, kind: str, path: str, compute) -> tuple[str | None, str | None]:
        """(identity, None) or (None, why it cannot be read)."""
        key = (kind, str(self.resolve(path)))
        if key not in self._ids:
            try:
                self._ids[key] = (compute(self.resolve(path)), None)
            except (OSError, ValueError, KeyError) as err:
                self._ids[key] = (None, str(err).splitlines()[0])
        return self._ids[key]

    def model(self, path: str):
        return self._memo("model", path, lambda p: file_identity(p))

    def data(self, path: str):
        return self._memo("data", path, lambda p: split_identity(p))

    def cache(self, path: str):
        def ident(p: Path) -> str:
            from segfusion.inference.cache import CacheReader

            if not p.exists():
                raise FileNotFoundError(f"{p} does not exist")
            with CacheReader(p) as r:
                return r.identity

        return self._memo("cache", path, ident)

    def cache_lineage(self, path: str) -> dict:
        from segfusion.inference.cache import CacheReader

        with CacheReader(self.resolve(path)) as r:
            return dict(r.lineage)

    def fused(self, path: str):
        def ident(p: Path) -> str:
            lin = _fused_lineage(p)
            if lin is None:
                raise ValueError(f"{p} records no lineage")
            return lineage_identity(lin)

        return self._memo("fused", path, ident)

    def state(self, path: str):
        def ident(p: Path) -> str:
            lin = _read_json(p).get("lineage")
            if lin is None:
                raise ValueError(f"{p} records no lineage")
            return lineage_identity(lin)

        return self._memo("state", path, ident)

    # -- one link: the artefact ``owner`` names ``ref`` ({"path", "identity"}) of ``kind``
    def link(
        self, owner: str, kind: str, ref: dict | None, out: list[Finding], recorded_key: str = "identity"
    ) -> bool:
        if not ref:
            return True
        now, err = getattr(self, kind)(ref["path"])
        if now is None:
            gone = not self.resolve(ref["path"]).exists()
            out.append(
                Finding(
                    "orphaned" if gone else "stale",
                    owner,
                    f"its {kind} {ref['path']} {'no longer exists' if gone else f'cannot be read ({err})'}",
                )
            )
            return False
        if now != ref[recorded_key]:
            out.append(
                Finding(
                    "stale",
                    owner,
                    f"made from {kind} {ref['path']} of identity {ref[recorded_key]}, which now has identity {now}",
                )
            )
            return False
        return True


def _read_json(path: Path) -> dict:
    with open(path) as fh:
        return json.load(fh)


def _fused_lineage(path: Path) -> dict | None:
    path = path / "panoptic.json" if path.is_dir() else path
    return (_read_json(path).get("meta") or {}).get("lineage")


def check_cache(chain: Chain, path: str, out: list[Finding]) -> None:
    """A cache against its model file and data split."""
    try:
        lin = chain.cache_lineage(path)
    except (OSError, ValueError) as err:
        out.append(Finding("corrupt", path, str(err).splitlines()[0]))
        return
    if not lin:
        out.append(Finding("unverified", path, "the cache records no lineage (imported or hand-made)"))
        return
    if "model" in lin:
        chain.link(path, "model", {"path": lin["model"]["path"], "identity": lin["model"]["digest"]}, out)
    chain.link(path, "data", lin.get("data"), out)


def check_fused(chain: Chain, path: str, out: list[Finding]) -> dict | None:
    try:
        lin = _fused_lineage(chain.resolve(path))
    except (OSError, ValueError) as err:
        out.append(Finding("corrupt", path, str(err).splitlines()[0]))
        return None
    if lin is None:
        out.append(Finding("unverified", path, "the fused output records no lineage"))
        return None
    for key in ("cache", "semantic_cache"):
        chain.link(path, "cache", lin.get(key), out)
    return lin


def check_state(chain: Chain, path: str, out: list[Finding], deep: bool = True) -> dict | None:
    try:
        lin = _read_json(chain.resolve(path)).get("lineage")
    except (OSError, ValueError) as err:
        out.append(Finding("corrupt", path, str(err).splitlines()[0]))
        return None
    if lin is None:
        out.append(Finding("unverified", path, "the metric state records no lineage"))
        return None
    if chain.link(path, "fused", lin.get("fused"), out) and deep and lin.get("fused"):
        flin = check_fused(chain, lin["fused"]["path"], out)
        for key in ("cache", "semantic_cache"):
            if flin and flin.get(key) and deep:
                check_cache(chain, flin[key]["path"], out)
    chain.link(path, "data", lin.get("ground_truth"), out)
    chain.link(path, "cache", lin.get("cache"), out)
    return lin


def check_metrics(
    chain: Chain, path: str, result: dict | None = None, out: list[Finding] | None = None, deep: bool = True
) -> list[Finding]:
    """Every link of a gathered metrics JSON's chain; returns the findings (none: verified)."""
    out = [] if out is None else out
    if result is None:
        try:
            result = _read_json(chain.resolve(path))
        except (OSError, ValueError) as err:
            out.append(Finding("corrupt", path, str(err).splitlines()[0]))
            return out
    lin = result.get("lineage")
    if lin is None:
        out.append(
            Finding(
                "unverified",
                path,
                "the metrics record no lineage (gathered by an older segfusion, or by hand)",
            )
        )
        return out
    gens = set()
    for ref in lin.get("shards", []):
        if ref.get("identity") is None:
            continue
        if chain.link(path, "state", ref, out):
            slin = check_state(chain, ref["path"], out, deep=deep)
            gens.add(generation(slin))
    if len(gens) > 1:
        out.append(
            Finding("stale", path, f"its shards are of different generations {sorted(map(str, gens))}")
        )
    return out


def verify_metrics_for_report(
    paths: list, results: list[dict], base: str | os.PathLike | None = None
) -> list[str]:
    """`aggregate`'s check: raise LineageError (one line, naming the file and both identities) on
    the first stale or orphaned link of any metric; return the paths of metrics without lineage."""
    from segfusion.provenance import LineageError

    chain = Chain(base)
    unverified = []
    for p, r in zip(paths, results):
        found = check_metrics(chain, str(p), r)
        bad = [f for f in found if f.kind != "unverified"]
        if bad:
            raise LineageError(
                f"aggregate: {p} is not current: {bad[0]}; re-run the workflow (snakemake) to regenerate it"
            )
        if any(f.path == str(p) for f in found if f.kind == "unverified"):
            unverified.append(str(p))
    return unverified


def _is_shard_state(path: Path) -> bool:
    return re.fullmatch(r"shard-\d+-of-\d+\.json", path.name) is not None


def verify_results(results_dir: str | os.PathLike) -> tuple[list[Finding], int]:
    """Check every artefact under a results folder; returns (findings, artefacts checked).

    Caches (``*/predictions/**.h5``), fused shards (``*/fused/**/shard-*``), metric shard states
    and gathered metrics (``*/metrics/**.json``), the summary's inputs, and leftover temporaries
    of killed writers.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such results folder")
    chain = Chain(root.resolve().parent)
    out: list[Finding] = []
    n = 0

    def rel(p: Path) -> str:
        try:
            return str(p.resolve().relative_to(chain.base))
        except ValueError:
            return str(p)

    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            if TEMP_PATTERN.match(name):
                out.append(
                    Finding(
                        "leftover",
                        rel(Path(dirpath) / name),
                        "temporary file of a killed writer (removed by the next write, or delete it)",
                    )
                )
        dirnames[:] = [d for d in dirnames if not TEMP_PATTERN.match(d) and d != ".snakemake"]
    for cache in sorted(root.glob("*/predictions/**/*.h5")):
        if TEMP_PATTERN.match(cache.name):
            continue
        n += 1
        check_cache(chain, rel(cache), out)
    for pan in sorted(root.glob("*/fused/**/panoptic.json")):
        if any(TEMP_PATTERN.match(part) for part in pan.parts):
            continue
        n += 1
        check_fused(chain, rel(pan.parent), out)
    for js in sorted(root.glob("*/metrics/**/*.json")):
        if TEMP_PATTERN.match(js.name):
            continue
        n += 1
        if _is_shard_state(js):
            check_state(chain, rel(js), out, deep=False)
        else:
            check_metrics(chain, rel(js), out=out, deep=False)
    prov = root / "summary" / "provenance.json"
    if prov.exists():
        n += 1
        recorded = (_read_json(prov).get("lineage") or {}).get("metrics") or {}
        for p, digest in recorded.items():
            target = chain.resolve(p)
            if not target.exists():
                out.append(Finding("orphaned", rel(prov), f"summarises {p}, which no longer exists"))
            elif file_identity(target) != digest:
                out.append(
                    Finding(
                        "stale", rel(prov), f"summarises {p}, which has changed since (re-run the aggregate)"
                    )
                )
    # One finding per (kind, artefact, reason).
    return list(dict.fromkeys(out)), n
