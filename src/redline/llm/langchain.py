"""`LangChainChat`: a LangChain chat model behind redline's `ChatModel` contract.

People who embed redline in a LangGraph app already hold a configured LangChain chat
model (``ChatOpenAI``, ``ChatAnthropic``, ``ChatOllama``, ...); this adapter lets the
whole loop — generator, reviser and LLM critics — run on it, with redline's budgets.
``langchain_core`` is imported when an adapter is built, never when this module is
imported (``pip install "redline[langchain]"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redline.errors import ConfigError, LLMError, MissingDependencyError
from redline.llm._base import ChatModel, Completion, Message
from redline.types import Price, Usage

__all__ = ["LangChainChat"]

# LangChain's standard parameters are constructor fields; only `stop` is standard at
# invocation time (other keyword arguments reach some providers' requests and break
# others', e.g. ChatOllama's). So each call runs on a copy with these fields set, where
# the model declares them.
_MAX_TOKENS_FIELDS = ("max_tokens", "max_output_tokens", "num_predict", "max_new_tokens")
"""Names of the completion-length field: OpenAI, Anthropic, Mistral, ...; Google;
Ollama; Hugging Face."""

_FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                   "STOP": "stop", "MAX_TOKENS": "length"}
"""Providers' own stop reasons (Anthropic, Google) in OpenAI's words."""


class LangChainChat(ChatModel):
    """A LangChain chat model (a ``langchain_core`` ``BaseChatModel``) as a redline model.

    Each call converts redline's messages to LangChain messages and awaits the model's
    ``ainvoke`` with ``stop``. ``temperature``, the call's ``max_tokens`` (as the model
    names it: ``max_tokens``, ``max_output_tokens``, ``num_predict`` or
    ``max_new_tokens``) and ``seed`` are set on a shallow copy of the model for that
    call, where the model has such a field; redline's values replace the model's own, so
    a run means the same on every backend and token budgets hold. ``response_format``
    is not sent (callers fall back to parsing the text).

    Token counts come from the reply's ``usage_metadata``. A model that reports none is
    counted at an upper bound — the prompt as `ChatModel.estimate_input_tokens` counts
    it, the reply as its UTF-8 bytes (at most ``max_tokens`` when the model took it) —
    so budgets still hold.

    Example:
        >>> from langchain_openai import ChatOpenAI  # doctest: +SKIP
        >>> model = LangChainChat(ChatOpenAI(model="gpt-4o-mini"))  # doctest: +SKIP
        >>> redline.refine("Name three primes.", model=model)  # doctest: +SKIP

    Args:
        chat_model: the LangChain chat model; it is not modified.
        price: its price, to account ``cost_usd`` when the model's usage has none.

    Attributes:
        chat_model: the wrapped model.
        model: its name (``model_name`` or ``model``, else its LangChain type).

    Raises:
        MissingDependencyError: ``langchain-core`` is not installed.
        ConfigError: ``chat_model`` is not a ``BaseChatModel``.
    """

    def __init__(self, chat_model: Any, *, price: Price | None = None) -> None:
        try:
            from langchain_core.language_models import BaseChatModel
        except ImportError as exc:
            raise MissingDependencyError("LangChainChat", "langchain") from exc
        if not isinstance(chat_model, BaseChatModel):
            raise ConfigError(
                f"LangChainChat needs a LangChain chat model (a langchain_core "
                f"BaseChatModel); got {type(chat_model).__name__}. Pass the chat model "
                "itself, not a chain or a model with bound tools")
        self.chat_model = chat_model
        self.price = price
        self.model = _name_of(chat_model)
        fields = type(chat_model).model_fields
        self._max_tokens_field = next((f for f in _MAX_TOKENS_FIELDS if f in fields), None)
        self._has_temperature = "temperature" in fields
        self._has_seed = "seed" in fields

    def __repr__(self) -> str:
        return f"LangChainChat({type(self.chat_model).__name__}, model={self.model!r})"

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
        settings: dict[str, Any] = {}
        if self._max_tokens_field:
            settings[self._max_tokens_field] = max_tokens
        if self._has_temperature:
            settings["temperature"] = temperature
        if self._has_seed and seed is not None:
            settings["seed"] = seed
        chat = self.chat_model.model_copy(update=settings) if settings else self.chat_model
        try:
            reply = await chat.ainvoke(_to_langchain(messages),
                                       stop=list(stop) if stop is not None else None)
        except Exception as exc:  # a provider's client may raise anything
            status = getattr(exc, "status_code", None)
            raise LLMError(f"LangChain model {self.model!r} failed: "
                           f"{type(exc).__name__}: {exc}",
                           status=status if isinstance(status, int) else None) from exc
        text = _text_of(reply.content)
        return Completion(text=text, usage=self._usage(reply, messages, text, max_tokens),
                          finish_reason=_finish_reason(reply), model=self.model)

    def _usage(self, reply: Any, messages: Sequence[Message], text: str,
               max_tokens: int) -> Usage:
        counted = getattr(reply, "usage_metadata", None)
        if counted:
            return Usage(input_tokens=counted.get("input_tokens", 0),
                         output_tokens=counted.get("output_tokens", 0))
        output = len(text.encode("utf-8"))
        if self._max_tokens_field:  # the model stopped at max_tokens tokens at most
            output = min(output, max_tokens)
        return Usage(input_tokens=self.estimate_input_tokens(messages), output_tokens=output)


def _to_langchain(messages: Sequence[Message]) -> list[Any]:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    try:
        return [kinds[m["role"]](content=m["content"]) for m in messages]
    except KeyError as exc:
        raise ConfigError(f"message role {exc.args[0]!r} is not system, user or "
                          "assistant") from None


def _text_of(content: Any) -> str:
    """A reply's text: its string content, or its text blocks joined (Anthropic, Google)."""
    if isinstance(content, str):
        return content
    parts = []
    for block in content or ():
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "".join(parts)


def _finish_reason(reply: Any) -> str | None:
    meta = getattr(reply, "response_metadata", None) or {}
    for key in ("finish_reason", "stop_reason", "done_reason"):
        reason = meta.get(key)
        if isinstance(reason, str):
            return _FINISH_REASONS.get(reason, reason)
    return None


def _name_of(chat_model: Any) -> str:
    for attribute in ("model_name", "model", "model_id"):
        name = getattr(chat_model, attribute, None)
        if isinstance(name, str) and name:
            return name
    return str(getattr(chat_model, "_llm_type", type(chat_model).__name__))
