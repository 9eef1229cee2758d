"""Live progress of a run on stderr, with rich; silent when stderr is not a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.status import Status

from redline.types import RefineResult

if TYPE_CHECKING:  # LangGraph loads when a run starts, not for `redline --help`
    from redline.workflows import Progress

__all__ = ["ProgressPrinter", "make_console", "stop_line"]


def make_console(*, quiet: bool) -> Console | None:
    """A stderr console, or None when quiet or stderr is not a terminal."""
    if quiet or not sys.stderr.isatty():
        return None
    return Console(stderr=True, highlight=False)


class ProgressPrinter:
    """Prints each round's scores and the stop reason; a spinner says what runs now.

    Use as a context manager around the run and pass it as ``on_progress``.
    """

    def __init__(self, console: Console | None, *, threshold: float, model: str) -> None:
        self.console = console
        self.threshold = threshold
        self.model = model
        self._status: Status | None = None

    def __enter__(self) -> ProgressPrinter:
        if self.console is not None:
            self._status = self.console.status(f"drafting with {self.model} …")
            self._status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Stop the spinner inside the block (a terminal dialog: ``--critic human``), so
        that it does not redraw its line over the prompt."""
        status = self._status
        if status is not None:
            status.stop()
        try:
            yield
        finally:
            if status is not None and self._status is status:
                status.start()

    def __call__(self, event: Progress) -> None:
        if self.console is None:
            return
        for scored in event.scored:
            critics = "  ".join(f"{c.critic} {c.score:.2f}" for c in scored.critiques)
            gate = "" if scored.gates_passed else "  [red]gate failed[/]"
            self.console.print(
                f"[bold]round {event.round}[/]  {critics}  → {scored.score:.2f}{gate}  "
                f"[dim]best {event.best_score:.2f}/{self.threshold:g} · "
                f"{event.usage.total_tokens} tok · {event.usage.llm_calls} calls[/]")
        if event.stop_reason is not None and event.node == "finalize":
            self.console.print(f"[bold]stopped:[/] {event.stop_reason.value} "
                               f"[dim]({event.stop_detail})[/]")
        elif self._status is not None and event.stop_reason is not None:
            self._status.update("finishing …")
        elif self._status is not None:
            self._status.update(_NEXT.get(event.node, "working …").format(
                round=event.round, next=event.round + 1))


_NEXT = {
    "generate": "critiquing the draft …",
    "revise": "critiquing revision {round} …",
    "critique": "deciding …",
    "decide": "revising (round {next}) …",
    "reflect": "revising (round {next}) …",
}


def stop_line(result: RefineResult) -> str:
    """One line on why a run stopped and how good its best answer is."""
    best = result.best
    if best is None:
        quality = "no answer"
    elif best.unscored:
        quality = "best answer unscored"
    else:
        quality = f"best score {best.score:.2f} (threshold {result.threshold:g})"
    detail = result.error or result.stop_detail
    return f"stopped: {result.stop_reason.value}: {detail}; {quality}"
