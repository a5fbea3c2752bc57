"""Run one command and append its wall time and peak RSS to a JSON-lines log.

`python measure.py LOG COMMAND ARGS...` is what the smoke driver's `segfusion` shim executes, so
every CLI call of the workflow (one per job) is measured without editing the rules.

Peak RSS is the kernel's high-water mark of the command (``getrusage(RUSAGE_CHILDREN).ru_maxrss``:
the largest resident set of any waited-for descendant, e.g. one converter worker, not their sum).
It is exact, where Snakemake's ``benchmark:`` samples the process tree (every second for 30 s, then
every 30 s), misses peaks between samples and reports NA for short jobs, and only four rules have it.
Standard library only: it must start fast and never import the package it measures.
"""

import json
import os
import resource
import signal
import subprocess
import sys
import time


def _short(args: list[str], limit: int = 160) -> list[str]:
    return [a if len(a) <= limit else a[:limit] + "..." for a in args]


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        raise SystemExit("usage: measure.py LOG COMMAND [ARGS...]")
    log, command = argv[0], argv[1:]
    start = time.time()
    t0 = time.perf_counter()
    child = subprocess.Popen(command)
    for sig in (signal.SIGTERM, signal.SIGINT):  # Snakemake stops a job with SIGTERM: pass it on
        signal.signal(sig, lambda s, _f: child.send_signal(s))
    rc = child.wait()
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    record = {
        "argv": _short(command[1:]),
        "rc": rc,
        "start": start,
        "wall_s": round(wall, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "max_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
    }
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())  # one append per job: no interleaving
    finally:
        os.close(fd)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
