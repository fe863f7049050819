"""`make bench`: run every bench/bench_*.py in turn, each printing its side-by-side figures.

Pass names to run a subset: `python bench/run_all.py ingest send`. bench_workers runs its full
20,000 subscribers here, 3 rounds (about 2 min): the issue's figure, where start-up no longer dominates.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Options per script (none at present): a script that needs a smaller size to keep `make bench`
# to a few minutes names it here, e.g. {"bench_workers": ["--quick"]}.
OPTIONS: dict[str, list[str]] = {}


def main(selected: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if selected:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in selected]
    failed = []
    for script in scripts:
        print(f"\n=== {script.stem} " + "=" * (60 - len(script.stem)), flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, str(script), *OPTIONS.get(script.stem, [])], cwd=HERE.parent)
        print(f"--- {script.stem}: exit {code} in {time.perf_counter() - started:.1f} s", flush=True)
        if code:
            failed.append(script.stem)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
