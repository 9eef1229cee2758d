"""The critic contract: one method that scores a candidate and says why.

A class implements `Critic.critique`; a plain function becomes a critic with `@critic`.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, overload

from redline._aio import gather_all
from redline.context import Tally
from redline.errors import ConfigError, CriticError, RedlineError
from redline.types import Candidate, Critique, Task, Usage

__all__ = ["Critic", "FunctionCritic", "critic", "graph_signal", "run_critic"]


class Critic(ABC):
    """Scores a candidate for a task and says what to change.

    Attributes:
        name: identifies the critic in traces, caches and panels.
        gate: a hard check: when its critique says ``passed=False`` the panel's score
            is capped at 0 and the threshold cannot be reached.
        weight: its weight in the panel's mean of non-gate critics.
        deterministic: the same input always gets the same critique (checked by
            `redline.testing.check_critic`).
        pass_mark: the score a critique needs to count as passed when the critic does
            not say ``passed`` itself (a score or a ``(score, feedback)`` pair). For a
            gate, None means 1.0: a gate that returns a score fails below a perfect
            score. For other critics, None means they never give a verdict.

    What "failed" means, for every return type: a critique with ``passed=False``; a
    critique with ``passed=None`` from a gate, or from a critic with a ``pass_mark``,
    whose score is below the pass mark (`run_critic` fills ``passed`` in).
    """

    name: str = "critic"
    gate: bool = False
    weight: float = 1.0
    deterministic: bool = False
    pass_mark: float | None = None

    @property
    def effective_pass_mark(self) -> float | None:
        """The pass mark that decides ``passed`` for critiques that leave it None."""
        if self.pass_mark is not None:
            return self.pass_mark
        return 1.0 if self.gate else None

    @abstractmethod
    async def critique(self, task: Task, candidate: Candidate) -> Critique:
        """Judge one candidate.

        Returns a `Critique` when the critic could judge, even harshly; raises a
        `redline.errors.RedlineError` when it could not judge at all.
        """

    async def critique_many(self, task: Task, candidates: Sequence[Candidate]) -> list[Critique]:
        """Judge several candidates; override to batch (reward models do)."""
        return await gather_all(*(self.critique(task, c) for c in candidates))

    async def preflight(self) -> None:
        """Check, before a run spends any token, that the critic can work at all.

        Override to look for what a critique would need (a command on PATH, a model
        that loads, a server that answers) and raise `redline.errors.ConfigError` with
        one line that says what is missing and what to do. The default does nothing.
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def graph_signal(exc: BaseException) -> bool:
    """Whether `exc` is LangGraph's control flow rather than a failure: the pause of an
    ``interrupt()`` (or any ``GraphBubbleUp``), which must reach the graph unchanged.
    Without LangGraph loaded, nothing is."""
    errors = sys.modules.get("langgraph.errors")
    return errors is not None and isinstance(exc, errors.GraphBubbleUp)


async def run_critic(critic: Critic, task: Task, candidates: Sequence[Candidate], *,
                     name: str | None = None) -> list[Critique]:
    """Run a critic on candidates, checking what it returns and filling in its usage.

    Each critique is named `name` (the critic's name in its panel; ``critic.name`` when
    None), and a gate's (or a critic with a pass mark) ``passed`` is filled in from its
    score when the critique left it None. Exceptions that are not redline's are wrapped
    in `CriticError` naming the critic, so a broken plugin is reported as such.
    """
    name = name or critic.name
    mark = critic.effective_pass_mark
    started = time.monotonic()
    with Tally.scope() as tally:
        try:
            critiques = await critic.critique_many(task, candidates)
        except RedlineError:
            raise
        except Exception as exc:
            if graph_signal(exc):
                raise  # LangGraph's control flow (an interrupt() pause): the graph's own
            raise CriticError(f"critic {critic.name!r} failed: {type(exc).__name__}: {exc}",
                              critic=critic.name) from exc
    if len(critiques) != len(candidates):
        raise CriticError(f"critic {critic.name!r} returned {len(critiques)} critiques for "
                          f"{len(candidates)} candidates", critic=critic.name)
    seconds = (time.monotonic() - started) / max(1, len(candidates))
    share = 1 / max(1, len(candidates))
    out = []
    for c in critiques:
        if not isinstance(c, Critique):
            raise CriticError(f"critic {critic.name!r} returned {type(c).__name__}, "
                              "not a Critique", critic=critic.name)
        fill: dict[str, object] = {}
        if c.critic != name:
            fill["critic"] = name
        if c.passed is None and mark is not None:
            fill["passed"] = c.score >= mark
        if fill:
            c = c.model_copy(update=fill)
        if c.usage == Usage():
            u = tally.usage
            c = c.model_copy(update={"usage": u.model_copy(update={
                "input_tokens": round(u.input_tokens * share),
                "output_tokens": round(u.output_tokens * share),
                "llm_calls": round(u.llm_calls * share),
                "cost_usd": u.cost_usd * share,
                "seconds": seconds})})
        out.append(c)
    return out


CriticFunction = Callable[..., Any]


class FunctionCritic(Critic):
    """A critic made from a function by `@critic`.

    The function takes the candidate's text, or ``(task, candidate)``, may be sync or
    async, and returns a score in [0, 1], a bool (pass/fail), a ``(score, feedback)``
    pair or a `Critique`. A bool verdict's feedback on failure is the function's
    docstring, so ``"The answer must cite a source."`` reads well to the reviser. A
    sync function runs in a worker thread, so a slow one cannot block the event loop
    (and the run's time limit can act while it runs).
    """

    def __init__(self, fn: CriticFunction, *, name: str | None = None, gate: bool = False,
                 weight: float = 1.0, deterministic: bool = True,
                 pass_mark: float | None = None) -> None:
        if pass_mark is not None and not 0.0 <= pass_mark <= 1.0:
            raise ConfigError(f"critic {name or fn.__name__!r}: pass_mark {pass_mark} is "
                              "outside [0, 1]")
        self.fn = fn
        self.name = name or fn.__name__
        self.gate = gate
        self.weight = weight
        self.deterministic = deterministic
        self.pass_mark = pass_mark
        self._wants_task = _positional_count(fn) >= 2
        self._is_async = inspect.iscoroutinefunction(fn)
        self.description = (inspect.getdoc(fn) or "").strip()

    async def critique(self, task: Task, candidate: Candidate) -> Critique:
        args = (task, candidate) if self._wants_task else (candidate.text,)
        if self._is_async:
            value = await self.fn(*args)
        else:
            value = await asyncio.to_thread(self.fn, *args)
            if inspect.isawaitable(value):
                value = await value
        return self._to_critique(value)

    def _to_critique(self, value: Any) -> Critique:
        if isinstance(value, Critique):
            return value
        if isinstance(value, bool):
            feedback = "" if value else (self.description or f"the check {self.name!r} failed")
            return Critique(critic=self.name, score=float(value), passed=value,
                            feedback=feedback)
        if isinstance(value, int | float):
            return Critique(critic=self.name, score=self._checked(value))
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str):
            return Critique(critic=self.name, score=self._checked(value[0]), feedback=value[1])
        raise CriticError(
            f"critic {self.name!r} returned {value!r}; return a float in [0, 1], a bool, "
            "a (score, feedback) pair or a Critique", critic=self.name)

    def _checked(self, score: Any) -> float:
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
            raise CriticError(f"critic {self.name!r} returned score {score!r} outside [0, 1]",
                              critic=self.name)
        return float(score)


def _positional_count(fn: Callable[..., Any]) -> int:
    params = inspect.signature(fn).parameters.values()
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


@overload
def critic(fn: CriticFunction, /) -> FunctionCritic: ...
@overload
def critic(*, name: str | None = None, gate: bool = False, weight: float = 1.0,
           deterministic: bool = True, pass_mark: float | None = None
           ) -> Callable[[CriticFunction], FunctionCritic]: ...


def critic(fn: CriticFunction | None = None, /, *, name: str | None = None, gate: bool = False,
           weight: float = 1.0, deterministic: bool = True, pass_mark: float | None = None
           ) -> FunctionCritic | Callable[[CriticFunction], FunctionCritic]:
    """Turn a function into a `Critic`.

    ```python
    @critic(gate=True)
    def mentions_paris(text: str) -> bool:
        "The answer must mention Paris."
        return "paris" in text.lower()
    ```

    Args:
        fn: the function (when used bare as ``@critic``).
        name: the critic's name; defaults to the function's.
        gate: make it a hard check (see `Critic.gate`).
        weight: its weight in a panel.
        deterministic: declare that the same input gives the same verdict.
        pass_mark: the score at which a score-returning critic counts as passed
            (see `Critic.pass_mark`; a gate's default is 1.0).
    """
    def wrap(f: CriticFunction) -> FunctionCritic:
        return FunctionCritic(f, name=name, gate=gate, weight=weight,
                              deterministic=deterministic, pass_mark=pass_mark)

    return wrap(fn) if fn is not None else wrap

