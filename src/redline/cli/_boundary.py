"""The CLI's one error boundary: redline's errors become one line and an exit code.

Every ``redline`` command runs inside it (the ``redline`` group invokes its commands
through `guarded`), so a new command gets the same codes without a line of its own.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from redline.errors import ConfigError, LLMError, LLMUnavailableError, RedlineError

__all__ = ["EXIT_BELOW_THRESHOLD", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE",
           "die", "exit_code_of"]

EXIT_OK = 0
EXIT_BELOW_THRESHOLD = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_INTERRUPTED = 130


def exit_code_of(exc: RedlineError) -> int:
    """2 for what the user must fix (bad input, a server that cannot be reached, a
    rejected key, an unknown model); 3 for what broke while working."""
    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    if isinstance(exc, LLMError) and (exc.status in (401, 403, 404) or (
            isinstance(exc, LLMUnavailableError) and exc.last_status is None)):
        return EXIT_USAGE
    return EXIT_FAILED


def die(message: str, code: int) -> NoReturn:
    """Print ``redline: error: MESSAGE`` on stderr and exit with `code`."""
    click.echo(f"redline: error: {message}", err=True)
    sys.exit(code)


class GuardedGroup(click.Group):
    """A click group whose commands run inside the error boundary."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except RedlineError as exc:
            die(str(exc), exit_code_of(exc))
        except KeyboardInterrupt:
            die("interrupted", EXIT_INTERRUPTED)

    def group(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", GuardedGroup)
        return super().group(*args, **kwargs)
