"""The chat model contract and the per-run meter that enforces budgets.

Every chat model subclasses `ChatModel` and implements `_complete`; the public
`complete` wraps it with budget checks, so any model call made inside a run — by the
generator, the reviser or a critic, built-in or plugin — is counted and limited the same
way, with no argument to thread through.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Self, TypedDict

from pydantic import BaseModel, ConfigDict

from redline.errors import BudgetExceeded, ConfigError
from redline.types import Budget, Usage

__all__ = [
    "ChatModel",
    "Completion",
    "Message",
    "Meter",
    "Price",
    "Tally",
    "current_meter",
    "json_schema_format",
    "run_model",
    "using_run_model",
]


class Message(TypedDict):
    """One chat message in the OpenAI format."""

    role: Literal["system", "user", "assistant"]
    content: str


class Completion(BaseModel):
    """What a chat model returned for one call."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    text: str
    """The completion text."""
    usage: Usage
    """Tokens, cost and seconds of this call (``llm_calls`` is 1)."""
    finish_reason: str | None = None
    """``"stop"``, ``"length"``, ... as the server reported it."""
    model: str = ""
    """The model that answered."""


class Price(BaseModel):
    """A model's price in US dollars per million tokens."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    input_per_mtok: float = 0.0
    """Dollars per million prompt tokens."""
    output_per_mtok: float = 0.0
    """Dollars per million completion tokens."""

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """The cost of a call with these token counts."""
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


class ChatModel(ABC):
    """A chat model. Subclasses implement `_complete`; callers use `complete`.

    Attributes:
        model: the model's name as the server knows it.
        price: its price, or None when calls cost nothing (local models) or it is unknown.
    """

    model: str = ""
    price: Price | None = None

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
        response_format: dict[str, Any] | None = None,
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        """Complete a conversation, within the budget of the current run if there is one.

        Args:
            messages: the conversation.
            max_tokens: the reply's token limit (clamped to what the run's budget leaves).
            temperature: the sampling temperature.
            stop: strings that end the reply.
            seed: a sampling seed, for servers that honour one.
            response_format: sent to the server as it is (OpenAI's ``response_format``).
            json_schema: ask for a reply that is JSON matching this schema, in the
                server's own dialect (see `structured_format`). The reply may still not
                match (a server without constrained decoding): callers parse it.

        Raises:
            BudgetExceeded: the call would pass a limit of the current run.
            ConfigError: both ``response_format`` and ``json_schema`` were given.
            LLMError: the call failed.
        """
        if json_schema is not None:
            if response_format is not None:
                raise ConfigError("complete(): give response_format or json_schema, not both")
            response_format = self.structured_format(json_schema)
        meter = current_meter()
        reservation = meter.reserve(self, messages, max_tokens) if meter else None
        if reservation:
            max_tokens = reservation.max_tokens
        started = time.monotonic()
        try:
            if meter and meter.budget.max_seconds is not None:
                try:
                    async with asyncio.timeout(meter.remaining_seconds()):
                        completion = await self._complete(
                            messages, max_tokens=max_tokens, temperature=temperature,
                            stop=stop, seed=seed, response_format=response_format)
                except TimeoutError:
                    raise BudgetExceeded(
                        "max_seconds",
                        f"max_seconds: the run's {meter.budget.max_seconds:g} s ran out "
                        "during an LLM call") from None
            else:
                completion = await self._complete(
                    messages, max_tokens=max_tokens, temperature=temperature,
                    stop=stop, seed=seed, response_format=response_format)
        except BaseException:
            # A failed call still counts as a call: the server may have done the work.
            _record(reservation, meter, Usage(llm_calls=1, seconds=time.monotonic() - started))
            raise
        usage = completion.usage
        if self.price is not None and usage.cost_usd == 0.0:
            usage = usage.model_copy(
                update={"cost_usd": self.price.cost(usage.input_tokens, usage.output_tokens)})
        usage = usage.model_copy(update={"llm_calls": 1, "seconds": time.monotonic() - started})
        _record(reservation, meter, usage)
        return completion.model_copy(update={"usage": usage})

    def structured_format(self, schema: dict[str, Any]) -> dict[str, Any] | None:
        """The ``response_format`` that asks this model's server for JSON matching `schema`.

        The default is OpenAI's structured outputs, which OpenAI, vLLM, llama.cpp's
        ``llama-server`` and Ollama's OpenAI-compatible endpoint (which turns it into its
        own ``format``) understand. Models whose server speaks another dialect override
        it; None means the server cannot be asked, and callers parse and re-ask.
        """
        return json_schema_format(schema)

    @abstractmethod
    async def _complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float,
        stop: Sequence[str] | None,
        seed: int | None,
        response_format: dict[str, Any] | None,
    ) -> Completion:
        """Make the call. Report the server's token counts in ``Completion.usage``."""

    def estimate_input_tokens(self, messages: Sequence[Message]) -> int:
        """An upper bound of the prompt's tokens, used to check budgets before a call.

        The default counts one token per UTF-8 byte plus a chat-template allowance per
        message, which no byte-level BPE tokenizer exceeds. Models that can count exactly
        override it.
        """
        return 8 + sum(len(m["content"].encode("utf-8")) + 8 for m in messages)

    async def preflight(self) -> None:
        """Check, before a run spends any token, that the model can answer at all.

        `arefine` calls it first. Implementations start what must be started (the
        embedded server) or ask the server a cheap question, and raise
        `redline.errors.ConfigError` with one line when it cannot work. The default
        does nothing.
        """

    async def aclose(self) -> None:
        """Release the model's resources (connections, child processes)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def json_schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's ``response_format`` for `schema`: ``{"type": "json_schema", ...}``.

    The schema's ``title`` names it (OpenAI requires a name of letters, digits, ``_``
    and ``-``); strict mode is asked only when every property is required and no other
    is allowed, as OpenAI's strict mode demands.
    """
    name = re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title") or "reply"))[:64]
    strict = (schema.get("additionalProperties") is False
              and set(schema.get("required", ())) == set(schema.get("properties", {})))
    return {"type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "strict": strict}}


@dataclass
class _Reservation:
    meter: Meter
    max_tokens: int
    tokens: int
    cost: float


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


class Meter:
    """Accounts one run's spending against its budget, checking before every call.

    Concurrent calls reserve their worst case (prompt upper bound + ``max_tokens``) so
    that no interleaving can pass a limit; each call's ``max_tokens`` is clamped to what
    is left.

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
        """Seconds left (infinite without a limit)."""
        if self.budget.max_seconds is None:
            return float("inf")
        return max(0.0, self.budget.max_seconds - self.margin - self.elapsed())

    def check_seconds(self) -> None:
        """Raise `BudgetExceeded` when the run's time is up."""
        if self.budget.max_seconds is not None and self.remaining_seconds() <= 0:
            raise BudgetExceeded(
                "max_seconds", f"max_seconds: {self.elapsed():.1f} s of "
                f"{self.budget.max_seconds:g} s used")

    @contextmanager
    def active(self) -> Iterator[Meter]:
        """Make this the meter of every LLM call in the block (and tasks it starts)."""
        token = _meter.set(self)
        try:
            yield self
        finally:
            _meter.reset(token)

    def reserve(self, model: ChatModel, messages: Sequence[Message],
                max_tokens: int) -> _Reservation:
        """Check a call against every limit and reserve its worst case."""
        b = self.budget
        self.check_seconds()
        if b.max_llm_calls is not None:
            used = self.spent.llm_calls + self._reserved_calls
            if used >= b.max_llm_calls:
                raise BudgetExceeded(
                    "max_llm_calls", f"max_llm_calls: {used} of {b.max_llm_calls} calls used")
        prompt = model.estimate_input_tokens(messages)
        if b.max_tokens is not None:
            left = b.max_tokens - self.spent.total_tokens - self._reserved_tokens - prompt
            if left < 1:
                raise BudgetExceeded(
                    "max_tokens",
                    f"max_tokens: {self.spent.total_tokens} of {b.max_tokens} tokens used, "
                    f"the next prompt needs up to {prompt}")
            max_tokens = min(max_tokens, left)
        cost = 0.0
        if b.max_cost_usd is not None and model.price is not None:
            price = model.price
            left_usd = (b.max_cost_usd - self.spent.cost_usd - self._reserved_cost
                        - price.cost(prompt, 0))
            if price.output_per_mtok > 0:
                max_tokens = min(max_tokens, int(left_usd * 1e6 / price.output_per_mtok))
            if left_usd <= 0 or max_tokens < 1:
                raise BudgetExceeded(
                    "max_cost_usd",
                    f"max_cost_usd: ${self.spent.cost_usd:.4f} of ${b.max_cost_usd:g} spent")
            cost = price.cost(prompt, max_tokens)
        tokens = prompt + max_tokens
        self._reserved_tokens += tokens
        self._reserved_calls += 1
        self._reserved_cost += cost
        return _Reservation(self, max_tokens, tokens, cost)

    def _settle(self, reservation: _Reservation, usage: Usage) -> None:
        self._reserved_tokens -= reservation.tokens
        self._reserved_calls -= 1
        self._reserved_cost -= reservation.cost
        self.spent = self.spent + usage


def _record(reservation: _Reservation | None, meter: Meter | None, usage: Usage) -> None:
    if reservation is not None and meter is not None:
        meter._settle(reservation, usage)
    for tally in _tallies.get():
        tally.usage = tally.usage + usage


_meter: contextvars.ContextVar[Meter | None] = contextvars.ContextVar("redline_meter",
                                                                      default=None)
_tallies: contextvars.ContextVar[tuple[Tally, ...]] = contextvars.ContextVar(
    "redline_tallies", default=())


def current_meter() -> Meter | None:
    """The meter of the run this code runs in, or None outside a run."""
    return _meter.get()


_run_model: contextvars.ContextVar[ChatModel | None] = contextvars.ContextVar(
    "redline_run_model", default=None)


def run_model() -> ChatModel | None:
    """The chat model the current run generates with (None outside a run).

    Critics built without a model of their own (``LLMJudge()``, the ``judge`` CLI critic)
    use it, so one ``--model`` serves the whole run.
    """
    return _run_model.get()


@contextmanager
def using_run_model(model: ChatModel) -> Iterator[None]:
    """Make `model` the run's model inside the block (and tasks it starts)."""
    token = _run_model.set(model)
    try:
        yield
    finally:
        _run_model.reset(token)
