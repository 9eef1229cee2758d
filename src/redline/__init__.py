"""redline: post-inference self-correction for LLM outputs.

A LangGraph loop drafts an answer, has critics score it and say why, revises it, and
returns the best candidate it saw with the whole trace::

    import redline
    from redline.llm import OpenAIChat

    result = redline.refine("Explain TCP slow start in 3 sentences.",
                            model=OpenAIChat("gpt-4o-mini"),
                            budget=redline.Budget(max_rounds=2))
    print(result.text, result.stop_reason)

Heavy modules (LangGraph, openai, torch) load on first use, so ``import redline`` is fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from redline._version import __version__
from redline.errors import (
    BudgetExceeded,
    ConfigError,
    CriticError,
    FeedbackSourceError,
    LLMError,
    RedlineError,
)
from redline.types import (
    Budget,
    Candidate,
    Critique,
    Price,
    RefineResult,
    Round,
    ScoredCandidate,
    StopReason,
    Task,
    Usage,
)

if TYPE_CHECKING:
    from redline.critics import Critic, LLMJudge, Panel, critic
    from redline.llm import ChatModel
    from redline.workflows import Progress, arefine, build_refine_graph, refine
    from redline.workflows.compare import acompare, compare

__all__ = [
    "Budget",
    "BudgetExceeded",
    "Candidate",
    "ChatModel",
    "ConfigError",
    "Critic",
    "CriticError",
    "Critique",
    "FeedbackSourceError",
    "LLMError",
    "LLMJudge",
    "Panel",
    "Price",
    "Progress",
    "RedlineError",
    "RefineResult",
    "Round",
    "ScoredCandidate",
    "StopReason",
    "Task",
    "Usage",
    "__version__",
    "acompare",
    "arefine",
    "build_refine_graph",
    "compare",
    "critic",
    "refine",
]

_LAZY = {
    "acompare": "redline.workflows.compare",
    "compare": "redline.workflows.compare",
    "arefine": "redline.workflows",
    "refine": "redline.workflows",
    "build_refine_graph": "redline.workflows",
    "Progress": "redline.workflows",
    "Critic": "redline.critics",
    "critic": "redline.critics",
    "Panel": "redline.critics",
    "LLMJudge": "redline.critics",
    "ChatModel": "redline.llm",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'redline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
