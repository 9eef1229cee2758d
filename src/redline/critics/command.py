"""Compiler and linter critics: a command's exit status is the verdict.

The candidate's code (its fenced block in the file's language, or the whole text) is
written to a temporary file and the command runs on it (see
`redline.feedback_sources.commands`). Exit status 0 passes (score 1); anything else
fails (score 0) with the command's diagnostics as feedback. It is a gate by default:
code that does not compile caps the panel's score at 0.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from collections.abc import Sequence

from redline.critics.base import Critic
from redline.errors import ConfigError
from redline.feedback_sources.code import extract_code, language_of
from redline.feedback_sources.commands import parse_command, run_command
from redline.types import Candidate, Critique, Task

__all__ = ["CommandCritic", "cmd_critic", "gcc_critic", "mypy_critic", "ruff_critic"]


class CommandCritic(Critic):
    """Runs a command on the candidate's code; exit status 0 passes.

    Args:
        command: the command line; ``{file}`` (or ``{file.EXT}``, which also sets the
            suffix) is replaced by the candidate file's path, appended when absent.
        name: the critic's name; default: the program's name.
        suffix: the file's suffix when the command does not say; default: guessed from
            the program (``gcc`` -> ``.c``), else ``.txt``.
        language: which fenced blocks hold the code; default: the suffix's language.
            ``"raw"`` uses the candidate's whole text.
        gate: a failure caps the panel's score at 0 (default True).
        timeout: seconds before the command is killed (a failure).
        max_feedback_chars: the diagnostics kept as feedback.
        env: environment variables to set on top of this process's.

    Raises:
        ConfigError: the command is empty or cannot be split.
    """

    deterministic = True

    def __init__(self, command: str | Sequence[str], *, name: str | None = None,
                 suffix: str | None = None, language: str | None = None, gate: bool = True,
                 timeout: float = 30.0, max_feedback_chars: int = 4000,
                 env: dict[str, str] | None = None) -> None:
        self.argv, self.suffix = parse_command(command, suffix)
        self.name = name or os.path.basename(self.argv[0])
        self.language = language or language_of(self.suffix)
        self.gate = gate
        self.timeout = timeout
        self.max_feedback_chars = max_feedback_chars
        self.env = env

    async def preflight(self) -> None:
        """The program must be installed (found on PATH, or an executable path).

        Raises:
            ConfigError: the program is not found, naming it.
        """
        program = self.argv[0]
        env_path = (self.env or {}).get("PATH", os.environ.get("PATH"))
        found = shutil.which(program, path=env_path) if os.sep not in program else (
            program if os.access(program, os.X_OK) and os.path.isfile(program) else None)
        if found is None:
            raise ConfigError(f"critic {self.name!r}: command {program!r} is not installed "
                              "(not found on PATH): install it or fix the command")

    async def critique(self, task: Task, candidate: Candidate) -> Critique:
        code = candidate.text if self.language == "raw" else \
            extract_code(candidate.text, self.language)
        result = await run_command(self.argv, code, suffix=self.suffix, timeout=self.timeout,
                                   max_output=self.max_feedback_chars * 4,
                                   env={**os.environ, **self.env} if self.env else None)
        ok = result.ok
        output = result.output.strip()
        shown = shlex.join(result.command)
        if ok:
            feedback = ""
        elif result.timed_out:
            feedback = f"`{shown}` did not finish within {self.timeout:g} s."
        else:
            trimmed = output if len(output) <= self.max_feedback_chars else \
                output[:self.max_feedback_chars] + "\n... (output cut)"
            feedback = f"`{shown}` failed (exit status {result.exit_code}):\n" \
                f"{trimmed or '(no output)'}"
        return Critique(critic=self.name, score=float(ok), passed=ok, feedback=feedback,
                        raw=float(result.exit_code),
                        evidence={"command": shown, "exit_code": result.exit_code,
                                  "output": output[:self.max_feedback_chars * 4],
                                  "timed_out": result.timed_out,
                                  "seconds": round(result.seconds, 3)})


def _with_flags(base: str, arg: str | None) -> str:
    """`base` with the flags in `arg` inserted before its ``{file...}`` argument."""
    if not arg:
        return base
    head, _, placeholder = base.rpartition(" ")
    return f"{head} {arg} {placeholder}"


def cmd_critic(arg: str | None) -> CommandCritic:
    """Any command run on the answer's code: exit status 0 passes, diagnostics are feedback.

    Argument: the command line, with ``{file}`` where the candidate file's path goes
    (appended when absent); ``{file.rs}`` also sets the file's suffix, which otherwise
    is guessed from the program (gcc: .c, rustc: .rs, tsc: .ts, ruff/mypy: .py). The
    code is the answer's fenced block in that language, or the whole answer. A gate.

    Examples:
        --critic cmd:"gcc -fsyntax-only -Wall {file}"
        --critic cmd:"rustc --edition 2021 --crate-type lib -o /dev/null {file.rs}"
        --critic cmd:"tsc --noEmit --strict {file}"
    """
    if not arg or not arg.strip():
        raise ConfigError("critic 'cmd' needs a command, e.g. "
                          "--critic cmd:\"gcc -fsyntax-only {file}\"")
    return CommandCritic(arg)


def gcc_critic(arg: str | None) -> CommandCritic:
    """C code must compile: gcc -fsyntax-only -Wall on the answer's C block (a gate).

    Argument: extra compiler flags (optional), e.g. a standard or -Werror.

    Examples:
        --critic gcc
        --critic gcc:"-std=c11 -Werror"
    """
    return CommandCritic(_with_flags("gcc -fsyntax-only -Wall {file.c}", arg), name="gcc",
                         env={"LC_ALL": "C"})


def ruff_critic(arg: str | None) -> CommandCritic:
    """Python code must pass ruff check (ruff's default rules, no config files; a gate).

    Argument: extra ruff flags (optional), e.g. rules to select.

    Examples:
        --critic ruff
        --critic ruff:"--select E,F,B"
    """
    return CommandCritic(_with_flags(
        "ruff check --isolated --no-cache --quiet --output-format=concise {file.py}", arg),
        name="ruff")


def mypy_critic(arg: str | None) -> CommandCritic:
    """Python code must type-check with mypy (missing imports ignored; a gate).

    Argument: extra mypy flags (optional), e.g. --strict.

    Examples:
        --critic mypy
        --critic mypy:--strict
    """
    cache = os.path.join(tempfile.gettempdir(), "redline-mypy-cache")
    return CommandCritic(_with_flags(
        "mypy --ignore-missing-imports --no-error-summary --hide-error-context "
        f"--no-color-output --show-column-numbers --cache-dir={shlex.quote(cache)} "
        "{file.py}", arg), name="mypy", timeout=120.0)
