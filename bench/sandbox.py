"""What the sandbox adds to running a snippet of Python, per run and in parallel.

Both sides run the same small test-like snippet (a function and an assert) in a fresh
interpreter:

- bare: ``subprocess.run([sys.executable, "-c", CODE])``, blocking;
- redline: ``await Sandbox().run(CODE)``: run directory, scrubbed environment, resource
  limits, namespaces and uid switch where available, output files, cleanup — with the
  bubblewrap backend (the default where ``bwrap`` works) and, to show what the
  stronger isolation costs, with the ``namespaces`` fallback.

Latency: one run at a time, the two sides alternating run by run (the pair's order
alternating too); each repeat gives each side's median, and the figures are the medians
of those over the repeats (the ratio is redline / bare); the 10th percentile over all
runs too, less stretched by other load on the machine. Throughput: `runs` snippets
with as many at once as there are CPUs — bare through a thread pool of that size,
redline through the sandbox's own parallel limit (its default, the CPU count) — in runs
per second, best of the repeats (the ratio is bare / redline, so that above 1 means
slower for both measures). Last, the latency of a `PythonTestsCritic` critique with 4
tests (harness and candidate in two sandboxes joined by pipes), for scale, and the CPU
time per run of each side (every process's, the sandbox's host side included), which a
busy machine's wall-clock ratio tends to.

    python bench/sandbox.py --runs 200 --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from redline.critics.code_tests import PythonTestsCritic
from redline.feedback_sources.sandbox import Sandbox
from redline.types import Candidate, Task

CODE = "def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\nprint('ok')\n"
WARMUP = 5
TESTS = ("assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
         "def test_large():\n    assert add(10**6, 1) == 10**6 + 1\n"
         "def test_zero():\n    assert add(0, 0) == 0\n")


def bare_run() -> None:
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, check=True)
    assert done.stdout == b"ok\n"


async def latency(sandbox: Sandbox, runs: int) -> tuple[list[float], list[float]]:
    """Seconds per run of the bare call and of the sandbox over `runs` pairs."""
    bare: list[float] = []
    ours: list[float] = []

    async def ours_run() -> None:
        started = time.perf_counter()
        result = await sandbox.run(CODE)
        ours.append(time.perf_counter() - started)
        assert result.ok and result.stdout == "ok\n", result

    def timed_bare() -> None:
        started = time.perf_counter()
        bare_run()
        bare.append(time.perf_counter() - started)

    for i in range(runs):
        if i % 2:
            timed_bare()
            await ours_run()
        else:
            await ours_run()
            timed_bare()
    return bare, ours


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def throughput(sandbox: Sandbox, runs: int) -> tuple[float, float]:
    """Runs per second of the bare call (thread pool) and of the sandbox, in parallel."""
    workers = sandbox.max_parallel
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda _: bare_run(), range(runs)))
    bare = runs / (time.perf_counter() - started)
    started = time.perf_counter()
    results = await asyncio.gather(*(sandbox.run(CODE) for _ in range(runs)))
    ours = runs / (time.perf_counter() - started)
    assert all(r.ok for r in results)
    return bare, ours


def _cpu_seconds() -> float:
    """CPU time of this process and of its children waited for, user and system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), \
        resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


async def cpu_cost(sandbox: Sandbox, runs: int) -> tuple[float, float]:
    """CPU seconds per run of the bare call and of the sandbox (all their processes, and
    this one's work for them): what a busy machine's wall clock tends to."""
    started = _cpu_seconds()
    for _ in range(runs):
        bare_run()
    bare = _cpu_seconds() - started
    started = _cpu_seconds()
    for _ in range(runs):
        await sandbox.run(CODE)
    await asyncio.sleep(0.5)  # the last bwrap is reaped in the background
    return bare / runs, (_cpu_seconds() - started) / runs


async def critic_latency(sandbox: Sandbox, runs: int) -> float:
    """Median seconds of one `PythonTestsCritic` critique (4 tests) on the sandbox."""
    critic = PythonTestsCritic(TESTS, sandbox=sandbox)
    task, candidate = Task(prompt="add"), Candidate(text=CODE)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        critique = await critic.critique(task, candidate)
        times.append(time.perf_counter() - started)
        assert critique.passed, critique.feedback
    return statistics.median(times)


async def main(runs: int, repeats: int) -> tuple[float, float]:
    """Run the benchmark for each backend; return the default backend's two ratios."""
    ratios = await measure(Sandbox(timeout=30), runs, repeats)
    print()
    await measure(Sandbox(timeout=30, backend="namespaces"), runs, repeats)
    return ratios


async def measure(sandbox: Sandbox, runs: int, repeats: int) -> tuple[float, float]:
    """Measure one sandbox, print the figures and return the two ratios."""
    probe = await sandbox.run(CODE)
    await latency(sandbox, WARMUP)
    lat = [await latency(sandbox, runs // 4) for _ in range(repeats)]
    put = [await throughput(sandbox, runs) for _ in range(repeats)]
    critic_ms = await critic_latency(sandbox, runs // 4) * 1e3
    bare_cpu, ours_cpu = await cpu_cost(sandbox, runs // 4)

    bare_ms = statistics.median(statistics.median(b) for b, _ in lat) * 1e3
    ours_ms = statistics.median(statistics.median(o) for _, o in lat) * 1e3
    # The fastest tenth, over all repeats: what the run costs when the machine lets it
    # (a loaded machine stretches the median of the side with more processes more).
    bare_p10 = quantile([x for b, _ in lat for x in b], 0.1) * 1e3
    ours_p10 = quantile([x for _, o in lat for x in o], 0.1) * 1e3
    bare_rps = max(b for b, _ in put)
    ours_rps = max(o for _, o in put)
    iso = probe.isolation
    print(f"# python {platform.python_version()}, {platform.machine()} {platform.system()} "
          f"{platform.release()}, {os.cpu_count()} CPUs, uid {os.geteuid()}; backend "
          f"{iso.backend}: network={iso.network} filesystem={iso.filesystem} "
          f"pid={iso.pid} disk={iso.disk} user={iso.user} processes={iso.processes}")
    print(f"# latency: {runs // 4} pairs x {repeats} repeats; throughput: {runs} runs, "
          f"{sandbox.max_parallel} at once, best of {repeats}")
    print("| measure | bare `subprocess.run` | redline `Sandbox.run` | ratio |")
    print("|---|---|---|---|")
    print(f"| ms per run, one at a time (median) | {bare_ms:.1f} | {ours_ms:.1f} | "
          f"**{ours_ms / bare_ms:.2f}** |")
    print(f"| ms per run, one at a time (10th percentile) | {bare_p10:.1f} | {ours_p10:.1f} | "
          f"**{ours_p10 / bare_p10:.2f}** |")
    print(f"| runs per second, {sandbox.max_parallel} at once | {bare_rps:.1f} | "
          f"{ours_rps:.1f} | **{bare_rps / ours_rps:.2f}** |")
    print(f"| CPU ms per run (all processes) | {bare_cpu * 1e3:.1f} | {ours_cpu * 1e3:.1f} | "
          f"**{ours_cpu / bare_cpu:.2f}** |")
    print(f"\n`PythonTestsCritic` with 4 tests (harness and candidate, two sandboxes): "
          f"{critic_ms:.1f} ms per candidate (median)")
    return ours_ms / bare_ms, bare_rps / ours_rps


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200,
                        help="runs per throughput measure (a quarter of it per latency one)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.repeats))
