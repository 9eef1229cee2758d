"""Commands on a candidate file, and the command critics, with the real tools."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from redline.critics.command import CommandCritic, gcc_critic, mypy_critic, ruff_critic
from redline.errors import ConfigError, FeedbackSourceError
from redline.feedback_sources.commands import parse_command, run_command
from redline.plugins import build_critic
from redline.testing import acheck_critic
from redline.types import Candidate, Task

GOOD_C = "#include <stdio.h>\n\nint main(void) {\n    printf(\"hi\\n\");\n    return 0;\n}\n"
BAD_C = "int main(void) {\n    return undeclared;\n}\n"
TASK = Task(prompt="Write the program.")

# CI installs these tools (gcc in .ci/run, ruff and mypy with the dev extra); with
# REDLINE_NO_SKIPS=1 a skip here fails the run instead of passing silently.
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
needs_ruff = pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed")
needs_mypy = pytest.mark.skipif(shutil.which("mypy") is None, reason="mypy is not installed")


@needs_gcc
async def test_gcc_accepts_good_c() -> None:
    result = await run_command("gcc -fsyntax-only {file}", GOOD_C, suffix=".c")
    assert result.ok and result.exit_code == 0 and result.output == ""
    assert result.command == ("gcc", "-fsyntax-only", "candidate.c")


@needs_gcc
async def test_gcc_rejects_bad_c_with_diagnostics_naming_the_file() -> None:
    result = await run_command("gcc -fsyntax-only {file}", BAD_C, suffix=".c")
    assert result.exit_code != 0 and not result.ok
    assert "candidate.c:2:" in result.output and "undeclared" in result.output
    assert "redline-cmd-" not in result.output  # temporary paths are not shown


async def test_missing_binary_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(FeedbackSourceError, match=r"'gcc' not found on PATH: install .*gcc"):
        await run_command("gcc -fsyntax-only {file}", GOOD_C, env={"PATH": str(tmp_path)})
    with pytest.raises(FeedbackSourceError, match="'no-such-linter' not found"):
        await run_command("no-such-linter --check", "x")


async def test_timeout_kills_the_command() -> None:
    result = await run_command("sh -c 'sleep 30' {file.sh}", "", timeout=0.5)
    assert result.timed_out and not result.ok
    assert result.seconds < 15  # killed, not the 30 s sleep


async def test_a_process_leaving_the_group_does_not_hold_the_run() -> None:
    result = await run_command("sh -c '(setsid sleep 3 &); echo started; sleep 30' {file.sh}",
                               "", timeout=0.5)
    assert result.timed_out and result.output == "started\n"
    assert result.seconds < 2.9  # the escaped sleep 3 did not hold the run


async def test_output_is_capped() -> None:
    result = await run_command("sh -c 'yes | head -c 1000000' {file.sh}", "", max_output=100)
    assert len(result.output) == 100 and result.output_bytes == 1_000_000


async def test_placeholder_with_suffix_and_appended_file() -> None:
    result = await run_command("cat {file.rs}", "fn main() {}\n")
    assert result.output == "fn main() {}\n" and result.command == ("cat", "candidate.rs")
    assert parse_command("wc -l") == (["wc", "-l", "{file}"], ".txt")
    assert parse_command("rustc --edition 2021") == (["rustc", "--edition", "2021", "{file}"],
                                                    ".rs")
    with pytest.raises(ConfigError, match="empty"):
        parse_command("   ")


@needs_gcc
async def test_gcc_critic_gates_on_the_answer_c_block() -> None:
    critic = gcc_critic(None)
    assert critic.gate and critic.name == "gcc"
    good = await critic.critique(TASK, Candidate(text=f"Here it is:\n```c\n{GOOD_C}```\n"))
    assert (good.score, good.passed, good.feedback) == (1.0, True, "")
    bad = await critic.critique(TASK, Candidate(text=f"```c\n{BAD_C}```"))
    assert (bad.score, bad.passed) == (0.0, False)
    assert bad.feedback.startswith("`gcc -fsyntax-only -Wall candidate.c` failed (exit status 1)")
    assert "'undeclared' undeclared" in bad.feedback  # LC_ALL=C: plain quotes
    assert bad.evidence["exit_code"] == 1


@needs_ruff
async def test_ruff_critic() -> None:
    critic = ruff_critic(None)
    clean = await critic.critique(TASK, Candidate(text="```python\nx = 1\nprint(x)\n```"))
    assert clean.passed is True
    dirty = await critic.critique(TASK, Candidate(text="```python\nimport os\nx = 1\n```"))
    assert dirty.passed is False and "candidate.py:1:8: F401" in dirty.feedback
    await acheck_critic(critic, ["import os\n", "x = 1\n"], concurrency=4)


@needs_mypy
async def test_mypy_critic() -> None:
    critic = mypy_critic("--strict")
    bad = await critic.critique(TASK, Candidate(text="def f(x: int) -> str:\n    return x\n"))
    assert bad.passed is False and "candidate.py:2:12: error: Incompatible return" in \
        bad.feedback
    good = await critic.critique(TASK, Candidate(text="def f(x: int) -> str:\n"
                                                      "    return str(x)\n"))
    assert good.passed is True


async def test_cli_specs_build_command_critics() -> None:
    cmd = build_critic('cmd:gcc -fsyntax-only -std=c99 {file}')
    assert isinstance(cmd, CommandCritic) and cmd.argv == ["gcc", "-fsyntax-only",
                                                            "-std=c99", "{file}"]
    assert cmd.suffix == ".c" and cmd.language == "c"
    assert build_critic("gcc:-Werror").argv[-2] == "-Werror"
    assert build_critic("ruff:--select F").argv[-3:] == ["--select", "F", "{file.py}"]
    with pytest.raises(ConfigError, match="needs a command"):
        build_critic("cmd")
    failing = await build_critic("cmd:sh -c 'echo nope; exit 3' {file.sh}").critique(
        TASK, Candidate(text="echo"))
    assert failing.passed is False and "exit status 3" in failing.feedback
    assert "nope" in failing.feedback
