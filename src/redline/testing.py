"""Test helpers shipped with redline, for its own tests and for plugin authors.

- `ScriptedChat`: a chat model that answers from a script, for testing loop logic
  offline and deterministically.
- `OpenAICompatServer` / `Fail`: a real OpenAI-compatible HTTP server on loopback, for
  testing HTTP clients (retries, errors, usage) end to end.
- `check_critic` / `acheck_critic`: the conformance check a critic plugin runs in its
  own tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from redline._conformance import CriticReport, GateWarning, acheck_critic, check_critic
from redline._testing_server import Fail, OpenAICompatServer
from redline.errors import LLMError
from redline.llm import ChatModel, Completion, Message
from redline.types import Price, Usage

__all__ = [
    "CriticReport",
    "Fail",
    "GateWarning",
    "OpenAICompatServer",
    "ScriptedChat",
    "acheck_critic",
    "check_critic",
    "words",
]

Reply = str | BaseException | Callable[[list[Message]], str]


def words(text: str) -> int:
    """The fake token count used by `ScriptedChat` and the test server: whitespace words."""
    return len(text.split())


class ScriptedChat(ChatModel):
    """A chat model that answers from a script.

    Tokens are counted as whitespace-separated words, both in `Completion.usage` and in
    `estimate_input_tokens`, so budget arithmetic in tests is exact; a reply longer than
    the call's ``max_tokens`` is cut to that many words, as a server would. A call with
    ``json_schema=`` arrives as OpenAI's ``response_format`` (``{"type": "json_schema",
    ...}``, see `ChatModel.structured_format`) and is recorded in `calls` like any other.

    Args:
        replies: answers consumed in call order; each is a string, an exception to raise,
            or a function of the messages returning a string.
        handler: instead of `replies`, a function of the messages returning the reply
            (for concurrent callers whose order is not fixed).
        model: the model name.
        price: an optional price, to test cost budgets.
        delay: seconds each call takes (to test time budgets).

    Attributes:
        calls: every call's messages and parameters, in order.
    """

    def __init__(self, replies: Iterable[Reply] = (), *,
                 handler: Callable[[list[Message]], str] | None = None,
                 model: str = "scripted", price: Price | None = None, delay: float = 0.0) -> None:
        self.replies = list(replies)
        self.handler = handler
        self.model = model
        self.price = price
        self.delay = delay
        self.calls: list[dict[str, Any]] = []

    async def _complete(self, messages: Sequence[Message], *, max_tokens: int,
                        temperature: float, stop: Sequence[str] | None, seed: int | None,
                        response_format: dict[str, Any] | None) -> Completion:
        messages = list(messages)
        self.calls.append({"messages": messages, "max_tokens": max_tokens,
                           "temperature": temperature, "seed": seed,
                           "response_format": response_format})
        if self.delay:
            await asyncio.sleep(self.delay)
        reply: Reply
        if self.handler is not None:
            reply = self.handler(messages)
        elif self.replies:
            reply = self.replies.pop(0)
        else:
            raise LLMError(f"ScriptedChat {self.model!r} ran out of replies after "
                           f"{len(self.calls) - 1} calls")
        if isinstance(reply, BaseException):
            raise reply
        text = reply(messages) if callable(reply) else reply
        kept = text.split()
        if len(kept) > max_tokens:
            text, finish = " ".join(kept[:max_tokens]), "length"
        else:
            finish = "stop"
        return Completion(text=text, finish_reason=finish, model=self.model,
                          usage=Usage(input_tokens=self.estimate_input_tokens(messages),
                                      output_tokens=min(len(kept), max_tokens)))

    def estimate_input_tokens(self, messages: Sequence[Message]) -> int:
        """Exact, under this model's word count."""
        return sum(words(m["content"]) for m in messages)

