"""`arefine` and `refine`: run the refine graph on one task and return its result."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from redline.agents.reviser import ReviseMode
from redline.critics.base import Critic
from redline.critics.panel import Panel
from redline.errors import ConfigError
from redline.llm._base import ChatModel
from redline.types import Budget, RefineResult, ScoredCandidate, StopReason, Task, Usage
from redline.workflows._state import best_of, scored_history
from redline.workflows.refine import RefineConfig, ReviseWhen, build_refine_graph

__all__ = ["Progress", "arefine", "refine"]


class Progress(BaseModel):
    """A step of a run, as reported to ``on_progress`` while it runs."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    node: Literal["generate", "critique", "decide", "revise", "finalize"]
    """The graph node that just finished."""
    round: int
    """The current round (0: drafts)."""
    scored: list[ScoredCandidate]
    """Candidates scored by this step (``critique`` steps only)."""
    best_score: float | None
    """The best score so far."""
    usage: Usage
    """What the run has spent so far."""
    stop_reason: StopReason | None = None
    """Set once the loop decided to stop."""
    stop_detail: str = ""
    """A sentence on the stop."""


ProgressCallback = Callable[[Progress], Any]


async def arefine(
    task: str | Task,
    *,
    model: ChatModel,
    critics: Sequence[Critic | Callable[..., Any]] | Panel | None = None,
    threshold: float = 0.9,
    budget: Budget | None = None,
    n: int = 1,
    revise: ReviseMode = "rewrite",
    revise_when: ReviseWhen = "always",
    revise_from: Literal["best", "last"] = "best",
    patience: int = 2,
    checkpointer: Any = None,
    on_progress: ProgressCallback | None = None,
    **options: Any,
) -> RefineResult:
    """Draft, critique and revise until the threshold or the budget; return the best.

    Args:
        task: the prompt, or a `Task` (with a draft to improve, a system prompt, ...).
        model: the chat model that drafts and revises (and judges, for judges without one).
        critics: critics or ``@critic`` functions, or a `Panel`; an `LLMJudge` when None.
        threshold: stop once the best score reaches it with every gate passed.
        budget: limits on rounds, calls, tokens, cost and seconds (`Budget()` when None).
        n: drafts generated in parallel in the first round (best-of-n).
        revise: ``"rewrite"`` the whole answer or ``"edit"`` it with search/replace blocks.
        revise_when: ``"always"``, or ``"on_failure"`` to revise only when a critic
            flags a failure (``passed=False``).
        revise_from: revise the ``"best"`` candidate so far or the ``"last"`` one.
        patience: stop as converged after this many rounds without a score gain.
        checkpointer: a LangGraph checkpointer; a run interrupted with the same task id
            resumes where it stopped, and a finished one returns its stored result.
        on_progress: called (sync or async) after each step with a `Progress`.
        **options: ``generator=`` / ``reviser=`` to replace the default agents.

    Raises:
        ConfigError: a bad argument.
        CriticError, LLMError: a critic or the model broke (no partial result).
    """
    task = task if isinstance(task, Task) else Task(prompt=task)
    cfg = RefineConfig(model, critics, threshold=threshold, budget=budget, n=n, revise=revise,
                       revise_when=revise_when, revise_from=revise_from, patience=patience,
                       **options)
    graph = build_refine_graph(model, checkpointer=checkpointer, config=cfg)
    config: dict[str, Any] = {"configurable": {"thread_id": task.id},
                              "recursion_limit": cfg.recursion_limit}
    graph_input: dict[str, Any] | None = {"task": task}
    if checkpointer is not None:
        snapshot = await graph.aget_state(config)
        if snapshot.values.get("result") is not None and not snapshot.next:
            return snapshot.values["result"]
        if snapshot.next:
            graph_input = None  # resume the interrupted run from its last checkpoint
    state: dict[str, Any] = {}
    step: tuple[str, dict[str, Any]] | None = None
    async for mode, chunk in graph.astream(graph_input, config, stream_mode=["updates", "values"]):
        if mode == "updates":
            node, delta = next(iter(chunk.items()))
            step = (node, delta or {})
            continue
        if step is not None and on_progress is not None:
            outcome = on_progress(_progress(*step, before=state, after=chunk))
            if asyncio.iscoroutine(outcome):
                await outcome
        state, step = chunk, None
    return state["result"]


def _progress(node: str, delta: dict[str, Any], *, before: dict[str, Any],
              after: dict[str, Any]) -> Progress:
    rounds = after.get("rounds") or []
    best = best_of(scored_history(rounds))
    scored: list[ScoredCandidate] = []
    if node == "critique" and delta.get("rounds"):
        current = delta["rounds"][-1]
        earlier = {r.index: len(r.scored) for r in before.get("rounds") or []}
        scored = current.scored[earlier.get(current.index, 0):]
    stop = after.get("stop")
    return Progress(node=node, round=rounds[-1].index if rounds else 0,  # type: ignore[arg-type]
                    scored=scored, best_score=best.score if best else None,
                    usage=after.get("usage") or Usage(),
                    stop_reason=stop.reason if stop else None,
                    stop_detail=stop.detail if stop else "")


def refine(task: str | Task, **kwargs: Any) -> RefineResult:
    """Run `arefine` to completion from synchronous code; same arguments.

    Raises:
        ConfigError: when called inside a running event loop (use ``await arefine``).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arefine(task, **kwargs))
    raise ConfigError("refine() cannot run inside a running event loop (Jupyter, an async "
                      "app): use `await redline.arefine(...)` instead")
