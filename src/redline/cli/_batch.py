"""``redline batch``: refine every item of a JSONL file into a crash-safe JSONL file."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from redline._files import json_lines
from redline.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, cli
from redline.cli._options import api_key_from, run_options, spec_from_options
from redline.errors import ConfigError

if TYPE_CHECKING:  # LangGraph loads when a batch starts, not for `redline --help`
    from rich.console import Console
    from rich.status import Status

    from redline.workflows.batch import BatchSummary


@cli.command("batch")
@click.argument("input_file", metavar="IN.jsonl")
@click.option("-o", "--output", required=True, metavar="OUT.jsonl",
              help="Where each finished item's result is appended (one JSON line each).")
@click.option("--resume", is_flag=True,
              help="Continue OUT: skip the items already in it, drop a torn last line.")
@click.option("--concurrency", type=int, default=8, show_default=True,
              help="Items refined at the same time.")
@click.option("--checkpoint", metavar="DB",
              help="A SQLite file of LangGraph checkpoints: items in flight when the batch "
                   "died resume mid-loop with --resume (needs redline[sqlite]).")
@click.option("--ray", "ray_address", metavar="ADDRESS",
              help="Shard the batch over a Ray cluster: its address (host:6379, "
                   "ray://host:10001), auto, or local (needs redline[ray]).")
@click.option("--shard-size", type=int, metavar="N",
              help="With --ray: items per Ray task (default: --concurrency).")
@run_options
@click.option("-q", "--quiet", is_flag=True, help="Nothing on stderr but errors.")
def batch_command(**opts: Any) -> None:
    """Refine every item of IN.jsonl with one configuration; append each result to OUT.

    IN.jsonl holds one JSON object a line: {"id": ..., "task": ..., "draft": ...,
    "system": ..., "metadata": {...}}; only "task" is required (an item without "id" is
    named by a hash of its content). The whole file is checked before any work. OUT
    starts with a header line (the run's settings), then one result document a line
    (what `redline refine --json` writes, plus "id"), each written as its item finishes.
    The options are those of `redline refine`.

    \b
    Examples:
      redline batch questions.jsonl -o answers.jsonl --base-url http://localhost:8000/v1
      redline batch humaneval.jsonl -o out.jsonl --preset self-debug -c pytest
      redline batch questions.jsonl -o answers.jsonl --resume    # after a crash
      redline batch big.jsonl -o out.jsonl --ray auto --base-url http://vllm:8000/v1

    \b
    Exit codes: 0 every item finished without an error; 3 some items ended with an
    error (OUT is complete anyway: their lines say why); 2 bad input or configuration
    (nothing written, no token spent); 130 interrupted (what finished is in OUT;
    --resume continues).
    """
    quiet = opts["quiet"]
    logging.getLogger("redline").setLevel(logging.ERROR if quiet else logging.WARNING)
    if opts["concurrency"] < 1:
        raise ConfigError(f"--concurrency must be at least 1, got {opts['concurrency']}")
    from redline.workflows.batch import BatchSummary, arun_batch, read_items

    spec = spec_from_options(opts)
    if opts["input_file"] == "-":
        items = read_items(json_lines(sys.stdin.read()), name="standard input")
    else:
        items = read_items(opts["input_file"])
    summary = BatchSummary()
    progress = BatchProgress(summary, quiet=quiet, priced=spec.model.price_in is not None
                             or spec.model.price_out is not None)

    if opts["ray_address"] is None and opts["shard_size"] is not None:
        raise ConfigError("--shard-size applies to --ray")
    if opts["ray_address"] is not None and opts["checkpoint"] is not None:
        raise ConfigError("--checkpoint is for one process; with --ray a shard in flight "
                          "when the batch died runs again on --resume")

    async def run() -> None:
        try:
            if opts["ray_address"] is not None:
                from redline.workflows.ray_batch import aray_batch

                await aray_batch(spec, items, opts["output"], address=opts["ray_address"],
                                 concurrency=opts["concurrency"], resume=opts["resume"],
                                 api_key=api_key_from(opts), shard_size=opts["shard_size"],
                                 summary=summary, on_start=progress.start,
                                 on_result=progress.update)
                return
            await arun_batch(spec, items, opts["output"], concurrency=opts["concurrency"],
                             resume=opts["resume"], checkpoint=opts["checkpoint"],
                             api_key=api_key_from(opts), summary=summary,
                             on_start=progress.start, on_result=progress.update)
        except asyncio.CancelledError:
            summary.interrupted = True  # Ctrl-C: asyncio.run cancelled this task
        finally:
            progress.stop()

    asyncio.run(run())  # errors: the group's boundary (cli/_boundary.py)
    if not quiet:
        click.echo(f"redline: batch: {progress.final_line(opts['output'])}", err=True)
    if summary.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(EXIT_FAILED if summary.failed + summary.failed_before else EXIT_OK)


class BatchProgress:
    """A batch's progress on stderr: a live line on a terminal (rich), a plain line every
    `interval` seconds otherwise, nothing with ``quiet``."""

    def __init__(self, summary: BatchSummary, *, quiet: bool, priced: bool,
                 interval: float = 10.0) -> None:
        self.summary = summary
        self.quiet = quiet
        self.priced = priced
        self.interval = interval
        self.console: Console | None = None
        self._status: Status | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._started = time.monotonic()

    def start(self, summary: BatchSummary) -> None:
        """The batch starts (the preflight passed): say what resume found, start showing."""
        self._started = time.monotonic()
        if self.quiet:
            return
        if summary.torn_line is not None:
            click.echo(f"redline: warning: dropped the torn last line {summary.torn_line} of "
                       "the output (a crash cut it off); its item runs again", err=True)
        if summary.skipped:
            click.echo(f"redline: batch: resuming: {summary.skipped} of {summary.total} "
                       "items already done", err=True)
        if summary.foreign:
            shown = ", ".join(repr(i) for i in summary.foreign[:3])
            click.echo(f"redline: warning: the output holds {len(summary.foreign)} result"
                       f"{'s' * (len(summary.foreign) != 1)} whose id is not in the input "
                       f"({shown}{', ...' if len(summary.foreign) > 3 else ''}): is it "
                       "another input's output?", err=True)
        if sys.stderr.isatty():
            from redline.cli._progress import make_console

            self.console = make_console(quiet=False)
            assert self.console is not None
            self._status = self.console.status(self.line())
            self._status.start()
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0 if self._status is not None else self.interval)
            self.update()

    def update(self, result: object = None) -> None:
        """Refresh the live line (on a terminal) or, on the ticker, print a plain line."""
        if self._status is not None:
            self._status.update(self.line())
        elif not self.quiet and result is None:
            click.echo(f"redline: batch: {self.line()}", err=True)

    def stop(self) -> None:
        """Stop the live line and the ticker."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._status is not None:
            self._status.stop()
            self._status = None

    def line(self) -> str:
        """``12/100 done · 1 failed · 8 in flight · 2.3 items/s · ETA 38 s · mean best
        0.84 · threshold 10 · 12,345 tok · $0.0123``."""
        s = self.summary
        finished = s.skipped + s.done
        parts = [f"{finished}/{s.total} done", f"{s.failed + s.failed_before} failed",
                 f"{s.in_flight} in flight"]
        elapsed = time.monotonic() - self._started
        if s.done and elapsed > 0:
            rate = s.done / elapsed
            parts += [f"{rate:.2f} items/s", f"ETA {_duration(s.remaining / rate)}"]
        if s.mean_best_score is not None:
            parts.append(f"mean best {s.mean_best_score:.2f}")
        if s.stop_reasons:
            parts.append("stops: " + ", ".join(f"{k} {v}" for k, v in s.stop_reasons.most_common()))
        parts.append(f"{s.usage.total_tokens:,} tok")
        if self.priced:
            parts.append(f"${s.usage.cost_usd:.4f}")
        return " · ".join(parts)

    def final_line(self, output: str) -> str:
        """One line on what the batch did and where it is."""
        s = self.summary
        if s.interrupted:
            return (f"interrupted: {s.skipped + s.done} of {s.total} items are in {output!r}; "
                    "--resume continues")
        failed = s.failed + s.failed_before
        verdict = f"{failed} ended with an error (see their lines)" if failed else "no errors"
        return f"{s.total} items in {output!r}, {verdict}: {self.line()}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60}:{seconds % 60:02d}"
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
