"""The README's CLI tour on the embedded model: how often does a run end with a result?

Runs each command of README.md's "CLI tour" that needs no server and no extra file
(the haiku with ``--json``, the paperclip list, the essay edited in place) ``--runs``
times as a subprocess (``python -m redline``), on the embedded model, and counts the
runs that end with a result: exit code 0 (threshold reached) or 1 (stopped below it)
and non-empty output (stdout, or the ``-o`` file). The essay is a fresh copy of a
fixed ~150-word draft for every run.

Usage (from the repository root; ``PYTHONPATH`` picks the code under test):

    PYTHONPATH=src python bench/cli_tour.py --runs 10
    PYTHONPATH=/tmp/before/src python bench/cli_tour.py --runs 3   # another checkout
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ESSAY = """\
It is a truth that is very widely and generally acknowledged by a great many people that
the act of writing in a clear way is something that is actually quite hard to do. Many
writers, in point of fact, tend to use far more words than they really need to use in
order to say what it is that they want to say. This has the effect, in many cases, of
making the reader feel tired and bored, and it can also, at times, make it harder for
the reader to actually understand the main point that the writer was trying to make in
the first place. It is for this reason, basically, that editors often suggest to writers
that they should go through their drafts and remove any words that are not absolutely
necessary, so that what remains is shorter, clearer and, in the end, more persuasive.
"""

COMMANDS: dict[str, dict] = {
    "haiku --json": {"argv": ["refine", "--json"], "stdin": "Write a haiku about rain\n"},
    "paperclip": {"argv": ["refine", "List three uses of a paperclip."]},
    "essay --revise edit -o": {
        "argv": ["refine", "-f", "essay.md", "--task", "Tighten the prose", "--revise",
                 "edit", "-o", "essay.md"], "output": "essay.md"},
}

MODEL_ENV = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "REDLINE_MODEL", "REDLINE_BASE_URL")


def run_once(spec: dict, timeout: float) -> dict:
    """One run of one command in a fresh directory: exit code, output size, seconds."""
    env = {k: v for k, v in os.environ.items() if k not in MODEL_ENV}
    with tempfile.TemporaryDirectory(prefix="redline-tour-") as tmp:
        work = Path(tmp)
        (work / "essay.md").write_text(ESSAY)
        started = time.monotonic()
        try:
            proc = subprocess.run([sys.executable, "-m", "redline", *spec["argv"]],
                                  input=spec.get("stdin", ""), capture_output=True,
                                  text=True, cwd=work, env=env, timeout=timeout)
            code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired:
            code, stdout, stderr = "timeout", "", ""
        seconds = time.monotonic() - started
        output = (work / spec["output"]).read_text() if "output" in spec else stdout
        if "output" in spec and output == ESSAY and code not in (0, 1):
            output = ""  # the untouched draft is not a result
    ok = code in (0, 1) and bool(output.strip())
    last_line = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    return {"exit": code, "ok": ok, "seconds": round(seconds, 1),
            "output_chars": len(output), "stderr_tail": last_line[:200]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per command")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    parser.add_argument("--only", action="append", choices=list(COMMANDS),
                        help="run only this command (repeatable)")
    parser.add_argument("--json-out", type=Path, help="write every run here as JSON")
    args = parser.parse_args()

    import redline

    print(f"redline from {Path(redline.__file__).parent}", file=sys.stderr)
    report = {}
    for name in args.only or COMMANDS:
        runs = []
        for i in range(args.runs):
            run = run_once(COMMANDS[name], args.timeout)
            runs.append(run)
            print(f"{name} #{i + 1}: exit {run['exit']}, {run['seconds']} s, "
                  f"{'result' if run['ok'] else 'NO RESULT'} {run['stderr_tail']!r}",
                  file=sys.stderr, flush=True)
        report[name] = runs
    print("\n| command | runs | ended with a result | exit codes | median s |")
    print("|---|---|---|---|---|")
    total = ok = 0
    for name, runs in report.items():
        codes = Counter(str(r["exit"]) for r in runs)
        good = sum(r["ok"] for r in runs)
        total, ok = total + len(runs), ok + good
        print(f"| `{name}` | {len(runs)} | {good}/{len(runs)} | "
              f"{', '.join(f'{c}: {n}' for c, n in sorted(codes.items()))} | "
              f"{statistics.median(r['seconds'] for r in runs):.0f} |")
    print(f"| **all** | {total} | **{ok}/{total}** | | |")
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
