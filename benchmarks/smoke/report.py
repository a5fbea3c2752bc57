"""The smoke table: per preset and stage, jobs, wall time and peak RSS, from the measure logs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

STAGES = ("raw data", "synthesize", "conversion", "dataset stats", "stage 1", "stage 2", "predict", "fuse", "evaluate", "gather", "aggregate")
"""Row order; "raw data" is written by the driver, the others are workflow jobs (one CLI call each)."""
_BY_COMMAND = {"synthesize": "synthesize", "convert": "conversion", "dataset-stats": "dataset stats", "predict": "predict",
               "fuse": "fuse", "evaluate": "evaluate", "gather": "gather", "aggregate": "aggregate"}


def stage_of(argv: list[str]) -> str:
    """The stage of one `segfusion` call from its arguments (``train`` is split by ``--stage``)."""
    if not argv:
        return "?"
    if "write-raw" in argv:  # python -m benchmarks.smoke write-raw
        return "raw data"
    if argv[0] == "train":
        return f"stage {argv[argv.index('--stage') + 1]}" if "--stage" in argv else "train"
    return _BY_COMMAND.get(argv[0], argv[0])


@dataclass
class StageRow:
    jobs: int = 0
    wall_s: float = 0.0  # sum over the stage's jobs
    max_wall_s: float = 0.0
    peak_rss_mb: float = 0.0  # max over the stage's jobs
    failed: int = 0


@dataclass
class PresetResult:
    preset: str
    sizes: str  # the image sizes, e.g. "cityscapes 1024x2048"
    workflow_s: float | None = None  # elapsed time of the snakemake run
    ok: bool = False
    note: str = ""
    stages: dict[str, StageRow] = field(default_factory=dict)

    def add(self, stage: str, wall_s: float, rss_mb: float | None, rc: int = 0) -> None:
        row = self.stages.setdefault(stage, StageRow())
        row.jobs += 1
        row.wall_s += wall_s
        row.max_wall_s = max(row.max_wall_s, wall_s)
        row.peak_rss_mb = max(row.peak_rss_mb, rss_mb or 0.0)
        row.failed += rc != 0


def read_log(result: PresetResult, log: Path) -> PresetResult:
    """Add every job of a measure log (JSON lines from `benchmarks.smoke.measure`) to ``result``."""
    if not log.exists():
        return result
    for n, line in enumerate(log.read_text().splitlines(), 1):
        try:
            rec = json.loads(line)
            result.add(stage_of(rec["argv"]), float(rec["wall_s"]), float(rec["max_rss_mb"]), int(rec["rc"]))
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{log}:{n}: not a measure record ({err!r})") from None
    return result


def _order(stage: str) -> int:
    return STAGES.index(stage) if stage in STAGES else len(STAGES)


def markdown(results: list[PresetResult], header: str = "") -> str:
    """The per-stage table and the per-preset totals as Markdown."""
    lines = [header, ""] if header else []
    lines += ["| preset | stage | jobs | wall s (sum) | slowest job s | peak RSS MB |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in results:
        for stage in sorted(r.stages, key=_order):
            row = r.stages[stage]
            fail = f" ({row.failed} failed)" if row.failed else ""
            lines.append(f"| {r.preset} | {stage}{fail} | {row.jobs} | {row.wall_s:.1f} | {row.max_wall_s:.1f} | {row.peak_rss_mb:.0f} |")
    lines += ["", "| preset | image size (H x W) | workflow wall s | peak RSS MB (any job) | status |", "| --- | --- | ---: | ---: | --- |"]
    for r in results:
        peak = max((row.peak_rss_mb for row in r.stages.values()), default=0.0)
        wall = f"{r.workflow_s:.0f}" if r.workflow_s is not None else "-"
        lines.append(f"| {r.preset} | {r.sizes} | {wall} | {peak:.0f} | {'ok' if r.ok else 'FAILED'}{': ' + r.note if r.note else ''} |")
    total = sum(r.workflow_s or 0.0 for r in results) + sum(r.stages["raw data"].wall_s for r in results if "raw data" in r.stages)
    lines += ["", f"Total wall time (raw data + workflows): {total:.0f} s ({total / 60:.1f} min)."]
    return "\n".join(lines) + "\n"
