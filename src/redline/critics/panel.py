"""A panel: several critics judging concurrently, combined into one score."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from redline._aio import gather_all
from redline.critics.base import Critic, FunctionCritic, run_critic
from redline.errors import ConfigError
from redline.types import Candidate, Critique, ScoredCandidate, Task

__all__ = ["Panel"]

CacheKey = str


class Panel:
    """Critics that judge every candidate together.

    The combined score is 0 when a gate critic says ``passed=False``; otherwise it is
    the weighted mean of the non-gate critics (of the gates when there are only gates).

    Args:
        critics: critics, or plain functions (wrapped as by `@critic`).
        gates: names of critics to treat as gates, on top of those with ``gate=True``.
        weights: weights by critic name, overriding each critic's ``weight``.
    """

    def __init__(self, critics: Sequence[Critic | Callable[..., Any]], *,
                 gates: Iterable[str] = (), weights: Mapping[str, float] | None = None) -> None:
        self.critics: list[Critic] = [c if isinstance(c, Critic) else FunctionCritic(c)
                                      for c in critics]
        if not self.critics:
            raise ConfigError("a panel needs at least one critic")
        names = [c.name for c in self.critics]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"two critics are named {dupes[0]!r}; give each a distinct name")
        self.gates = {c.name for c in self.critics if c.gate} | set(gates)
        self.weights = {c.name: c.weight for c in self.critics} | dict(weights or {})
        unknown = (self.gates | set(self.weights)) - set(names)
        if unknown:
            raise ConfigError(f"no critic named {sorted(unknown)[0]!r} in the panel "
                              f"(critics: {', '.join(names)})")
        bad = {n: w for n, w in self.weights.items() if w < 0}
        if bad:
            raise ConfigError(f"critic weights must be >= 0, got {bad}")

    def combine(self, candidate: Candidate, critiques: Sequence[Critique]) -> ScoredCandidate:
        """The panel's verdict from its critics' critiques (in panel order)."""
        gates = [c for c in critiques if c.critic in self.gates]
        rest = [c for c in critiques if c.critic not in self.gates] or gates
        gates_passed = all(c.passed is not False for c in gates)
        total = sum(self.weights[c.critic] for c in rest)
        mean = (sum(self.weights[c.critic] * c.score for c in rest) / total if total
                else sum(c.score for c in rest) / len(rest))
        return ScoredCandidate(
            candidate=candidate,
            score=min(1.0, max(0.0, mean)) if gates_passed else 0.0,
            gates_passed=gates_passed,
            failed=any(c.passed is False for c in critiques),
            critiques=list(critiques),
        )

    async def evaluate(self, task: Task, candidates: Sequence[Candidate],
                       cache: Mapping[CacheKey, Critique] | None = None
                       ) -> tuple[list[ScoredCandidate], dict[CacheKey, Critique]]:
        """Score candidates with every critic concurrently, reusing cached critiques.

        Returns the scored candidates and the critiques newly made, keyed by
        `cache_key`, for the caller to keep.
        """
        cache = cache or {}

        async def one_critic(critic: Critic) -> dict[CacheKey, Critique]:
            todo = [c for c in _unique(candidates) if cache_key(critic, c) not in cache]
            if not todo:
                return {}
            made = await run_critic(critic, task, todo)
            return {cache_key(critic, c): k for c, k in zip(todo, made, strict=True)}

        fresh: dict[CacheKey, Critique] = {}
        for made in await gather_all(*(one_critic(c) for c in self.critics)):
            fresh.update(made)
        known = {**cache, **fresh}
        scored = [self.combine(c, [known[cache_key(k, c)] for k in self.critics])
                  for c in candidates]
        return scored, fresh


def cache_key(critic: Critic, candidate: Candidate) -> CacheKey:
    """Critiques are cached by critic name and candidate content."""
    return f"{critic.name}:{candidate.id}"


def _unique(candidates: Sequence[Candidate]) -> list[Candidate]:
    seen: dict[str, Candidate] = {}
    for c in candidates:
        seen.setdefault(c.id, c)
    return list(seen.values())
