"""A person as a critic: the human-in-the-loop step of a reflection loop, as one more critic.

LangGraph's reflection examples stop at a human-in-the-loop pause; here the person is a
`Critic` like any other, so a mark from a person composes in a `Panel` with tests and
LLM judges, and the person's feedback reaches the reviser like any critic's.

Two modes:

- **Graph mode** (no ``ask``): `HumanCritic.critique` calls LangGraph's
  ``interrupt(payload)``. The run pauses (a checkpointer keeps it) and the caller sees
  the payload, a JSON-able dict (`HumanCritic.payload`); it resumes the run with
  ``Command(resume=answer)``, or with ``arefine(..., checkpointer=same, resume=answer)``.
  LangGraph runs the paused node again from its start on resume, so the other critics
  of the panel judge again then (they were cancelled at the pause); several people in
  one panel are asked one after another, one pause each, their answers matched by order.
- **Direct mode** (``ask=callable``): ``ask(task, candidate)``, sync (run in a worker
  thread) or async, returns the answer; no pause, no checkpointer. The CLI's
  ``--critic human`` asks on the terminal this way.

The answer is a mark on the critic's scale (0 to 10 unless ``scale=`` says otherwise;
with ``scale=1`` it is a float in [0, 1]), bare or in a dict::

    7
    {"score": 7, "feedback": "Cite the source of the second claim.", "passed": false}

``score`` is required, ``feedback`` (what to change) and ``passed`` (a hard verdict,
true or false) are optional. The critique's score is ``mark / scale``, its ``raw`` the
mark. A resume value that is not such an answer is not used: the critic asks again,
with the payload's ``error`` saying what was wrong (LangGraph's "validate human input"
loop), and `arefine` checks ``resume=`` before the run continues (`CriticError`).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import math
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import IO, Any, TypeVar

from redline.critics.base import Critic
from redline.errors import ConfigError, CriticError
from redline.types import Candidate, Critique, Task

__all__ = ["PAYLOAD_KIND", "Ask", "HumanCritic", "human_critic", "read_verdict",
           "terminal_guard"]

PAYLOAD_KIND = "redline.human_critic"
"""The ``kind`` of a `HumanCritic` interrupt's payload (to tell it from other pauses)."""

Ask = Callable[[Task, Candidate], Any]
"""``ask(task, candidate)``, sync or async, returning an answer (see the module)."""

T = TypeVar("T")

_ANSWER_KEYS = frozenset({"score", "feedback", "passed"})


class HumanCritic(Critic):
    """A person's mark and feedback, asked through a LangGraph pause or an ``ask`` callable.

    Args:
        ask: how to ask the person in direct mode: ``ask(task, candidate)``, sync or
            async, returns an answer (see the module). An object with an async
            ``preflight()`` is checked before the run spends a token. None: graph mode,
            the run pauses with LangGraph's ``interrupt`` (needs a checkpointer).
        name: the critic's name.
        scale: the top of the marks (a mark is from 0 to ``scale``); 1 for [0, 1] floats.
        gate: make a failed verdict a hard failure of the panel (see `Critic.gate`).
        weight: its weight in the panel's mean.
        pass_mark: the score (0 to 1) at which an answer without ``passed`` counts as
            passed (see `Critic.pass_mark`).

    Raises:
        ConfigError: a scale or pass mark out of range, or an ``ask`` that is not callable.
    """

    deterministic = False

    def __init__(self, ask: Ask | None = None, *, name: str = "human", scale: float = 10,
                 gate: bool = False, weight: float = 1.0,
                 pass_mark: float | None = None) -> None:
        if ask is not None and not callable(ask):
            raise ConfigError(f"critic {name!r}: ask must be a callable (task, candidate) "
                              f"-> answer, got {type(ask).__name__}")
        if isinstance(scale, bool) or not isinstance(scale, int | float) \
                or not math.isfinite(scale) or scale <= 0:
            raise ConfigError(f"critic {name!r}: scale {scale!r} must be a positive number")
        if pass_mark is not None and not 0.0 <= pass_mark <= 1.0:
            raise ConfigError(f"critic {name!r}: pass_mark {pass_mark} is outside [0, 1]")
        self.ask = ask
        self.name = name
        self.scale = scale
        self.gate = gate
        self.weight = weight
        self.pass_mark = pass_mark

    @property
    def pauses(self) -> bool:
        """True in graph mode: a critique pauses the graph (the run needs a checkpointer)."""
        return self.ask is None

    def payload(self, task: Task, candidate: Candidate) -> dict[str, Any]:
        """What a graph-mode pause shows the caller: a JSON-able dict with ``kind``
        (`PAYLOAD_KIND`), ``critic``, ``task`` (the prompt), ``candidate_id``,
        ``candidate`` (its text), ``round``, ``scale`` and ``answer`` (what to resume
        with); after a rejected answer also ``error``, saying what was wrong."""
        return {"kind": PAYLOAD_KIND, "critic": self.name, "task": task.prompt,
                "candidate_id": candidate.id, "candidate": candidate.text,
                "round": candidate.round, "scale": self.scale,
                "answer": _what_to_send(self.scale)}

    async def critique(self, task: Task, candidate: Candidate) -> Critique:
        if self.ask is None:
            return self._in_graph(task, candidate)
        answer = await self._call_ask(task, candidate)
        return read_verdict(answer, critic=self.name, scale=self.scale)

    async def critique_many(self, task: Task, candidates: Sequence[Candidate]
                            ) -> list[Critique]:
        """One candidate after another: a person answers one question at a time (and the
        pauses of a graph-mode critic come in a fixed order)."""
        return [await self.critique(task, c) for c in candidates]

    async def preflight(self) -> None:
        """Check the ``ask`` object's own ``preflight()``, when it has one (the terminal's
        does: ``--critic human needs a terminal``)."""
        check = getattr(self.ask, "preflight", None)
        if check is not None:
            await check()

    def _in_graph(self, task: Task, candidate: Candidate) -> Critique:
        payload = self.payload(task, candidate)
        while True:
            answer = _interrupt(payload, self.name)
            try:
                return read_verdict(answer, critic=self.name, scale=self.scale)
            except CriticError as exc:
                # Ask again: the rejected answer keeps its place in LangGraph's list of
                # resume values (matched by order), the next answer takes the next one.
                payload = {**payload, "error": str(exc)}

    async def _call_ask(self, task: Task, candidate: Candidate) -> Any:
        assert self.ask is not None
        if _is_async(self.ask):
            return await self.ask(task, candidate)
        value = await asyncio.to_thread(self.ask, task, candidate)
        if inspect.isawaitable(value):
            value = await value
        return value


def read_verdict(answer: Any, *, critic: str = "human", scale: float = 10) -> Critique:
    """A person's answer (a resume value or an ``ask``'s return) as a `Critique`.

    Args:
        answer: a mark from 0 to `scale`, or ``{"score": mark, "feedback": str,
            "passed": bool}`` (``feedback`` and ``passed`` optional).
        critic: the critic's name, for the critique and the error.
        scale: the top of the marks.

    Raises:
        CriticError: the answer is not one of those, in one line saying what to send.
    """
    if isinstance(answer, dict):
        unknown = sorted(str(k) for k in answer if k not in _ANSWER_KEYS)
        if unknown:
            _reject(critic, scale, answer, f"unknown key {unknown[0]!r}")
        if "score" not in answer:
            _reject(critic, scale, answer, "no 'score'")
        mark, feedback, passed = answer["score"], answer.get("feedback"), answer.get("passed")
    else:
        mark, feedback, passed = answer, None, None
    if isinstance(mark, bool) or not isinstance(mark, int | float):
        _reject(critic, scale, answer, f"the score {mark!r} is not a number")
    if not math.isfinite(mark) or not 0 <= mark <= scale:
        _reject(critic, scale, answer, f"the score {mark!r} is outside 0-{scale:g}")
    if feedback is not None and not isinstance(feedback, str):
        _reject(critic, scale, answer, f"the feedback is a {type(feedback).__name__}, "
                                       "not a string")
    if passed is not None and not isinstance(passed, bool):
        _reject(critic, scale, answer, f"'passed' is {passed!r}, not true or false")
    return Critique(critic=critic, score=min(1.0, mark / scale), raw=float(mark),
                    feedback=(feedback or "").strip(), passed=passed)


def _reject(critic: str, scale: float, answer: Any, why: str) -> None:
    shown = repr(answer)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    raise CriticError(f"critic {critic!r}: the answer {shown} cannot be used ({why}); "
                      f"send {_what_to_send(scale)}", critic=critic)


def _what_to_send(scale: float) -> str:
    return (f'a mark from 0 to {scale:g}, or {{"score": <0-{scale:g}>, "feedback": '
            '"what to change", "passed": true|false} (feedback and passed optional)')


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None))  # noqa: B004 - an object with an async __call__


# -- graph mode: LangGraph's interrupt --------------------------------------------------


def _interrupt(payload: dict[str, Any], name: str) -> Any:
    """LangGraph's ``interrupt(payload)``: the resume value, or the pause (raised, and
    let through by `run_critic` and the graph's nodes to LangGraph)."""
    # Imported here: the CLI lists and builds critics without loading LangGraph.
    from langgraph.types import interrupt

    try:
        return interrupt(payload)
    except RuntimeError as exc:  # get_config(): not inside a runnable (a graph's node)
        raise ConfigError(f"critic {name!r} has no ask= and is not running in a LangGraph "
                          "graph: pass ask=..., or run it in build_refine_graph(..., "
                          "checkpointer=...)") from exc


# -- direct mode on a terminal (the CLI's --critic human) -------------------------------


class _TerminalAsk:
    """Asks on the terminal: shows the candidate, reads a mark (again until it is one)
    and a line of feedback.

    It reads standard input when that is a terminal, else ``/dev/tty``; it writes to
    the process's real stderr when that is a terminal (under any redirection of
    ``sys.stderr``), else to ``/dev/tty``. One person, one terminal: dialogs of several
    critics wait for each other.
    """

    _lock = threading.Lock()

    def __init__(self, name: str, scale: float) -> None:
        self.name = name
        self.scale = scale

    async def preflight(self) -> None:
        if _stdin_is_tty():
            return
        try:
            with open("/dev/tty", "rb"):
                pass
        except OSError:
            raise ConfigError("--critic human needs a terminal: standard input is not one "
                              "and /dev/tty cannot be opened (run redline interactively, "
                              "or use another critic)") from None

    async def __call__(self, task: Task, candidate: Candidate) -> dict[str, Any]:
        guard = _guard.get()  # read here: a new thread does not inherit context variables
        return await _in_daemon_thread(lambda: self._dialog(task, candidate, guard))

    def _dialog(self, task: Task, candidate: Candidate,
                guard: Callable[[], AbstractContextManager[Any]] | None) -> dict[str, Any]:
        with self._lock, guard() if guard else nullcontext(), \
                _terminal(self.name) as (read, out):
            rule = "─" * 60
            out.write(f"\n{rule}\ncritic {self.name!r}: candidate {candidate.id[:8]} "
                      f"(round {candidate.round}) for the task:\n  "
                      f"{_one_line(task.prompt)}\n{rule}\n{candidate.text.rstrip()}\n"
                      f"{rule}\n")
            while True:
                line = self._line(read, out, f"mark 0-{self.scale:g}: ")
                try:
                    mark = float(line)
                except ValueError:
                    mark = math.nan
                if math.isfinite(mark) and 0 <= mark <= self.scale:
                    break
                out.write(f"  {line!r} is not a mark: type a number from 0 to "
                          f"{self.scale:g}\n")
            feedback = self._line(read, out, "feedback (one line, Enter for none): ")
            out.write("\n")
            out.flush()
        return {"score": mark, "feedback": feedback}

    def _line(self, read: IO[str], out: IO[str], prompt: str) -> str:
        out.write(prompt)
        out.flush()
        line = read.readline()
        if not line:
            out.write("\n")
            raise CriticError(f"critic {self.name!r}: the terminal closed (end of input) "
                              "before the person answered", critic=self.name)
        return line.strip()


_guard: contextvars.ContextVar[Callable[[], AbstractContextManager[Any]] | None] = (
    contextvars.ContextVar("redline_terminal_guard", default=None))


@contextmanager
def terminal_guard(guard: Callable[[], AbstractContextManager[Any]]) -> Iterator[None]:
    """Inside the block, each terminal dialog of ``--critic human`` runs inside ``guard()``.

    A live display on the same terminal (a progress spinner) redraws its line over the
    prompt; a front end passes a guard that stops it for the dialog::

        with terminal_guard(printer.paused):
            await arefine(...)
    """
    token = _guard.set(guard)
    try:
        yield
    finally:
        _guard.reset(token)


def _stdin_is_tty() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except ValueError:  # closed
        return False


@contextmanager
def _terminal(name: str) -> Iterator[tuple[IO[str], IO[str]]]:
    opened: list[IO[str]] = []
    try:
        if _stdin_is_tty():
            read: IO[str] = sys.stdin
        else:
            read = open("/dev/tty", encoding="utf-8", errors="replace")  # noqa: SIM115
            opened.append(read)
        # The real stderr, not sys.stderr: a live display may have replaced that with a
        # proxy that holds a prompt back until its line ends.
        out = sys.__stderr__
        if out is None or not out.isatty():
            out = open("/dev/tty", "w", encoding="utf-8")  # noqa: SIM115
            opened.append(out)
        yield read, out
    except OSError as exc:
        raise CriticError(f"critic {name!r}: cannot use the terminal: {exc.strerror or exc}",
                          critic=name) from exc
    finally:
        for f in opened:
            f.close()


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


async def _in_daemon_thread(fn: Callable[[], T]) -> T:
    """``fn()`` in a daemon thread: a person who never answers must not keep the process
    alive after Ctrl-C (``asyncio.to_thread``'s pool is joined at exit)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():  # cancelled meanwhile
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            outcome: tuple[T | None, BaseException | None] = (fn(), None)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            outcome = (None, exc)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop closed while the person was typing
            pass

    threading.Thread(target=run, name="redline-human-critic", daemon=True).start()
    return await done


def human_critic(arg: str | None) -> HumanCritic:
    """A person at the terminal marks each candidate 0-10 and says what to change.

    Argument: none. Each candidate is shown on the terminal (stderr); the person types
    a mark from 0 to 10 (asked again until it is one) and a line of feedback, which the
    reviser reads like any critic's. It needs a terminal (standard input, else
    /dev/tty): without one the run stops before any token is spent. End of input at a
    prompt stops the run with the best answer so far.

    Examples:
        --critic human
        --critic human --critic pytest
    """
    if arg:
        raise ConfigError(f"critic 'human' takes no argument (got {arg!r}); the person "
                          "types a mark from 0 to 10 on the terminal")
    return HumanCritic(ask=_TerminalAsk("human", 10))

