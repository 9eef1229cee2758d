"""The refine graph's state: a TypedDict whose channels merge through reducers."""

from __future__ import annotations

import copy
import operator
from typing import Annotated, Any, TypedDict

from pydantic import BaseModel, ConfigDict

from redline.types import (
    BudgetLimit,
    Candidate,
    Critique,
    RefineResult,
    Round,
    ScoredCandidate,
    StopReason,
    Task,
    Usage,
)

__all__ = ["STATE_TYPES", "RefineState", "Stop", "best_of", "registered", "scored_history"]


class Stop(BaseModel):
    """Why the loop stops: the reason, a sentence, and the budget limit if any."""

    model_config = ConfigDict(frozen=True)

    reason: StopReason
    detail: str = ""
    limit: BudgetLimit | None = None


def _merge_rounds(old: list[Round], new: list[Round]) -> list[Round]:
    """A round written again (scored after being generated) replaces its earlier self."""
    merged = {r.index: r for r in old}
    for r in new:
        merged[r.index] = r
    return [merged[i] for i in sorted(merged)]


def _merge(old: dict[str, Critique], new: dict[str, Critique]) -> dict[str, Critique]:
    return {**old, **new}


def _add_usage(old: Usage, new: Usage) -> Usage:
    return old + new


def _last(old: Stop | None, new: Stop | None) -> Stop | None:
    # The first stop wins: a budget stop inside a node is not overwritten by decide.
    return old if old is not None else new


class RefineState(TypedDict, total=False):
    """The loop's state. Input: ``{"task": Task}``; output adds ``result``."""

    task: Task
    """The task being refined."""
    rounds: Annotated[list[Round], _merge_rounds]
    """Every round so far."""
    pending: list[Candidate]
    """Candidates made but not yet scored."""
    cache: Annotated[dict[str, Critique], _merge]
    """Critiques by (critic name, candidate content hash)."""
    usage: Annotated[Usage, _add_usage]
    """What the run has spent."""
    elapsed: Annotated[float, operator.add]
    """Seconds the run's nodes have taken (survives a resume)."""
    memory: Annotated[list[str], operator.add]
    """Reflections kept across rounds (Reflexion)."""
    stop: Annotated[Stop | None, _last]
    """Set once the loop has decided to stop."""
    clock: tuple[str, float]
    """(process token, monotonic time) when the last node ended: the time between
    nodes counts against ``max_seconds`` too, within one process."""
    result: RefineResult
    """Written by the finalize node."""


def scored_history(rounds: list[Round]) -> list[ScoredCandidate]:
    """Every scored candidate, in the order it was made."""
    return [s for r in rounds for s in r.scored]


def best_of(scored: list[ScoredCandidate]) -> ScoredCandidate | None:
    """The best candidate by `ScoredCandidate.rank` (gates passed first, then the score,
    then how close it came to its gates), the earliest on ties."""
    best: ScoredCandidate | None = None
    for s in scored:
        if best is None or s.rank > best.rank:
            best = s
    return best


STATE_TYPES: tuple[type, ...] = (Task, Candidate, Critique, Usage, ScoredCandidate, Round,
                                 RefineResult, StopReason, Stop)
"""The classes a checkpoint of the refine graph holds."""


def registered(checkpointer: Any) -> Any:
    """The checkpointer, able to restore redline's state types without warnings.

    LangGraph's default serializer restores any class but warns about each one it was
    not told about ("Deserializing unregistered type"), and cannot be told in that
    permissive mode. For such a checkpointer this returns a shallow copy whose
    serializer allows exactly LangGraph's safe types and `STATE_TYPES` (what
    LangGraph's strict mode does); any other checkpointer is returned unchanged.
    """
    serde = getattr(checkpointer, "serde", None)
    if serde is None:
        return checkpointer
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    # A permissive serializer ignores an allowlist: with_msgpack_allowlist returns it.
    if type(serde) is not JsonPlusSerializer or serde.with_msgpack_allowlist(STATE_TYPES) \
            is not serde:
        return checkpointer
    clone = copy.copy(checkpointer)
    clone.serde = JsonPlusSerializer(pickle_fallback=serde.pickle_fallback,
                                     allowed_msgpack_modules=STATE_TYPES)
    return clone
