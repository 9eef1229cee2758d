"""``redline compare``: methods side by side at a matched budget, judged by a hidden
evaluator."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

import click

from redline.cli import EXIT_INTERRUPTED, EXIT_OK, cli
from redline.cli._options import api_key_from, explicit_options, run_options, spec_from_options
from redline.errors import ConfigError


@cli.command("compare")
@click.argument("input_file", metavar="DATA.jsonl")
@click.option("--methods", required=True, metavar="A,B,...",
              help="The methods: preset names (single, best-of-n, resample, self-debug, "
                   "reflexion, self-refine, critic, or an installed one), comma-separated.")
@click.option("-o", "--output", required=True, metavar="OUT.jsonl",
              help="Per-item results, one JSON line per method and item (resumable).")
@click.option("--evaluator", default="auto", show_default=True, metavar="NAME",
              help="What judges the answers, never shown to the loop: auto, tests, exact, "
                   "numeric, regex, or FILE.py:FUNCTION.")
@click.option("--resume", is_flag=True, help="Continue OUT: skip what it already holds.")
@click.option("--concurrency", type=int, default=8, show_default=True,
              help="Items in flight per method.")
@click.option("--table-json", "as_json", is_flag=True,
              help="Print the table as JSON instead of text.")
@run_options
@click.option("-q", "--quiet", is_flag=True, help="Nothing on stderr but errors.")
def compare_command(**opts: Any) -> None:
    """Run several methods over DATA.jsonl on the same model at the same per-item token
    budget (--max-tokens, required), judge each answer with an evaluator the loop never
    sees, and print success (95 % interval), tokens, calls and seconds per item, and the
    flip rate (right drafts returned wrong) and fix rate (wrong drafts made right).

    DATA.jsonl is a batch input (id, task, draft, system, metadata) whose lines may add
    "answer" (a reference answer) and "hidden_tests" (tests run on the answer's code):
    the evaluator reads them; the loop never does. best-of-n drafts -n answers (4 by
    default: one greedy, the rest sampled) and keeps those the token budget affords;
    resample draws at most -n (8 by default), one at a time, until the critic passes one.

    \b
    Examples:
      redline compare gsm.jsonl --methods single,best-of-n,critic --max-tokens 3000 \\
          -o cmp.jsonl --evaluator numeric --base-url http://localhost:8000/v1
      redline compare humaneval.jsonl --methods single,self-debug,reflexion \\
          --max-tokens 6000 -o cmp.jsonl --evaluator tests -c doctest

    \b
    Exit codes: 0 done; 2 bad input or configuration, every method checked first
    (nothing run or written); 130 interrupted
    (--resume continues).
    """
    from redline.workflows.batch import read_items
    from redline.workflows.compare import (
        CompareItem,
        acompare,
        make_evaluator,
        method_specs,
    )

    quiet = opts["quiet"]
    logging.getLogger("redline").setLevel(logging.ERROR if quiet else logging.WARNING)
    explicit = explicit_options(opts)
    if "preset" in explicit:
        raise ConfigError("compare runs the presets --methods names; leave out --preset")
    if opts["max_tokens"] is None:
        raise ConfigError("compare needs --max-tokens: the per-item token budget every "
                          "method gets (methods are only comparable at equal compute)")
    if opts["concurrency"] < 1:
        raise ConfigError(f"--concurrency must be at least 1, got {opts['concurrency']}")
    methods = [m.strip() for m in opts["methods"].split(",")]
    if "" in methods:
        raise ConfigError(f"--methods {opts['methods']!r} has an empty name: give preset "
                          "names separated by commas, e.g. single,best-of-n")
    base = spec_from_options(opts, explicit, only_given=True)
    specs = method_specs(methods, base, max_tokens=opts["max_tokens"])
    evaluator = make_evaluator(opts["evaluator"])
    items = read_items(opts["input_file"], model=CompareItem)
    done: dict[str, int] = {}

    def progress(method: str, line: Mapping[str, Any]) -> None:
        done[method] = done.get(method, 0) + 1
        if not quiet and done[method] % max(1, len(items) // 10) == 0:
            click.echo(f"redline: compare: {method}: {done[method]}/{len(items)}", err=True)

    async def run() -> Any:
        return await acompare(items, specs, opts["output"], evaluator=evaluator,
                              concurrency=opts["concurrency"], resume=opts["resume"],
                              api_key=api_key_from(opts), on_result=progress)

    try:
        table = asyncio.run(run())  # errors: the group's boundary (cli/_boundary.py)
    except KeyboardInterrupt:
        click.echo(f"redline: compare: interrupted; {opts['output']!r} keeps what finished "
                   "(--resume continues)", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if opts["as_json"]:
        click.echo(json.dumps(table.as_dict(), indent=2))
    else:
        _print_table(table)
    for row in table.rows:  # a silent 0 % would read as a verdict on the method
        if row.unanswered:
            click.echo(f"redline: compare: {row.method}: {row.unanswered} of {row.items} "
                       f"items ended with no answer ({row.unanswered_detail}); give a "
                       "larger --max-tokens if the budget stopped them", err=True)
    sys.exit(EXIT_OK)


def _print_table(table: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    def rate(value: float | None) -> str:
        return "—" if value is None else f"{value:.0%}"

    out = Table(title=f"evaluator: {table.evaluator} · budget {table.max_tokens:,} "
                      "tokens per item", box=None, pad_edge=False)
    for column in ("method", "success", "95% CI", "tokens/item", "calls/item", "s/item",
                   "flip rate", "fix rate", "errors"):
        out.add_column(column, justify="left" if column == "method" else "right")
    for r in table.rows:
        low, high = r.interval
        out.add_row(r.method, f"{r.correct}/{r.items} ({r.success:.0%})",
                    f"{low:.0%}–{high:.0%}", f"{r.per_item(r.tokens):,.0f}",
                    f"{r.per_item(r.calls):.1f}", f"{r.per_item(r.seconds):.1f}",
                    f"{rate(r.flip_rate)} ({r.flips})", f"{rate(r.fix_rate)} ({r.fixes})",
                    str(r.errors))
    Console(width=max(110, Console().width)).print(out)
