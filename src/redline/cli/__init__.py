"""The ``redline`` command: thin over the library, errors become one line and an exit code.

Exit codes: 0 the threshold was reached; 1 the run stopped below it (the result is
still written); 2 a usage or configuration error (nothing written, no token spent); 3 a
model or critic broke mid-run (the best so far is still written); 130 interrupted (the
best so far is still written). ``redline batch``: 0 every item finished without an
error, 3 some ended with an error (the output is complete), 2 and 130 as above.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from redline._version import __version__
from redline.cli._boundary import (
    EXIT_BELOW_THRESHOLD,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    GuardedGroup,
)

__all__ = ["EXIT_BELOW_THRESHOLD", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE",
           "cli", "main"]


@click.group(cls=GuardedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="redline")
def cli() -> None:
    """redline: check and fix an LLM's answer before it ships.

    Drafts an answer, has critics score it and say why, revises it, and keeps the best
    until the score reaches a threshold or a budget runs out.

    \b
    Examples:
      redline refine "Explain TCP slow start in three sentences."
      redline refine -f draft.md --task "Fix grammar; keep the meaning" -o fixed.md
      echo "Write a haiku about rain" | redline refine --json
      redline refine --preset self-debug -f solution.py --task "Fix the function"
      redline batch questions.jsonl -o answers.jsonl --concurrency 16
      redline critics list
      redline presets list
    """


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the ``redline`` script."""
    try:
        return cli.main(args=argv, prog_name="redline")
    except KeyboardInterrupt:  # pragma: no cover - Ctrl-C outside a command's own handling
        click.echo("redline: error: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)


# The subcommands register themselves on `cli`.
from redline.cli import _batch, _compare, _critics, _presets, _refine, _report, _rm, _serve  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
