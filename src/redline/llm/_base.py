"""The chat model contract.

Every chat model subclasses `ChatModel` and implements `_complete`; the public
`complete` wraps it with the current run's budget (`redline.context`), so any model call
made inside a run — by the generator, the reviser or a critic, built-in or plugin — is
counted and limited the same way, with no argument to thread through.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Literal, Self, TypedDict

from pydantic import BaseModel, ConfigDict

from redline.context import Meter, Reservation, current_meter, record_usage
from redline.errors import ConfigError
from redline.types import Price, Usage

__all__ = [
    "ChatModel",
    "Completion",
    "Message",
    "json_schema_format",
]

_NO_DEADLINE = contextlib.nullcontext()
_ESTIMATE_MARGIN = 1.25  # over the densest prompt seen (see ChatModel._prompt_estimate)


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


class ChatModel(ABC):
    """A chat model. Subclasses implement `_complete`; callers use `complete`.

    Attributes:
        model: the model's name as the server knows it.
        price: its price, or None when calls cost nothing (local models) or it is unknown.
    """

    model: str = ""
    price: Price | None = None
    _density: float | None = None  # highest reported prompt tokens / estimate so far

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
        reservation = None
        bound = 0
        if meter is not None:
            bound = self.estimate_input_tokens(messages)
            reservation = meter.reserve(self._prompt_estimate(bound), max_tokens, self.price)
            max_tokens = reservation.max_tokens
        started = time.monotonic()
        try:
            async with meter.deadline() if meter is not None else _NO_DEADLINE:
                completion = await self._complete(
                    messages, max_tokens=max_tokens, temperature=temperature, stop=stop,
                    seed=seed, response_format=response_format)
        except BaseException:
            # A failed call still counts as a call: the server may have done the work.
            _account(meter, reservation, Usage(llm_calls=1, seconds=time.monotonic() - started))
            raise
        usage = completion.usage
        if bound > 0 and usage.input_tokens > 0:
            density = usage.input_tokens / bound
            if density > (self._density or 0.0):
                self._density = density
        if self.price is not None and usage.cost_usd == 0.0:
            usage = usage.model_copy(
                update={"cost_usd": self.price.cost(usage.input_tokens, usage.output_tokens)})
        usage = usage.model_copy(update={"llm_calls": 1, "seconds": time.monotonic() - started})
        _account(meter, reservation, usage)
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

    def _prompt_estimate(self, bound: int) -> int:
        """What a budget reserves for a prompt whose upper bound is `bound`.

        The bound itself until the server has answered once; then the densest prompt seen
        (reported tokens over the bound) times 1.25 (plus 16 tokens), never above the bound. A
        byte-level bound is ~3x a code prompt's real count, which stopped revising runs
        with a third of their token budget unspent.
        """
        density = self._density
        if density is None:
            return bound
        return min(bound, math.ceil(bound * density * _ESTIMATE_MARGIN) + 16)

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


def _account(meter: Meter | None, reservation: Reservation | None, usage: Usage) -> None:
    """Settle a call's reservation with what it spent, and add it to the open tallies."""
    if meter is not None and reservation is not None:
        meter.settle(reservation, usage)
    record_usage(usage)
