"""Shared fixtures: scripted answers and simple deterministic critics."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from redline.llm import Message
from redline.prompts import render
from redline.testing import ScriptedChat


def is_judge_call(messages: list[Message]) -> bool:
    """Whether a conversation is the default LLM judge's (its first try or its re-ask).

    Told by the judge's system prompt as rendered, not by its wording, so that editing
    the prompt does not reroute the calls.
    """
    return messages[0]["content"] == render("judge_system")


def answers(*texts: str, judge: Iterable[str] = ()) -> ScriptedChat:
    """A scripted model: draft/revision calls get `texts` in order; judge calls `judge`."""
    drafts = list(texts)
    verdicts = list(judge)

    def handler(messages: list[Message]) -> str:
        return verdicts.pop(0) if is_judge_call(messages) else drafts.pop(0)

    return ScriptedChat(handler=handler)


def score_table(**scores: float):
    """A critic function giving fixed scores by candidate text."""
    def table(text: str) -> float:
        return scores[text]
    return table


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With REDLINE_NO_SKIPS=1 (set by CI), a skipped test fails the run: CI installs
    every extra, so a skip there means something the tests need is missing."""
    import os

    if not os.environ.get("REDLINE_NO_SKIPS"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped and exitstatus == 0:
        reporter.write_line(f"REDLINE_NO_SKIPS: {skipped} test(s) skipped; failing the run",
                            red=True)
        session.exitstatus = 1
