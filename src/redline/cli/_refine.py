"""``redline refine``: refine one task from the command line."""

from __future__ import annotations

import asyncio
import logging
import math
import sys
from pathlib import Path
from typing import Any

import click

from redline.cli import EXIT_BELOW_THRESHOLD, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, cli
from redline.cli._boundary import die
from redline.cli._options import read_key_file, spec_fields
from redline.cli._progress import ProgressPrinter, make_console, stop_line
from redline.errors import ConfigError
from redline.types import Budget, RefineResult, StopReason, Task

DEFAULT_FILE_TASK = "Improve the following text. Keep its meaning, fix its errors."


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
@click.option("--max-cost", type=float, metavar="USD",
              help="Money budget of the whole run (needs --price).")
@click.option("--price", metavar="IN:OUT",
              help="The model's price in dollars per million input:output tokens, "
                   "e.g. 0.15:0.60.")
@click.option("-n", "--drafts", type=int, default=1, show_default=True,
              help="Drafts generated in parallel in the first round (best-of-n).")
@click.option("--revise", type=click.Choice(["rewrite", "edit"]), default="rewrite",
              show_default=True, help="Rewrite the answer, or edit it with search/replace.")
@click.option("--revise-when", type=click.Choice(["always", "on_failure"]), default="always",
              show_default=True, help="on_failure: revise only when a critic flags a failure.")
@click.option("--revise-from", type=click.Choice(["best", "last"]), default="best",
              show_default=True, help="Revise the best candidate so far, or the last one.")
@click.option("--patience", type=int, default=2, show_default=True,
              help="Stop as converged after this many rounds without a gain.")
@click.option("--preset", metavar="NAME",
              help="A research method's configuration: self-refine, reflexion, critic, "
                   "self-debug, best-of-n (see `redline presets list`). -c fills its "
                   "critic; flags you give override its settings.")
@click.option("--select", type=click.Choice(["score", "vote"]), default="score",
              show_default=True,
              help="Return the best-scored answer, or the majority final answer (vote).")
@click.option("--memory", type=int, metavar="K",
              help="Reflections (reflexion) or rounds of feedback (self-refine) kept.")
@click.option("--no-explain", is_flag=True,
              help="self-debug: fix from the failing tests alone, without explaining first.")
@click.option("--rubric", "rubric_file", metavar="FILE",
              help="self-refine: the rubric the model judges its answers by.")
@click.option("--system", metavar="TEXT", help="A system prompt for drafting and revising.")
@click.option("--temperature", type=float,
              help="Sampling temperature of drafts (default 0, or 0.7 with -n > 1).")
@click.option("--seed", type=int, help="Sampling seed of drafts (draft i uses SEED + i).")
@click.option("--model", envvar="REDLINE_MODEL", metavar="NAME",
              help="Model name on the server, or provider:name (openai:gpt-4o-mini, "
                   "ollama:qwen2.5, local).  [env: REDLINE_MODEL]")
# No envvar= on --base-url / --api-key: resolve_model reads OPENAI_BASE_URL and
# OPENAI_API_KEY itself, and only for providers that use them (never for ollama:).
@click.option("--base-url", metavar="URL",
              help="An OpenAI-compatible server (vLLM, Ollama, llama.cpp).  "
                   "[env: OPENAI_BASE_URL]")
@click.option("--api-key", metavar="KEY",
              help="API key; prefer the environment or --api-key-file (a command line is "
                   "visible to every process on the host).  [env: OPENAI_API_KEY]")
@click.option("--api-key-file", metavar="FILE", help="Read the API key from this file.")
@click.option("--model-path", envvar="REDLINE_MODEL_PATH", metavar="GGUF",
              help="A GGUF file for the embedded llama.cpp model.  [env: REDLINE_MODEL_PATH]")
@click.option("--rm-device", metavar="DEVICE",
              help="Device of reward-model critics (rm:): auto, cpu, cuda, cuda:1.")
@click.option("--rm-batch-size", type=int, metavar="N",
              help="Largest forward pass of reward-model critics.")
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
    # On a terminal the progress printer already said why (except for an interrupt).
    if not quiet and (not sys.stderr.isatty() or code == EXIT_INTERRUPTED):
        click.echo(f"redline: {stop_line(result)}", err=True)
    text = (_json(result.document(settings)) if opts["as_json"] else result.text)
    if text is None:
        die(f"nothing to write: no answer was made ({result.stop_detail})",
             code if code != EXIT_BELOW_THRESHOLD else EXIT_FAILED)
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
    from redline.workflows import RunSpec

    explicit = _explicit(opts)
    fields = spec_fields(opts, _budget(opts, explicit))
    if opts["preset"] is not None:
        fields = _preset_fields(opts, fields, explicit)
    else:
        for flag, key in (("--memory", "memory"), ("--no-explain", "no_explain"),
                          ("--rubric", "rubric_file")):
            if key in explicit:
                raise ConfigError(f"{flag} applies to a preset; add --preset NAME (see "
                                  "`redline presets list`)")
    spec = RunSpec(**fields)
    task = _read_task(opts, system=spec.system)
    if opts["output"] is not None:
        from redline._files import check_writable

        check_writable(opts["output"])
    api_key = _api_key(opts)
    config = spec.build(api_key=api_key)
    if spec.budget.max_cost_usd is not None and config.model.price is None:
        raise ConfigError("--max-cost needs the model's price: add --price IN:OUT (dollars "
                          "per million input:output tokens)")
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
    return Task(prompt=prompt.strip(), draft=draft, system=system)


def _read_text(path: str) -> str:
    where = "standard input" if path == "-" else repr(path)
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {where}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {where}: {exc.strerror or exc}") from None


def _api_key(opts: dict[str, Any]) -> str | None:
    if opts["api_key_file"] is not None:
        return read_key_file(opts["api_key_file"])
    if opts["api_key"] and not opts["quiet"]:
        click.echo("redline: warning: --api-key on the command line is visible to every "
                   "process on this host; set OPENAI_API_KEY or use --api-key-file", err=True)
    return opts["api_key"]


# The RunSpec policy fields and the options that set them.
_POLICY_OPTIONS = {"threshold": "threshold", "n": "drafts", "temperature": "temperature",
                   "seed": "seed", "revise": "revise", "revise_when": "revise_when",
                   "revise_from": "revise_from", "patience": "patience", "select": "select"}
_BUDGET_OPTIONS = {"max_rounds": "max_rounds", "max_tokens": "max_tokens",
                   "max_seconds": "max_seconds", "max_llm_calls": "max_calls",
                   "max_cost_usd": "max_cost"}


def _explicit(opts: dict[str, Any]) -> set[str]:
    """The options the user gave (not their defaults)."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    return {name for name in opts
            if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)}


def _preset_fields(opts: dict[str, Any], fields: dict[str, Any],
                   explicit: set[str]) -> dict[str, Any]:
    """With --preset, the spec holds only what the user set: the preset decides the rest."""
    from redline._files import read_config_text

    fields = {k: v for k, v in fields.items()
              if k not in _POLICY_OPTIONS or _POLICY_OPTIONS[k] in explicit}
    if not any(opt in explicit for opt in _BUDGET_OPTIONS.values()):
        fields.pop("budget")
    if "critic_specs" not in explicit:
        fields.pop("critics")
    options: dict[str, Any] = {}
    if opts["memory"] is not None:
        options["memory"] = opts["memory"]
    if opts["no_explain"]:
        options["explain"] = False
    if opts["rubric_file"] is not None:
        options["rubric"] = read_config_text(opts["rubric_file"], "rubric file")
    return {**fields, "preset": opts["preset"], "preset_options": options}


def _budget(opts: dict[str, Any], explicit: set[str]) -> Budget:
    for flag, key in (("--threshold", "threshold"), ("--max-seconds", "max_seconds"),
                      ("--max-cost", "max_cost"), ("--temperature", "temperature")):
        value = opts[key]
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"{flag} must be a finite number, got {value}")
    threshold = opts["threshold"]
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold {threshold:g} is outside [0, 1]")
    checks = [("--max-rounds", opts["max_rounds"], 0), ("--max-tokens", opts["max_tokens"], 1),
              ("--max-calls", opts["max_calls"], 1), ("--drafts", opts["drafts"], 1),
              ("--patience", opts["patience"], 1)]
    for flag, value, low in checks:
        if value is not None and value < low:
            raise ConfigError(f"{flag} must be at least {low}, got {value}")
    for flag, key in (("--max-seconds", "max_seconds"), ("--max-cost", "max_cost")):
        if opts[key] is not None and opts[key] <= 0:
            raise ConfigError(f"{flag} must be positive, got {opts[key]:g}")
    if opts["temperature"] is not None and not 0 <= opts["temperature"] <= 2:
        raise ConfigError(f"--temperature must be between 0 and 2, got {opts['temperature']:g}")
    if opts["system"] is not None and not opts["system"].strip():
        raise ConfigError("--system is empty: give a system prompt or leave it out")
    if opts["memory"] is not None and opts["memory"] < 1:
        raise ConfigError(f"--memory must be at least 1, got {opts['memory']}")
    given = {field: opts[option] for field, option in _BUDGET_OPTIONS.items()
             if opts[option] is not None}
    if opts["preset"] is not None and "max_rounds" not in explicit:
        given.pop("max_rounds")  # the preset's own (Budget's default, or none: best-of-n)
    return Budget(**given)


def _json(document: dict[str, Any]) -> str:
    import json

    return json.dumps(document, indent=2, ensure_ascii=False)


