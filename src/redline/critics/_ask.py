"""How the LLM critics ask a chat model for a verdict: one model, one fence, one ask loop.

- `critic_model`: the critic's own model, else the model the run generates with.
- `Fence`: random markers around untrusted text (a candidate, search results) in a
  prompt; the text cannot close the fence because it cannot guess the marker, and any
  copy of the markers is cut from it anyway.
- `ask_json`: send the conversation with the verdict's JSON schema (the server
  constrains its output where it can: see `ChatModel.structured_format`), parse the
  reply, and when it is unusable ask once more, saying what was wrong; a second
  unusable reply raises `CriticError`. Servers that cannot constrain output are served
  by the same parse-and-re-ask path.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from redline.context import run_model
from redline.errors import ConfigError, CriticError
from redline.llm import ChatModel, Message

__all__ = ["Fence", "ask_json", "critic_model"]

log = logging.getLogger("redline.critics")

T = TypeVar("T")


class _LLMCritic(Protocol):
    name: str
    model: ChatModel | None


def critic_model(critic: _LLMCritic) -> ChatModel:
    """The model `critic` asks: its own (``critic.model``), else the run's model.

    Raises:
        ConfigError: neither (the critic is used outside a run without a model).
    """
    model = critic.model or run_model()
    if model is None:
        raise ConfigError(f"critic {critic.name!r} has no model: pass "
                          f"{type(critic).__name__}(model=...) or run it inside refine()")
    return model


@dataclass(frozen=True)
class Fence:
    """A pair of random markers that fence untrusted text inside a prompt.

    Attributes:
        opening: the marker before the text, e.g. ``<<<ANSWER-3f9a0c12``.
        closing: the marker after it, e.g. ``ANSWER-3f9a0c12>>>``.
    """

    opening: str
    closing: str

    @classmethod
    def new(cls, kind: str) -> Fence:
        """Fresh markers naming what they hold (``ANSWER``, ``DATA``)."""
        marker = secrets.token_hex(4)
        return cls(f"<<<{kind}-{marker}", f"{kind}-{marker}>>>")

    def quote(self, text: str) -> str:
        """`text` with every copy of either marker removed, ready to sit inside."""
        return text.replace(self.closing, "").replace(self.opening, "")


async def ask_json(
    model: ChatModel,
    messages: Sequence[Message],
    *,
    parse: Callable[[str], tuple[T | None, str]],
    reask: Callable[[str], str],
    schema: dict[str, Any] | None,
    max_tokens: int,
    critic: str,
    what: str = "verdict",
) -> T:
    """The parsed reply of `model`, asking once more with the problem when it is unusable.

    Args:
        model: the chat model.
        messages: the conversation asking for the verdict.
        parse: the reply → ``(value, "")`` or ``(None, problem)``; the problem is shown
            to the model in the re-ask and reads like "no JSON object found".
        reask: the problem → the follow-up message asking again.
        schema: the verdict's JSON schema, sent in the server's dialect; None asks in
            the prompt only.
        max_tokens: the reply's token limit.
        critic: the critic's name, for errors and logs.
        what: what is asked for ("verdict", "claims"), for errors and logs.

    Raises:
        CriticError: two unusable replies.
        LLMError, BudgetExceeded: the calls themselves failed.
    """
    conversation = list(messages)
    for attempt in (1, 2):
        completion = await model.complete(conversation, max_tokens=max_tokens,
                                          temperature=0.0, json_schema=schema)
        parsed, problem = parse(completion.text)
        if parsed is not None:
            return parsed
        if completion.finish_reason == "length":
            problem += f" (the reply was cut at the {max_tokens}-token limit: be brief)"
        log.info("critic %r: unusable %s (attempt %d): %s", critic, what, attempt, problem)
        conversation = [*conversation, {"role": "assistant", "content": completion.text},
                        {"role": "user", "content": reask(problem)}]
    raise CriticError(
        f"critic {critic!r}: model {model.model!r} gave no usable {what} after 2 tries "
        f"({problem}); last reply: {completion.text[:200]!r}", critic=critic)
