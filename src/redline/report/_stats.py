"""What the report says about many runs: success, stops, scores before and after, cost."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from redline.report._load import Entry
from redline.types import RefineResult, StopReason

__all__ = ["Distribution", "MethodRow", "Summary", "best_score", "by_method", "draft_score",
           "reached", "solved", "summarize"]

_SUCCESS = (StopReason.threshold, StopReason.verified)


def draft_score(result: RefineResult) -> float | None:
    """The best score among the first round's scored candidates (the drafts)."""
    if not result.rounds:
        return None
    scores = [s.score for s in result.rounds[0].scored if not s.unscored]
    return max(scores) if scores else None


def best_score(result: RefineResult) -> float | None:
    """The returned candidate's score (None when there is none, or it is unscored)."""
    best = result.best
    return None if best is None or best.unscored else best.score


def reached(result: RefineResult) -> bool:
    """The run succeeded by its own measure: threshold reached, or verified."""
    return result.stop_reason in _SUCCESS


def solved(entry: Entry) -> bool:
    """The evaluator's verdict when there is one (compare files), else `reached`."""
    return entry.correct if entry.correct is not None else reached(entry.result)


@dataclass(frozen=True)
class Distribution:
    """Total, mean, median, 90th percentile and maximum of some values."""

    values: list[float]
    total: float
    mean: float
    median: float
    p90: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Distribution:
        """The distribution of `values` (zeros for none)."""
        data = sorted(values)
        if not data:
            return cls([], 0.0, 0.0, 0.0, 0.0, 0.0)
        p90 = data[min(int(0.9 * len(data)), len(data) - 1)]
        return cls(list(values), float(sum(data)), statistics.fmean(data),
                   float(statistics.median(data)), float(p90), float(data[-1]))


@dataclass(frozen=True)
class Summary:
    """The whole file at a glance."""

    items: int
    """Runs (item and method pairs in a compare file)."""
    solved: int
    """Runs `solved`."""
    stop_reasons: Counter[str]
    """How many runs stopped for each reason."""
    rounds: list[int]
    """Revision rounds of each run (0: the draft only)."""
    pairs: list[tuple[float, float]]
    """(draft score, best score) of every run that has both."""
    unplotted: int
    """Runs without a draft or a best score (not in `pairs`)."""
    tokens: Distribution
    calls: Distribution
    cost: Distribution
    seconds: Distribution

    @property
    def improved(self) -> int:
        """Runs whose best score beats their draft's."""
        return sum(1 for d, b in self.pairs if b > d)

    @property
    def regressed(self) -> int:
        """Runs whose best score is below their draft's."""
        return sum(1 for d, b in self.pairs if b < d)

    @property
    def unchanged(self) -> int:
        """Runs whose best score equals their draft's."""
        return len(self.pairs) - self.improved - self.regressed


def summarize(entries: Sequence[Entry]) -> Summary:
    """The `Summary` of `entries`."""
    pairs: list[tuple[float, float]] = []
    for entry in entries:
        draft, best = draft_score(entry.result), best_score(entry.result)
        if draft is not None and best is not None:
            pairs.append((draft, best))
    usages = [e.result.usage for e in entries]
    return Summary(
        items=len(entries),
        solved=sum(1 for e in entries if solved(e)),
        stop_reasons=Counter(e.result.stop_reason.value for e in entries),
        rounds=[max(len(e.result.rounds) - 1, 0) for e in entries],
        pairs=pairs, unplotted=len(entries) - len(pairs),
        tokens=Distribution.of([u.total_tokens for u in usages]),
        calls=Distribution.of([u.llm_calls for u in usages]),
        cost=Distribution.of([u.cost_usd for u in usages]),
        seconds=Distribution.of([u.seconds for u in usages]))


@dataclass(frozen=True)
class MethodRow:
    """One method of a compare file, side by side with the others."""

    method: str
    runs: int
    """Items it ran."""
    correct: int
    """Items the evaluator judged correct."""
    judged: int
    """Items with a verdict (``correct`` not null)."""
    reached: int
    """Items that reached the threshold or were verified."""
    fixed: int
    """Flips to correct: the draft was wrong, the answer is right."""
    broken: int
    """Flips to wrong: the draft was right, the answer is wrong."""
    errors: int
    """Items that ended with an error."""
    tokens: Distribution
    calls: Distribution
    cost: Distribution
    seconds: Distribution


def by_method(entries: Sequence[Entry], methods: Sequence[str]) -> list[MethodRow]:
    """One `MethodRow` per method, in the order of `methods`."""
    rows = []
    for method in methods:
        mine = [e for e in entries if e.method == method]
        usages = [e.result.usage for e in mine]
        rows.append(MethodRow(
            method=method, runs=len(mine),
            correct=sum(1 for e in mine if e.correct),
            judged=sum(1 for e in mine if e.correct is not None),
            reached=sum(1 for e in mine if reached(e.result)),
            fixed=sum(1 for e in mine if e.draft_correct is False and e.correct is True),
            broken=sum(1 for e in mine if e.draft_correct is True and e.correct is False),
            errors=sum(1 for e in mine if e.result.stop_reason is StopReason.error),
            tokens=Distribution.of([u.total_tokens for u in usages]),
            calls=Distribution.of([u.llm_calls for u in usages]),
            cost=Distribution.of([u.cost_usd for u in usages]),
            seconds=Distribution.of([u.seconds for u in usages])))
    return rows
