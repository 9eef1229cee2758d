"""``redline refine``: refine one task from the command line."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import click

from redline.cli import (
    EXIT_BELOW_THRESHOLD,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    cli,
)
from redline.cli._boundary import die
from redline.cli._options import api_key_from, run_options, spec_from_options
from redline.cli._progress import ProgressPrinter, make_console, stop_line
from redline.errors import ConfigError
from redline.types import RefineResult, StopReason, Task

DEFAULT_FILE_TASK = "Improve the following text. Keep its meaning, fix its errors."


@cli.command("refine")
@click.argument("task", required=False)
@click.option("-f", "--file", "draft_file", metavar="FILE",
              help="A draft to improve (its text is the first candidate). '-' reads stdin.")
@click.option("--task", "task_option", metavar="TEXT",
              help="What to do with the draft given by -f (default: improve it).")
@run_options
@click.option("-o", "--output", metavar="FILE",
              help="Write the result here (a regular file is replaced atomically).")
@click.option("--json", "as_json", is_flag=True,
              help="Write the whole result as a versioned JSON document (settings, every "
                   "round, critique and usage).")
@click.option("-q", "--quiet", is_flag=True, help="Nothing on stderr but errors.")
def refine_command(**opts: Any) -> None:
    """Draft (or take) an answer, critique and revise it, and print the best one.

    The task comes from TASK, from stdin, or with -f from a draft file that --task says
    how to improve. Without --base-url or --api-key, the embedded local model runs
    (no network, no key).

    \b
    Examples:
      redline refine "List three uses of a paperclip."
      redline refine -f essay.md --task "Tighten the prose" --revise edit -o essay.md
      redline refine "Write a haiku" -c judge:rubric.txt -t 0.8 --max-rounds 2 --json
      cat question.txt | redline refine --base-url http://localhost:8000/v1 --model qwen

    \b
    Exit codes: 0 threshold reached; 1 stopped below the threshold; 2 usage or
    configuration error (nothing written, no token spent); 3 a model or critic broke
    mid-run (the best so far is still written); 130 interrupted (the best so far is
    still written).
    """
    quiet = opts["quiet"]
    logging.getLogger("redline").setLevel(logging.ERROR if quiet else logging.WARNING)
    result, settings = _refine(opts)  # errors: the group's boundary (cli/_boundary.py)
    code = _exit_code(result)
    text = (_json(result.document(settings)) if opts["as_json"] else result.text)
    if text is None and result.stop_reason is StopReason.budget \
            and result.usage.llm_calls == 0:  # the budget given could not buy one call
        die(f"nothing to write: the budget allows no call ({result.stop_detail}): raise "
            f"--{(result.budget_limit or 'max_tokens').replace('_', '-')}", EXIT_USAGE)
    if text is None:
        die(f"nothing to write: no answer was made ({result.stop_detail})",
             code if code != EXIT_BELOW_THRESHOLD else EXIT_FAILED)
    # On a terminal the progress printer already said why (except for an interrupt).
    if not quiet and (not sys.stderr.isatty() or code == EXIT_INTERRUPTED):
        click.echo(f"redline: {stop_line(result)}", err=True)
    if not text.endswith("\n"):
        text += "\n"
    if opts["output"]:
        from redline._files import write_output

        try:
            write_output(opts["output"], text)
        except OSError as exc:
            die(f"cannot write {opts['output']!r}: {exc.strerror or exc}", EXIT_FAILED)
    else:
        click.echo(text, nl=False)
    sys.exit(code)


def _refine(opts: dict[str, Any]) -> tuple[RefineResult, dict[str, Any]]:
    """Parse → `RunSpec` → `RefineConfig` → run; configuration errors raise before any
    work. Returns the result and the run's settings (the spec, for ``--json``)."""
    spec = spec_from_options(opts)
    task = _read_task(opts, system=spec.system)
    if opts["output"] is not None:
        from redline._files import check_writable

        check_writable(opts["output"])
    api_key = api_key_from(opts)
    config = spec.build(api_key=api_key)
    return asyncio.run(_run(task, config, opts["quiet"])), spec.model_dump(mode="json")


async def _run(task: Task, config: Any, quiet: bool) -> RefineResult:
    from redline.workflows import arefine, interrupted_result

    printer = ProgressPrinter(make_console(quiet=quiet), threshold=config.threshold,
                              model=config.model.model)
    last: list[Any] = [None]

    def on_progress(event: Any) -> None:
        last[0] = event
        printer(event)

    from redline.critics.human import terminal_guard

    try:
        with printer, terminal_guard(printer.paused):
            return await arefine(task, config, on_progress=on_progress)
    except asyncio.CancelledError:
        # Ctrl-C: asyncio.run cancels this task; keep what the run had.
        return interrupted_result(last[0], task, config.threshold)
    finally:
        await config.model.aclose()


def _exit_code(result: RefineResult) -> int:
    if result.stop_reason is StopReason.interrupted:
        return EXIT_INTERRUPTED
    if result.stop_reason is StopReason.error:
        return EXIT_FAILED
    return EXIT_OK if result.reached_threshold else EXIT_BELOW_THRESHOLD


def _read_task(opts: dict[str, Any], *, system: str | None) -> Task:
    task_arg, draft_file, task_option = opts["task"], opts["draft_file"], opts["task_option"]
    if draft_file is not None:
        if task_arg is not None:
            raise ConfigError("give the task either as TASK or as --task with -f, not both")
        draft = _read_text(draft_file)
        if not draft.strip():
            raise ConfigError(f"the draft file {draft_file!r} is empty")
        return _task(task_option or DEFAULT_FILE_TASK, draft=draft, system=system)
    if task_option is not None and task_arg is None:
        task_arg = task_option
    if task_arg is None or task_arg == "-":
        if task_arg is None and sys.stdin.isatty():
            raise ConfigError("no task: give TASK, pipe it on stdin, or use -f FILE")
        task_arg = _read_text("-")
    return _task(task_arg, system=system)


def _task(prompt: str, draft: str | None = None, system: str | None = None) -> Task:
    if not prompt.strip():
        raise ConfigError("the task is empty: say what the model should produce")
    for what, text in (("the task", prompt), ("--system", system or "")):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # argv bytes that are not UTF-8 (surrogateescape)
            raise ConfigError(f"{what} is not UTF-8 text (character {exc.start + 1} is not "
                              "valid): check the terminal's or the script's encoding") from None
    return Task(prompt=prompt.strip(), draft=draft, system=system)


def _read_text(path: str) -> str:
    where = "standard input" if path == "-" else repr(path)
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
        return data.decode("utf-8-sig")  # a BOM (Notepad) is not part of the text
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {where}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {where}: {exc.strerror or exc}") from None


def _json(document: dict[str, Any]) -> str:
    import json

    return json.dumps(document, indent=2, ensure_ascii=False)


