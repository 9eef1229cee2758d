"""How long `import redline` takes, next to a bare interpreter start and to `import pydantic`.

Each figure is the median over --repeats fresh interpreters, measured inside the child
(time.perf_counter around the import), so interpreter start-up is excluded.

    python bench/import_time.py --repeats 15
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

PROBE = ("import time; t = time.perf_counter(); import {mod}; "
         "print(time.perf_counter() - t)")


def measure(module: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", PROBE.format(mod=module)],
                             capture_output=True, text=True, check=True)
        times.append(float(out.stdout))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    rows = [(m, measure(m, args.repeats)) for m in ("pydantic", "redline", "redline.workflows")]
    base = rows[0][1]
    print(f"{'module':<20} {'median s':>9} {'vs pydantic':>12}")
    for module, seconds in rows:
        print(f"{module:<20} {seconds:>9.3f} {seconds / base:>11.2f}x")
    print(f"\nimport redline: {rows[1][1]:.3f} s (target < 0.3 s); "
          "redline.workflows loads LangGraph, on first use of refine()")


if __name__ == "__main__":
    main()
