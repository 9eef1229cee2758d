"""``redline refine``: refine one task from the command line."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

import click

from redline.cli import EXIT_BELOW_THRESHOLD, EXIT_FAILED, EXIT_OK, EXIT_USAGE, cli
from redline.cli._progress import ProgressPrinter, make_console
from redline.errors import ConfigError, LLMError, LLMUnavailableError, RedlineError
from redline.types import Budget, RefineResult, Task

DEFAULT_FILE_TASK = "Improve the following text. Keep its meaning, fix its errors."


class _Fail(Exception):
    def __init__(self, message: str, code: int) -> None:
        self.code = code
        super().__init__(message)


@cli.command("refine")
@click.argument("task", required=False)
@click.option("-f", "--file", "draft_file", metavar="FILE",
              help="A draft to improve (its text is the first candidate). '-' reads stdin.")
@click.option("--task", "task_option", metavar="TEXT",
              help="What to do with the draft given by -f (default: improve it).")
@click.option("-c", "--critic", "critic_specs", multiple=True, metavar="NAME[:ARG]",
              help="A critic, repeatable: judge, judge:RUBRIC_FILE, or any plugin's name "
                   "(see `redline critics list`). Default: judge.")
@click.option("-t", "--threshold", type=float, default=0.9, show_default=True,
              help="Stop once the best score reaches this (0 to 1).")
@click.option("--max-rounds", type=int, default=3, show_default=True,
              help="Revisions after the first draft.")
@click.option("--max-tokens", type=int, help="Token budget of the whole run, critics included.")
@click.option("--max-seconds", type=float, help="Time budget of the whole run.")
@click.option("--max-calls", type=int, help="LLM call budget of the whole run.")
@click.option("-n", "--drafts", type=int, default=1, show_default=True,
              help="Drafts generated in parallel in the first round (best-of-n).")
@click.option("--revise", type=click.Choice(["rewrite", "edit"]), default="rewrite",
              show_default=True, help="Rewrite the answer, or edit it with search/replace.")
@click.option("--revise-when", type=click.Choice(["always", "on_failure"]), default="always",
              show_default=True, help="on_failure: revise only when a critic flags a failure.")
@click.option("--model", envvar="REDLINE_MODEL", metavar="NAME",
              help="Model name on the server.  [env: REDLINE_MODEL]")
@click.option("--base-url", envvar="OPENAI_BASE_URL", metavar="URL",
              help="An OpenAI-compatible server (vLLM, Ollama, llama.cpp).  "
                   "[env: OPENAI_BASE_URL]")
@click.option("--api-key", envvar="OPENAI_API_KEY", metavar="KEY",
              help="API key.  [env: OPENAI_API_KEY]")
@click.option("--model-path", envvar="REDLINE_MODEL_PATH", metavar="GGUF",
              help="A GGUF file for the embedded llama.cpp model.  [env: REDLINE_MODEL_PATH]")
@click.option("--rm-device", metavar="DEVICE",
              help="Device of reward-model critics (rm:): auto, cpu, cuda, cuda:1.")
@click.option("--rm-batch-size", type=int, metavar="N",
              help="Largest forward pass of reward-model critics.")
@click.option("-o", "--output", metavar="FILE", help="Write the result here (atomically).")
@click.option("--json", "as_json", is_flag=True,
              help="Write the whole result (every round, critique and usage) as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
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
    Exit codes: 0 threshold reached; 1 stopped below the threshold (result still
    written); 2 usage or configuration error; 3 the run failed (nothing written).
    """
    console = make_console(quiet=opts["quiet"])
    try:
        task = _read_task(opts)
        output = _check_output(opts["output"])
        budget = _budget(opts)
        from redline.plugins import build_critic

        settings = {"rm_device": opts["rm_device"], "rm_batch_size": opts["rm_batch_size"]}
        critics = _distinct([build_critic(s, settings)
                             for s in opts["critic_specs"] or ["judge"]])
        result = asyncio.run(_run(task, critics, budget, opts, console))
    except _Fail as fail:
        _die(str(fail), fail.code)
    except ConfigError as exc:
        _die(str(exc), EXIT_USAGE)
    except LLMError as exc:
        # Nothing listening, a wrong key, a wrong model name: the configuration is wrong.
        wrong_setup = exc.status in (401, 403, 404) or (
            isinstance(exc, LLMUnavailableError) and exc.last_status is None)
        _die(str(exc), EXIT_USAGE if wrong_setup else EXIT_FAILED)
    except RedlineError as exc:
        _die(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        _die("interrupted", 130)
    text = result.model_dump_json(indent=2) if opts["as_json"] else result.text
    if text is None:
        _die(f"no candidate could be scored ({result.stop_detail})", EXIT_BELOW_THRESHOLD)
    if not text.endswith("\n"):
        text += "\n"
    if output:
        _write_atomically(output, text)
    else:
        click.echo(text, nl=False)
    sys.exit(EXIT_OK if result.reached_threshold else EXIT_BELOW_THRESHOLD)


async def _run(task: Task, critics: list[Any], budget: Budget, opts: dict[str, Any],
               console: Any) -> RefineResult:
    from redline.llm import resolve_model
    from redline.workflows import arefine

    model = resolve_model(opts["model"], base_url=opts["base_url"], api_key=opts["api_key"],
                          model_path=opts["model_path"])
    printer = ProgressPrinter(console, threshold=opts["threshold"], model=model.model)
    try:
        start = getattr(model, "start", None)
        if callable(start):  # the embedded server: start it before the run's clock starts
            await asyncio.to_thread(start)
        with printer:
            return await arefine(
                task, model=model, critics=critics, threshold=opts["threshold"],
                budget=budget, n=opts["drafts"], revise=opts["revise"],
                revise_when=opts["revise_when"], on_progress=printer)
    finally:
        await model.aclose()


def _read_task(opts: dict[str, Any]) -> Task:
    task_arg, draft_file, task_option = opts["task"], opts["draft_file"], opts["task_option"]
    if draft_file is not None:
        if task_arg is not None:
            raise _Fail("give the task either as TASK or as --task with -f, not both",
                        EXIT_USAGE)
        draft = _read_text(draft_file)
        if not draft.strip():
            raise _Fail(f"the draft file {draft_file!r} is empty", EXIT_USAGE)
        return _task(task_option or DEFAULT_FILE_TASK, draft=draft)
    if task_option is not None and task_arg is None:
        task_arg = task_option
    if task_arg is None or task_arg == "-":
        if task_arg is None and sys.stdin.isatty():
            raise _Fail("no task: give TASK, pipe it on stdin, or use -f FILE", EXIT_USAGE)
        task_arg = sys.stdin.read()
    return _task(task_arg)


def _task(prompt: str, draft: str | None = None) -> Task:
    if not prompt.strip():
        raise _Fail("the task is empty: say what the model should produce", EXIT_USAGE)
    return Task(prompt=prompt.strip(), draft=draft)


def _read_text(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _Fail(f"cannot read {path!r}: not UTF-8 text", EXIT_USAGE) from None
    except OSError as exc:
        raise _Fail(f"cannot read {path!r}: {exc.strerror}", EXIT_USAGE) from None


def _check_output(output: str | None) -> Path | None:
    if output is None:
        return None
    path = Path(output)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise _Fail(f"cannot write {output!r}: folder {str(parent)!r} does not exist",
                    EXIT_USAGE)
    if path.is_dir():
        raise _Fail(f"cannot write {output!r}: it is a folder", EXIT_USAGE)
    if not os.access(parent, os.W_OK):
        raise _Fail(f"cannot write {output!r}: folder is not writable", EXIT_USAGE)
    return path


def _budget(opts: dict[str, Any]) -> Budget:
    threshold = opts["threshold"]
    if not 0.0 <= threshold <= 1.0:
        raise _Fail(f"threshold {threshold:g} is outside [0, 1]", EXIT_USAGE)
    checks = [("--max-rounds", opts["max_rounds"], 0), ("--max-tokens", opts["max_tokens"], 1),
              ("--max-calls", opts["max_calls"], 1), ("--drafts", opts["drafts"], 1)]
    for flag, value, low in checks:
        if value is not None and value < low:
            raise _Fail(f"{flag} must be at least {low}, got {value}", EXIT_USAGE)
    if opts["max_seconds"] is not None and opts["max_seconds"] <= 0:
        raise _Fail(f"--max-seconds must be positive, got {opts['max_seconds']:g}", EXIT_USAGE)
    return Budget(max_rounds=opts["max_rounds"], max_tokens=opts["max_tokens"],
                  max_seconds=opts["max_seconds"], max_llm_calls=opts["max_calls"])


def _distinct(critics: list[Any]) -> list[Any]:
    """Number repeated names (``-c readability:6 -c readability:10``): a panel needs
    distinct names, and the command line has no other way to give one."""
    seen: dict[str, int] = {}
    for critic in critics:
        count = seen[critic.name] = seen.get(critic.name, 0) + 1
        if count > 1:
            critic.name = f"{critic.name}-{count}"
    return critics


def _write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".",
                               prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        _die(f"cannot write {str(path)!r}: {exc.strerror}", EXIT_FAILED)


def _die(message: str, code: int) -> NoReturn:
    click.echo(f"redline: error: {message}", err=True)
    sys.exit(code)
