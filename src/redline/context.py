"""The current run: its meter (the budget), its usage tallies and its model.

A run's nodes make them current with context variables, so every LLM call made inside
the run — by the generator, the reviser or a critic, built-in or plugin — is checked
and counted the same way with no argument to thread through, and tasks a node starts
inherit them.

- `Meter` accounts the run's spending against its `Budget` before every call
  (`Meter.reserve`) and owns its time limit (`Meter.deadline`).
- `Tally` counts the usage of the calls made inside a block (a critic's own cost).
- `run_model` is the chat model the run generates with, for critics without their own.

This module is at the bottom of redline's layers: it imports only `types` and `errors`.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from redline.errors import BudgetExceeded
from redline.types import Budget, Price, Usage

if TYPE_CHECKING:
    from redline.llm import ChatModel

__all__ = [
    "Deadline",
    "Meter",
    "Reservation",
    "RunScope",
    "Tally",
    "current_meter",
    "record_usage",
    "run_model",
    "using_run_model",
]


@dataclass(frozen=True)
class Reservation:
    """What `Meter.reserve` set aside for one call, until `Meter.settle` replaces it with
    what the call spent."""

    max_tokens: int
    """The call's completion limit, clamped to what the budget leaves."""
    tokens: int
    """Tokens reserved: the prompt's estimate plus ``max_tokens``."""
    cost: float
    """Dollars reserved for the worst case (0 without a price or a cost limit)."""


class Meter:
    """Accounts one run's spending against its budget, checking before every call.

    Concurrent calls reserve their worst case (prompt estimate + ``max_tokens``) so
    that no interleaving can pass a limit; each call's ``max_tokens`` is clamped to what
    is left. The meter also owns the run's time limit: `check_seconds` before work,
    `deadline` around it, one message either way.

    Args:
        budget: the run's limits.
        spent: what the run had spent before this meter (resumed runs, earlier nodes).
        elapsed: seconds the run had used before this meter.
        margin: seconds kept back from ``max_seconds`` so that the run can still stop
            and return its result inside the limit.
    """

    def __init__(self, budget: Budget, spent: Usage = Usage(), elapsed: float = 0.0,
                 margin: float = 0.0) -> None:
        self.budget = budget
        self.spent = spent
        self.margin = margin
        self._origin = time.monotonic() - elapsed
        self._reserved_tokens = 0
        self._reserved_calls = 0
        self._reserved_cost = 0.0

    def elapsed(self) -> float:
        """Seconds of the run so far."""
        return time.monotonic() - self._origin

    def remaining_seconds(self) -> float:
        """Seconds left before the deadline (infinite without a limit)."""
        if self.budget.max_seconds is None:
            return float("inf")
        return max(0.0, self.budget.max_seconds - self.margin - self.elapsed())

    def check_seconds(self) -> None:
        """Raise `BudgetExceeded` when the run's time is up."""
        if self.budget.max_seconds is not None and self.remaining_seconds() <= 0:
            raise self.out_of_time()

    def out_of_time(self) -> BudgetExceeded:
        """The error of a run whose ``max_seconds`` ran out (the one message for it)."""
        return BudgetExceeded(
            "max_seconds", f"max_seconds: the run's {self.budget.max_seconds:g} s ran out")

    def deadline(self) -> Deadline:
        """An async context manager that ends its block when the run's time is up.

        Example:
            >>> async with meter.deadline():      # doctest: +SKIP
            ...     await work()

        Raises:
            BudgetExceeded: (``limit="max_seconds"``) at entry when no time is left, or
                when the deadline passes inside the block (which is cancelled).
        """
        return Deadline(self)

    @contextmanager
    def active(self) -> Iterator[Meter]:
        """Make this the meter of every LLM call in the block (and tasks it starts)."""
        token = _meter.set(self)
        try:
            yield self
        finally:
            _meter.reset(token)

    def reserve(self, prompt_tokens: int, max_tokens: int,
                price: Price | None = None) -> Reservation:
        """Check a call against every limit and reserve its worst case.

        Args:
            prompt_tokens: the call's prompt tokens, estimated from above
                (`ChatModel.complete` learns each model's tokens per byte).
            max_tokens: the completion limit the caller asked for.
            price: the model's price (None: free or unknown, so no cost is reserved).

        Returns:
            The reservation; its ``max_tokens`` is the clamped limit to send.

        Raises:
            BudgetExceeded: the call would pass a limit (time, calls, tokens, cost).
        """
        b = self.budget
        self.check_seconds()
        if b.max_llm_calls is not None:
            used = self.spent.llm_calls + self._reserved_calls
            if used >= b.max_llm_calls:
                raise BudgetExceeded(
                    "max_llm_calls", f"max_llm_calls: {used} of {b.max_llm_calls} calls used")
        if b.max_tokens is not None:
            left = b.max_tokens - self.spent.total_tokens - self._reserved_tokens - prompt_tokens
            if left < 1:
                raise BudgetExceeded(
                    "max_tokens",
                    f"max_tokens: {self.spent.total_tokens} of {b.max_tokens} tokens used, "
                    f"the next prompt needs up to {prompt_tokens}")
            max_tokens = min(max_tokens, left)
        cost = 0.0
        if b.max_cost_usd is not None and price is not None:
            left_usd = (b.max_cost_usd - self.spent.cost_usd - self._reserved_cost
                        - price.cost(prompt_tokens, 0))
            if price.output_per_mtok > 0:
                max_tokens = min(max_tokens, int(left_usd * 1e6 / price.output_per_mtok))
            if left_usd <= 0 or max_tokens < 1:
                raise BudgetExceeded(
                    "max_cost_usd",
                    f"max_cost_usd: ${self.spent.cost_usd:.4f} of ${b.max_cost_usd:g} spent")
            cost = price.cost(prompt_tokens, max_tokens)
        tokens = prompt_tokens + max_tokens
        self._reserved_tokens += tokens
        self._reserved_calls += 1
        self._reserved_cost += cost
        return Reservation(max_tokens, tokens, cost)

    def settle(self, reservation: Reservation, usage: Usage) -> None:
        """Replace a call's reservation with what it spent (also when it failed)."""
        self._reserved_tokens -= reservation.tokens
        self._reserved_calls -= 1
        self._reserved_cost -= reservation.cost
        self.spent = self.spent + usage


class Deadline:
    """The run's time limit around a block (see `Meter.deadline`); no-op without one."""

    __slots__ = ("_meter", "_timeout")

    def __init__(self, meter: Meter) -> None:
        self._meter = meter
        self._timeout: asyncio.Timeout | None = None

    async def __aenter__(self) -> None:
        meter = self._meter
        if meter.budget.max_seconds is None:
            return
        meter.check_seconds()
        self._timeout = asyncio.timeout(meter.remaining_seconds())
        await self._timeout.__aenter__()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        timeout, self._timeout = self._timeout, None
        if timeout is None:
            return
        try:
            await timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError:
            # Only this deadline's own expiry: a TimeoutError from inside the block
            # (a tool's own timeout) is not the run's time running out.
            if timeout.expired():
                raise self._meter.out_of_time() from None
            raise


class Tally:
    """A running total of LLM usage inside a `with Tally.scope()` block (and its tasks)."""

    def __init__(self) -> None:
        self.usage = Usage()

    @classmethod
    @contextmanager
    def scope(cls) -> Iterator[Tally]:
        """Count every LLM call made inside the block, including in tasks it starts."""
        tally = cls()
        token = _tallies.set((*_tallies.get(), tally))
        try:
            yield tally
        finally:
            _tallies.reset(token)


def record_usage(usage: Usage) -> None:
    """Add one call's usage to every `Tally` open here (chat models call it)."""
    for tally in _tallies.get():
        tally.usage = tally.usage + usage


_meter: contextvars.ContextVar[Meter | None] = contextvars.ContextVar("redline_meter",
                                                                      default=None)
_tallies: contextvars.ContextVar[tuple[Tally, ...]] = contextvars.ContextVar(
    "redline_tallies", default=())
_run_model: contextvars.ContextVar[ChatModel | None] = contextvars.ContextVar(
    "redline_run_model", default=None)


def current_meter() -> Meter | None:
    """The meter of the run this code runs in, or None outside a run."""
    return _meter.get()


def run_model() -> ChatModel | None:
    """The chat model the current run generates with (None outside a run).

    Critics built without a model of their own (``LLMJudge()``, the ``judge`` CLI critic)
    use it, so one ``--model`` serves the whole run.
    """
    return _run_model.get()


class RunScope:
    """One step of a run: its meter, the run's model and a fresh `Tally`, made current
    together for the block (and tasks it starts); ``with RunScope(meter, model) as
    tally:``. The same as nesting ``meter.active()``, `using_run_model` and
    `Tally.scope`, in one context manager without generators (the loop enters one per
    node: three generator-based ones were ~8 % of a batch's CPU)."""

    __slots__ = ("meter", "model", "tally", "_tokens")

    def __init__(self, meter: Meter, model: ChatModel) -> None:
        self.meter = meter
        self.model = model
        self.tally = Tally()
        self._tokens: tuple[Any, Any, Any] | None = None

    def __enter__(self) -> Tally:
        self._tokens = (_meter.set(self.meter), _run_model.set(self.model),
                        _tallies.set((*_tallies.get(), self.tally)))
        return self.tally

    def __exit__(self, *exc_info: object) -> None:
        tokens, self._tokens = self._tokens, None
        assert tokens is not None, "RunScope exited without being entered"
        meter, model, tallies = tokens
        _tallies.reset(tallies)
        _run_model.reset(model)
        _meter.reset(meter)


@contextmanager
def using_run_model(model: ChatModel) -> Iterator[None]:
    """Make `model` the run's model inside the block (and tasks it starts)."""
    token = _run_model.set(model)
    try:
        yield
    finally:
        _run_model.reset(token)
