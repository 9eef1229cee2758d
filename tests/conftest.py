"""Shared fixtures: scripted answers and simple deterministic critics."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from redline.llm import Message
from redline.testing import ScriptedChat


def answers(*texts: str, judge: Iterable[str] = ()) -> ScriptedChat:
    """A scripted model: draft/revision calls get `texts` in order; judge calls `judge`."""
    drafts = list(texts)
    verdicts = list(judge)

    def handler(messages: list[Message]) -> str:
        if "grade one answer" in messages[0]["content"] or messages[-1]["role"] == "user" \
                and "could not be used" in messages[-1]["content"]:
            return verdicts.pop(0)
        return drafts.pop(0)

    return ScriptedChat(handler=handler)


def score_table(**scores: float):
    """A critic function giving fixed scores by candidate text."""
    def table(text: str) -> float:
        return scores[text]
    return table


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
