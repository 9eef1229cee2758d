"""`redline report` on large batches: generation time, file size, and the time a headless
Chromium takes to open the page and run its script.

Synthetic items, each a draft and two revisions (about 600 characters each, one critic
with feedback and evidence per candidate), 10 % ending with an error, written as a batch
output; then `load_results` + `render_report` + the write are timed. With Chromium on
PATH, the page is opened with ``--screenshot`` (taken after the load event; the page's
script runs before it, drawing the first page of the item list), minus the time to
screenshot an empty page. (``--dump-dom`` is not used for timing: serialising the
58 MB data block back out takes Chromium far longer than opening the page.)

    python bench/report_size.py --items 1000 10000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from redline.report import load_results, render_report
from redline.types import (
    Candidate,
    Critique,
    RefineResult,
    Round,
    ScoredCandidate,
    StopReason,
    Task,
    Usage,
)
from redline.workflows import RunSpec
from redline.workflows.batch import result_line

WORDS = ("the loop drafts an answer critics score it and the reviser fixes what they "
         "found until the threshold or the budget stops it").split()


def text(rng: random.Random, n: int = 100) -> str:
    words = [rng.choice(WORDS) for _ in range(n)]
    return "\n".join(" ".join(words[k:k + 12]) for k in range(0, n, 12))


def item(k: int, rng: random.Random) -> RefineResult:
    task = Task(id=f"item-{k:05d}", prompt=f"Question {k}: " + text(rng, 30))
    if k % 10 == 9:
        return RefineResult(task=task, best=None, final=None, rounds=[], threshold=0.8,
                            usage=Usage(), stop_reason=StopReason.error,
                            error="critique failed: critic 'judge' failed: HTTP 500")
    rounds, parent, score = [], None, rng.uniform(0.1, 0.6)
    for r in range(3):
        body = text(rng)
        candidate = Candidate(text=body, round=r, origin="draft" if r == 0 else "rewrite",
                              parent=parent, usage=Usage(input_tokens=300, output_tokens=120,
                                                         llm_calls=1, seconds=1.2))
        critique = Critique(critic="judge", score=round(score, 2), raw=round(score * 10, 1),
                            feedback=text(rng, 30), evidence={"marks": [score, 1 - score]},
                            usage=Usage(input_tokens=500, output_tokens=60, llm_calls=1))
        scored = ScoredCandidate(candidate=candidate, score=round(score, 2), gates_passed=True,
                                 failed=False, critiques=[critique])
        rounds.append(Round(index=r, scored=[scored],
                            usage=Usage(input_tokens=800, output_tokens=180, llm_calls=2)))
        parent, score = candidate.id, min(1.0, score + rng.uniform(-0.05, 0.3))
    best = max((s for r in rounds for s in r.scored), key=lambda s: s.score)
    return RefineResult(task=task, best=best, final=rounds[-1].scored[0], rounds=rounds,
                        threshold=0.8, stop_reason=StopReason.budget, budget_limit="max_rounds",
                        usage=Usage(input_tokens=2400, output_tokens=540, llm_calls=6,
                                    seconds=7.5))


def write_batch(path: Path, n: int) -> None:
    rng = random.Random(n)
    spec = RunSpec().model_dump(mode="json")
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps({"redline_batch": 1, "spec": spec}) + "\n")
        for k in range(n):
            f.write(json.dumps(result_line(item(k, rng), spec)) + "\n")


def open_seconds(chromium: str, page: Path, profile: Path) -> float:
    shot = page.with_suffix(".png")
    command = [chromium, "--headless", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", f"--user-data-dir={profile}",
               "--window-size=1280,1000", f"--screenshot={shot}", page.resolve().as_uri()]
    if os.geteuid() == 0:
        command.insert(1, "--no-sandbox")
    started = time.perf_counter()
    subprocess.run(command, capture_output=True, text=True, check=True, timeout=300)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        baseline = None
        if chromium:
            empty = folder / "empty.html"
            empty.write_text('<!doctype html><body data-ready="1"></body>')
            open_seconds(chromium, empty, folder / "profile")  # warm the profile
            baseline = open_seconds(chromium, empty, folder / "profile")
        print(f"{'items':>7} {'input MB':>9} {'read s':>7} {'render s':>9} {'write s':>8} "
              f"{'report MB':>10} {'open s':>7}")
        for n in args.items:
            source, page = folder / f"{n}.jsonl", folder / f"{n}.html"
            write_batch(source, n)
            t0 = time.perf_counter()
            results = load_results(source)
            t1 = time.perf_counter()
            html = render_report(results)
            t2 = time.perf_counter()
            page.write_text(html, encoding="utf-8")
            t3 = time.perf_counter()
            opened = (f"{open_seconds(chromium, page, folder / 'profile') - baseline:7.2f}"
                      if chromium and baseline is not None else f"{'–':>7}")
            print(f"{n:>7} {source.stat().st_size / 1e6:>9.1f} {t1 - t0:>7.2f} {t2 - t1:>9.2f} "
                  f"{t3 - t2:>8.2f} {page.stat().st_size / 1e6:>10.1f} {opened}")
        if baseline is not None:
            print(f"\nopen s: headless Chromium --screenshot, minus {baseline:.2f} s for an "
                  "empty page")


if __name__ == "__main__":
    main()
