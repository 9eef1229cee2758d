"""The refine graph's state: a TypedDict whose channels merge through reducers."""

from __future__ import annotations

import copy
import operator
from typing import Annotated, Any, Literal, TypedDict, get_origin, get_type_hints

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

__all__ = ["REDUCERS", "STATE_TYPES", "RefineState", "Select", "Stop", "best_of", "registered",
           "scored_history", "select_best"]

Select = Literal["score", "vote"]


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
    memory: list[str]
    """The reflector's last entries, oldest first (Reflexion). The ``reflect`` node
    writes the whole bounded list, so the channel keeps the last value (an appending
    reducer could not drop the oldest)."""
    stop: Annotated[Stop | None, _last]
    """Set once the loop has decided to stop."""
    clock: tuple[str, float]
    """(process token, monotonic time) when the last node ended: the time between
    nodes counts against ``max_seconds`` too, within one process."""
    result: RefineResult
    """Written by the finalize node."""


REDUCERS: dict[str, Any] = {
    key: hint.__metadata__[0]
    for key, hint in get_type_hints(RefineState, include_extras=True).items()
    if get_origin(hint) is Annotated}
"""The reducer of each `RefineState` key that has one (the others keep the last value)."""


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


def select_best(scored: list[ScoredCandidate], select: Select = "score"
                ) -> ScoredCandidate | None:
    """The candidate a run returns.

    ``"score"``: `best_of`. ``"vote"`` (self-consistency, Wang et al. 2023): the
    candidates' final answers (`redline.feedback_sources.answers.final_answer`) vote,
    equal answers (by `answer_key`) voting together; the best-ranked candidate of the
    answer with the most votes wins, a tie between answers going to the one whose best
    candidate ranks higher. Candidates that state no answer do not vote; when none does,
    the vote falls back to the score.
    """
    if select == "score" or not scored:
        return best_of(scored)
    from redline.feedback_sources.answers import answer_key, final_answer

    groups: dict[str, list[ScoredCandidate]] = {}
    for s in scored:
        answer = final_answer(s.candidate.text)
        if answer is not None:
            groups.setdefault(answer_key(answer), []).append(s)
    if not groups:
        return best_of(scored)
    winners = [best_of(g) for g in groups.values()]
    ranked = sorted(zip(groups.values(), winners, strict=True),
                    key=lambda gw: (len(gw[0]), gw[1].rank if gw[1] else (False, 0.0, 0.0)),
                    reverse=True)
    return ranked[0][1]


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
