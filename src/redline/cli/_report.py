"""``redline report`` (results → one self-contained HTML page) and ``redline show`` (one
run's trajectory in the terminal)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from redline.cli import EXIT_FAILED, cli
from redline.cli._boundary import die
from redline.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from redline.report import Entry, Results
    from redline.types import RefineResult, ScoredCandidate


@cli.command("report")
@click.argument("results_file", metavar="RESULTS")
@click.option("-o", "--output", metavar="FILE",
              help="The HTML file to write (default: RESULTS with the suffix .html).")
@click.option("--title", metavar="TEXT", help="The page's title.")
@click.option("--open", "open_it", is_flag=True, help="Open the report in a browser.")
@click.option("-q", "--quiet", is_flag=True, help="Nothing on stderr but errors.")
def report_command(results_file: str, output: str | None, title: str | None, open_it: bool,
                   quiet: bool) -> None:
    """Write RESULTS as one self-contained HTML page: summary plots, every item's
    trajectory, diffs, critiques and usage.

    RESULTS is a `redline batch` output, a `redline compare` output, or a
    `redline refine --json` result. The page holds its styles, script, plots and data,
    needs no network, and opens from disk or a mail attachment.

    \b
    Examples:
      redline report answers.jsonl -o report.html
      redline report compare.jsonl --open
      redline refine "Write a haiku" --json -o run.json; redline report run.json
    """
    from redline._files import check_writable, write_output
    from redline.report import load_results, render_report

    if output is not None and not output.strip():
        raise ConfigError("-o is empty: give the report's file name, or leave -o out for "
                          "RESULTS with .html")
    target = output or str(Path(results_file).with_suffix(".html"))
    if Path(target).resolve() == Path(results_file).resolve():
        raise ConfigError(f"the report would replace its input {results_file!r}: give -o FILE")
    check_writable(target)
    results = load_results(results_file)
    page = render_report(results, title=title)
    try:
        write_output(target, page)
    except OSError as exc:
        die(f"cannot write {target!r}: {exc.strerror or exc}", EXIT_FAILED)
    if not quiet:
        items = len({e.id for e in results.entries})
        runs = len(results.entries)
        click.echo(f"redline: report: {items:,} item{'s' * (items != 1)} "
                   f"({runs:,} run{'s' * (runs != 1)}) in {target!r}, "
                   f"{len(page.encode('utf-8')) / 1e6:.2f} MB", err=True)
        for note in results.notes:
            click.echo(f"redline: warning: {note}", err=True)
    if open_it:
        import webbrowser

        webbrowser.open(Path(target).resolve().as_uri())


@cli.command("show")
@click.argument("results_file", metavar="RESULT")
@click.argument("item_id", metavar="ID", required=False)
@click.option("--method", metavar="NAME",
              help="With a compare output: the method to show (default: every method).")
@click.option("--all-rounds", is_flag=True,
              help="The diff and feedback of every revision, not only the last.")
def show_command(results_file: str, item_id: str | None, method: str | None,
                 all_rounds: bool) -> None:
    """Show one run's trajectory: rounds, scores, stop reason, and the last revision's
    diff with the feedback that caused it.

    RESULT is a `redline refine --json` file, or a batch or compare output with the
    ID of the item to show (a file of one item needs none).

    \b
    Examples:
      redline show run.json
      redline show answers.jsonl q17
      redline show compare.jsonl q17 --method self-refine
    """
    from rich.console import Console

    from redline.report import load_results

    results = load_results(results_file)
    entries = _select(results, item_id, method)
    console = Console(highlight=False, soft_wrap=False,
                      width=None if sys.stdout.isatty() else 100)
    for k, entry in enumerate(entries):
        if k:
            console.print()
        _show(console, entry, all_rounds)


def _select(results: Results, item_id: str | None, method: str | None) -> list[Entry]:
    entries = results.entries
    name = results.source
    if method is not None:
        if results.kind != "compare":
            raise ConfigError(f"--method is for a compare output; {name!r} is "
                              f"{'a batch output' if results.kind == 'batch' else 'one run'}")
        names = results.method_names
        if method not in names:
            raise ConfigError(f"no method {method!r} in {name!r} (methods: {', '.join(names)})")
    ids = list(dict.fromkeys(e.id for e in entries))
    if item_id is None:
        if len(ids) != 1:
            raise ConfigError(f"{name!r} holds {len(ids):,} items: give the ID of one "
                              f"({_some(ids)})")
        item_id = ids[0]
    chosen = [e for e in entries if e.id == item_id
              and (method is None or e.method == method)]
    if not chosen:
        if item_id in ids:
            raise ConfigError(f"item {item_id!r} has no run of method {method!r} in {name!r}")
        raise ConfigError(f"no item {item_id!r} in {name!r} ({len(ids):,} items: "
                          f"{_some(ids)})")
    return chosen


def _some(ids: list[str], shown: int = 5) -> str:
    listed = ", ".join(repr(i) for i in ids[:shown])
    return listed + (", ..." if len(ids) > shown else "")


def _show(console: Console, entry: Entry, all_rounds: bool) -> None:
    from rich.rule import Rule
    from rich.text import Text

    from redline.report import best_score, draft_score

    r = entry.result
    title = Text.assemble("item ", (entry.id, "bold"))
    if entry.method is not None:
        title.append_text(Text.assemble(" · method ", (entry.method, "bold")))
    console.print(Rule(title, align="left"))
    prompt = r.task.prompt if len(r.task.prompt) <= 300 else r.task.prompt[:300] + " …"
    console.print(Text.assemble(("task: ", "dim"), prompt))
    stop_style = "green" if r.stop_reason.value in ("threshold", "verified") else \
        "red" if r.stop_reason.value == "error" else "yellow"
    line = Text.assemble(("stopped: ", "dim"), (r.stop_reason.value, f"bold {stop_style}"))
    if r.stop_detail:
        line.append(f" ({r.stop_detail})")
    console.print(line)
    draft, best = draft_score(r), best_score(r)
    scores = Text.assemble(("score: ", "dim"), f"draft {_score(draft)} → best {_score(best)}",
                           f" (threshold {r.threshold:g})")
    if entry.correct is not None:
        scores.append(f" · correct: {'yes' if entry.correct else 'no'}")
        if entry.draft_correct is not None:
            scores.append(f" (draft: {'yes' if entry.draft_correct else 'no'})")
    console.print(scores)
    u = r.usage
    console.print(Text.assemble(("usage: ", "dim"), f"{u.total_tokens:,} tokens "
                                f"({u.input_tokens:,} in, {u.output_tokens:,} out) · "
                                f"{u.llm_calls} calls · ${u.cost_usd:.4f} · {u.seconds:.2f} s"))
    if r.error:
        console.print(Text.assemble(("error: ", "bold red"), r.error))
    console.print(_rounds_table(r))
    for round_ in r.rounds:
        if round_.reflection:
            console.print(Text.assemble((f"reflection after round {round_.index}: ", "dim"),
                                        round_.reflection))
    if r.memory:
        console.print(Text("memory at the end:", style="dim"))
        for lesson in r.memory:
            console.print(Text(f"  - {lesson}"))
    revisions = [s for round_ in r.rounds for s in round_.scored if s.candidate.parent]
    if not revisions:
        console.print(Text("no revision: the draft was kept", style="dim"))
        return
    for scored in revisions if all_rounds else revisions[-1:]:
        _revision(console, r, scored)


def _score(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _rounds_table(r: RefineResult) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column, justify in (("round", "right"), ("candidate", "left"), ("origin", "left"),
                            ("score", "right"), ("critics", "left"), ("tokens", "right"),
                            ("", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    best_id = r.best.candidate.id if r.best else None
    final_id = r.final.candidate.id if r.final else None
    for round_ in r.rounds:
        for s in round_.scored:
            critics = Text()
            for k, c in enumerate(s.critiques):
                mark = "" if c.passed is None else (" ✓" if c.passed else " ✗")
                critics.append(("  " if k else "") + f"{c.critic} {c.score:.2f}{mark}",
                               style="red" if c.passed is False else "")
            tags = [t for t, on in (("best", s.candidate.id == best_id),
                                    ("final", s.candidate.id == final_id),
                                    ("gate failed", not s.gates_passed)) if on]
            table.add_row(str(round_.index), s.candidate.id, s.candidate.origin,
                          "unscored" if s.unscored else f"{s.score:.2f}", critics,
                          f"{s.candidate.usage.total_tokens:,}", Text(", ".join(tags)))
        if not round_.scored:
            table.add_row(str(round_.index), "–", "", "", Text("no candidate scored"), "", "")
    return table


def _revision(console: Console, r: RefineResult, scored: ScoredCandidate) -> None:
    from rich.text import Text

    from redline.report import line_diff

    candidate = scored.candidate
    parents = {s.candidate.id: s for round_ in r.rounds for s in round_.scored}
    parent = parents.get(candidate.parent or "")
    console.print()
    console.print(Text.assemble((f"revision in round {candidate.round}", "bold"),
                                f": {candidate.parent} → {candidate.id} ({candidate.origin})"))
    if parent is None:
        console.print(Text("its parent is not in the trace", style="dim"))
        return
    feedback = [(c.critic, c.feedback) for c in parent.critiques if c.feedback.strip()]
    console.print(Text("feedback that caused it:", style="dim"))
    if not feedback:
        console.print(Text("  (no critic said what to change)", style="dim"))
    for critic, text in feedback:
        console.print(Text.assemble(("  " + critic + ": ", "bold"), text))
    if candidate.explanation:
        console.print(Text("reviser's explanation:", style="dim"))
        console.print(Text(candidate.explanation))
    diff = line_diff(parent.candidate.text, candidate.text)
    console.print(Text("diff:", style="dim"))
    if not diff:
        console.print(Text("  (no change)", style="dim"))
    for line in diff.splitlines():
        style = ("green" if line.startswith("+") else "red" if line.startswith("-")
                 else "cyan" if line.startswith("@@") else "")
        console.print(Text(line, style=style), overflow="fold")
