"""Run a command-line tool (compiler, linter, type checker) on a candidate.

The candidate is written to a temporary file and the command runs on it, in that
file's temporary directory, with a timeout that kills its whole process group and a cap
on the output kept. The tool is trusted (it is the user's); the file is data. Paths in
the output are shown relative to the temporary directory, so diagnostics read
``candidate.c:3:5: error: ...`` and are the same from run to run.

```python
result = await run_command("gcc -fsyntax-only {file}", "int main(void) { return 0; }",
                           suffix=".c")
assert result.exit_code == 0
```
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import signal
import tempfile
import time
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from redline.errors import ConfigError, FeedbackSourceError
from redline.feedback_sources._waits import wait_then_kill_group

__all__ = ["CommandResult", "parse_command", "run_command"]

_PLACEHOLDER = re.compile(r"\{file(\.[A-Za-z0-9_+.-]+)?\}")

_SUFFIX_BY_PROGRAM = {
    "gcc": ".c", "cc": ".c", "clang": ".c", "tcc": ".c",
    "g++": ".cpp", "c++": ".cpp", "clang++": ".cpp",
    "rustc": ".rs", "tsc": ".ts", "node": ".js", "deno": ".ts", "go": ".go",
    "javac": ".java", "python": ".py", "python3": ".py", "ruff": ".py", "mypy": ".py",
    "pyright": ".py", "pyflakes": ".py", "flake8": ".py", "pylint": ".py",
    "shellcheck": ".sh", "bash": ".sh", "sh": ".sh",
}

_INSTALL_HINTS = {
    "gcc": "a C compiler: apt-get install gcc (Debian/Ubuntu), xcode-select --install "
           "(macOS)",
    "g++": "a C++ compiler: apt-get install g++ (Debian/Ubuntu), xcode-select --install "
           "(macOS)",
    "clang": "clang: apt-get install clang, or xcode-select --install (macOS)",
    "rustc": "Rust: see https://rustup.rs",
    "tsc": "TypeScript: npm install -g typescript",
    "node": "Node.js: see https://nodejs.org",
    "go": "Go: see https://go.dev/dl",
    "javac": "a JDK: apt-get install default-jdk",
    "ruff": "ruff: pip install ruff",
    "mypy": "mypy: pip install mypy",
    "pyright": "pyright: pip install pyright",
    "shellcheck": "shellcheck: apt-get install shellcheck",
}
_INSTALL_HINTS.update({"cc": _INSTALL_HINTS["gcc"], "c++": _INSTALL_HINTS["g++"],
                       "clang++": _INSTALL_HINTS["clang"]})


class CommandResult(BaseModel):
    """How a command ended on a candidate file."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    command: tuple[str, ...]
    """The command as run, with the file's name in place of ``{file}``."""
    exit_code: int
    """Its exit status; negative: killed by that signal."""
    output: str
    """Standard output and standard error, interleaved, up to `max_output` bytes."""
    output_bytes: int
    """All the bytes it wrote (more than kept when the output was capped)."""
    timed_out: bool
    """The timeout ran out and the command was killed."""
    seconds: float
    """Wall-clock seconds."""

    @property
    def ok(self) -> bool:
        """The command exited with status 0 in time."""
        return self.exit_code == 0 and not self.timed_out


def parse_command(command: str | Sequence[str],
                  suffix: str | None = None) -> tuple[list[str], str]:
    """Split a command and decide the candidate file's suffix.

    ``{file}`` marks where the file's path goes (at the end when absent); ``{file.rs}``
    also sets the suffix. Otherwise the suffix is `suffix`, or guessed from the program
    (``gcc`` -> ``.c``, ``ruff`` -> ``.py``), or ``.txt``.

    Returns:
        The arguments (placeholders kept) and the suffix.

    Raises:
        ConfigError: the command is empty or cannot be split.
    """
    try:
        argv = shlex.split(command) if isinstance(command, str) else list(command)
    except ValueError as exc:
        raise ConfigError(f"cannot split command {command!r}: {exc}") from exc
    if not argv:
        raise ConfigError("the command is empty: give a program and its arguments, "
                          "e.g. 'gcc -fsyntax-only {file}'")
    given = [m.group(1) for a in argv for m in _PLACEHOLDER.finditer(a) if m.group(1)]
    if not any(_PLACEHOLDER.search(a) for a in argv):
        argv.append("{file}")
    program = os.path.basename(argv[0])
    chosen = (given[0] if given else None) or suffix or _SUFFIX_BY_PROGRAM.get(program, ".txt")
    return argv, chosen


async def run_command(command: str | Sequence[str], text: str, *, suffix: str | None = None,
                      file_stem: str = "candidate", timeout: float = 30.0,
                      max_output: int = 64_000,
                      env: Mapping[str, str] | None = None) -> CommandResult:
    """Write `text` to a temporary file and run `command` on it.

    Args:
        command: a command line (split like a shell does) or its arguments; ``{file}``
            (or ``{file.EXT}``) is replaced by the file's path, appended when absent.
        text: the file's content.
        suffix: the file's suffix when the command does not say (see `parse_command`).
        file_stem: the file's name without suffix.
        timeout: seconds before the command's process group is killed.
        max_output: bytes of output kept (the first ones: compilers report the first
            errors first).
        env: the environment; default: this process's.

    Raises:
        FeedbackSourceError: the program is not installed (the message says what to
            install) or cannot be started.
    """
    argv, chosen = parse_command(command, suffix)
    program = shutil.which(argv[0], path=(env or os.environ).get("PATH"))
    if program is None:
        name = os.path.basename(argv[0])
        hint = _INSTALL_HINTS.get(name, f"the program that provides {name!r}")
        raise FeedbackSourceError(f"command {name!r} not found on PATH: install {hint}")
    with tempfile.TemporaryDirectory(prefix="redline-cmd-") as tmp, \
            tempfile.TemporaryFile() as out:
        file_name = f"{file_stem}{chosen}"
        path = os.path.join(tmp, file_name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        filled = [_PLACEHOLDER.sub(path, a) for a in argv]
        started = time.perf_counter()
        try:
            # Output goes to an unnamed file, not a pipe: a process that leaves the
            # group cannot keep the run waiting by holding the pipe open.
            proc = await asyncio.create_subprocess_exec(
                program, *filled[1:], stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=out, cwd=tmp, env=dict(env) if env is not None else None,
                start_new_session=True)
        except OSError as exc:
            raise FeedbackSourceError(f"command {argv[0]!r} could not start: "
                                      f"{exc.strerror or exc}") from exc
        timed_out = await wait_then_kill_group(proc, timeout)
        seconds = time.perf_counter() - started
        total = out.seek(0, os.SEEK_END)
        out.seek(0)
        output = out.read(max_output).decode("utf-8", errors="replace")
        for prefix in {os.path.realpath(tmp), tmp}:
            output = output.replace(prefix + os.sep, "").replace(prefix, ".")
    shown = tuple(a.replace(path, file_name) for a in filled)
    return CommandResult(command=shown, exit_code=proc.returncode
                         if proc.returncode is not None else -signal.SIGKILL,
                         output=output, output_bytes=total, timed_out=timed_out,
                         seconds=seconds)
