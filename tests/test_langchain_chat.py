"""`LangChainChat`: LangChain chat models (langchain_core's own fakes and a small
`BaseChatModel` subclass) behind redline's contract, through the real refine loop."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.callbacks import CallbackManagerForLLMRun  # noqa: E402
from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.language_models.fake_chat_models import (  # noqa: E402
    FakeMessagesListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage, BaseMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402

import redline  # noqa: E402
from redline import Budget, StopReason, critic  # noqa: E402
from redline.errors import ConfigError, LLMError, MissingDependencyError  # noqa: E402
from redline.llm import LangChainChat, Meter, Price, resolve_model  # noqa: E402

CHAT = [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "Four."},
        {"role": "user", "content": "Four is not prime. Again."}]


class RecordingChat(BaseChatModel):
    """A chat model with LangChain's standard fields that records what each call saw.

    It replies with ``reply`` cut to ``max_tokens`` words, as a server would.
    """

    temperature: float = 0.7
    max_tokens: int | None = None
    seed: int | None = None
    reply: str = "Seven is prime."
    report_usage: bool = True
    stop_reason: str = "end_turn"
    seen: list[dict[str, Any]] = []

    @property
    def _llm_type(self) -> str:
        return "recording"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        self.seen.append({"messages": [(type(m).__name__, m.content) for m in messages],
                          "stop": stop, "temperature": self.temperature,
                          "max_tokens": self.max_tokens, "seed": self.seed,
                          "kwargs": kwargs})
        words = self.reply.split()
        if self.max_tokens is not None:
            words = words[:self.max_tokens]
        usage = ({"input_tokens": 40, "output_tokens": len(words),
                  "total_tokens": 40 + len(words)} if self.report_usage else None)
        message = AIMessage(content=" ".join(words), usage_metadata=usage,
                            response_metadata={"stop_reason": self.stop_reason})
        return ChatResult(generations=[ChatGeneration(message=message)])


class OllamaLike(BaseChatModel):
    """Names its completion length as ChatOllama does (``num_predict``)."""

    num_predict: int | None = None
    seen: list[int | None] = []

    @property
    def _llm_type(self) -> str:
        return "ollama-like"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        self.seen.append(self.num_predict)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="ok"))])


class Refusing(BaseChatModel):
    """Fails as a provider's client does for a bad key."""

    @property
    def _llm_type(self) -> str:
        return "refusing"

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        error = RuntimeError("Incorrect API key provided")
        error.status_code = 401  # type: ignore[attr-defined]
        raise error


async def test_a_refine_run_on_a_langchain_fake_model() -> None:
    counted = AIMessage(content="Rain taps the roof.",
                        usage_metadata={"input_tokens": 31, "output_tokens": 5,
                                        "total_tokens": 36})
    fake = GenericFakeChatModel(messages=iter([counted, "Soft rain on the roof, a song."]))

    @critic
    def mentions_song(text: str) -> tuple[float, str]:
        return (1.0, "") if "song" in text else (0.3, "Make the rain a song.")

    result = await redline.arefine("Write a haiku about rain.", model=LangChainChat(fake),
                                   critics=[mentions_song], threshold=0.9,
                                   budget=Budget(max_rounds=2))
    assert result.stop_reason is StopReason.threshold
    assert [(r.index, s.candidate.text, s.score) for r in result.rounds for s in r.scored] == [
        (0, "Rain taps the roof.", 0.3), (1, "Soft rain on the roof, a song.", 1.0)]
    assert result.text == "Soft rain on the roof, a song."
    # The draft's counts are the model's; the revision had none, so it is counted at an
    # upper bound: its prompt as estimate_input_tokens counts it, its reply in bytes.
    draft, revision = result.rounds[0].usage, result.rounds[1].usage
    assert (draft.input_tokens, draft.output_tokens, draft.llm_calls) == (31, 5, 1)
    assert revision.output_tokens == len("Soft rain on the roof, a song.")
    assert revision.input_tokens > len("Rain taps the roof.") + len("Make the rain a song.")
    assert result.usage.llm_calls == 2


async def test_messages_and_parameters_reach_the_model_on_a_copy() -> None:
    model = RecordingChat(seen=[])
    chat = LangChainChat(model)
    completion = await chat.complete(CHAT, max_tokens=2, temperature=0.2, stop=["\n\n"],
                                     seed=11)
    [call] = model.seen
    assert call["messages"] == [("SystemMessage", "Be brief."),
                                ("HumanMessage", "Name a prime."),
                                ("AIMessage", "Four."),
                                ("HumanMessage", "Four is not prime. Again.")]
    assert (call["stop"], call["temperature"], call["max_tokens"], call["seed"]) == (
        ["\n\n"], 0.2, 2, 11)
    assert call["kwargs"] == {}  # nothing a provider's request could choke on
    assert completion.text == "Seven is"
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (40, 2)
    assert completion.finish_reason == "stop"  # Anthropic's end_turn, in OpenAI's words
    assert chat.model == "recording"
    # The user's model is left as it was.
    assert (model.temperature, model.max_tokens, model.seed) == (0.7, None, None)


async def test_a_runs_token_budget_clamps_the_models_own_length_field() -> None:
    model = OllamaLike(seen=[])
    chat = LangChainChat(model)
    budget = Budget(max_tokens=200)
    with Meter(budget).active():
        await chat.complete([{"role": "user", "content": "hi"}], max_tokens=1024)
    prompt = chat.estimate_input_tokens([{"role": "user", "content": "hi"}])
    assert model.seen == [200 - prompt]


async def test_without_usage_the_reply_is_counted_at_most_max_tokens() -> None:
    model = RecordingChat(seen=[], report_usage=False, reply="x" * 50)
    completion = await LangChainChat(model).complete(CHAT, max_tokens=8)
    assert completion.usage.output_tokens == 8
    assert completion.usage.input_tokens == LangChainChat(model).estimate_input_tokens(CHAT)


async def test_a_price_turns_counts_into_cost() -> None:
    chat = LangChainChat(RecordingChat(seen=[]), price=Price(input_per_mtok=1e6 / 40))
    assert (await chat.complete(CHAT)).usage.cost_usd == pytest.approx(1.0)


async def test_content_blocks_are_joined_into_text() -> None:
    reply = AIMessage(content=[{"type": "text", "text": "Seven"},
                               {"type": "thinking", "thinking": "hmm"},
                               {"type": "text", "text": " is prime."}],
                      response_metadata={"stop_reason": "max_tokens"})
    completion = await LangChainChat(FakeMessagesListChatModel(responses=[reply])).complete(
        CHAT)
    assert completion.text == "Seven is prime."
    assert completion.finish_reason == "length"


async def test_a_failing_model_raises_llm_error_with_its_status() -> None:
    with pytest.raises(LLMError, match=r"'refusing' failed: RuntimeError: Incorrect API key"
                       ) as info:
        await LangChainChat(Refusing()).complete(CHAT)
    assert info.value.status == 401


def test_resolve_model_wraps_a_langchain_chat_model() -> None:
    fake = GenericFakeChatModel(messages=iter(["a"]))
    model = resolve_model(fake)
    assert isinstance(model, LangChainChat) and model.chat_model is fake


def test_a_chain_or_bound_model_is_refused_with_what_to_pass() -> None:
    bound = GenericFakeChatModel(messages=iter(["a"])).bind(stop=["x"])
    with pytest.raises(ConfigError, match=r"got \w*Binding\. Pass the chat model itself"):
        resolve_model(bound)


def test_without_langchain_core_the_error_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "langchain_core.language_models", None)
    with pytest.raises(MissingDependencyError, match=r'pip install "redline\[langchain\]"'):
        LangChainChat(object())


def test_importing_the_adapter_does_not_load_langchain() -> None:
    code = ("import sys, redline.llm, redline.llm.langchain; "
            "from redline.llm import LangChainChat; print('langchain_core' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"
