"""Run every benchmark: `python -m benchmarks [name ...]` (names without the bench_ prefix)."""

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> int:
    wanted = set(sys.argv[1:])
    sys.argv = sys.argv[:1]  # the benchmarks parse their own options; run them with defaults
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    for name in names:
        if wanted and name[len("bench_"):] not in wanted:
            continue
        print(f"\n=== {name} ===", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
