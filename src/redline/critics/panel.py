"""A panel: several critics judging concurrently, combined into one score."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from redline._aio import gather_all
from redline.critics.base import Critic, FunctionCritic, run_critic
from redline.errors import ConfigError
from redline.types import Candidate, Critique, ScoredCandidate, Task

__all__ = ["Panel", "cache_key", "numbered_names"]

CacheKey = str


class Panel:
    """Critics that judge every candidate together.

    The combined score is 0 when a gate critic fails (see `Critic` for what "failed"
    means for each return type); otherwise it is the weighted mean of the non-gate
    critics (of the gates when there are only gates).

    Each critic is known in the panel by its name; when two critics share a name (the
    same plugin twice with different arguments), the second is ``NAME-2``, the third
    ``NAME-3``, in `names`, in its critiques and in the trace.

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
        self.names: list[str] = numbered_names([c.name for c in self.critics])
        """Each critic's name in the panel (repeated names numbered), in panel order."""
        names = self.names
        self.gates = {n for n, c in zip(names, self.critics, strict=True) if c.gate} | set(gates)
        self.weights = ({n: c.weight for n, c in zip(names, self.critics, strict=True)}
                        | dict(weights or {}))
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
        # A gate named only in `gates=` has no pass mark of its own: below 1.0 fails.
        gates_passed = all(c.passed is not False and (c.passed or c.score >= 1.0)
                           for c in gates)
        total = sum(self.weights[c.critic] for c in rest)
        mean = (sum(self.weights[c.critic] * c.score for c in rest) / total if total
                else sum(c.score for c in rest) / len(rest))
        return ScoredCandidate(
            candidate=candidate,
            score=min(1.0, max(0.0, mean)) if gates_passed else 0.0,
            gates_passed=gates_passed,
            failed=any(c.passed is False for c in critiques) or not gates_passed,
            critiques=list(critiques),
            gate_score=sum(c.score for c in gates) / len(gates) if gates else None,
        )

    async def preflight(self) -> None:
        """Run every critic's `Critic.preflight` concurrently (before any token is spent).

        Raises:
            ConfigError: a critic cannot work (the first such critic's message).
        """
        await gather_all(*(c.preflight() for c in self.critics))

    async def evaluate(self, task: Task, candidates: Sequence[Candidate],
                       cache: Mapping[CacheKey, Critique] | None = None
                       ) -> tuple[list[ScoredCandidate], dict[CacheKey, Critique]]:
        """Score candidates with every critic concurrently, reusing cached critiques.

        Returns the scored candidates and the critiques newly made, keyed by
        `cache_key`, for the caller to keep.
        """
        cache = cache or {}

        async def one_critic(critic: Critic, name: str) -> dict[CacheKey, Critique]:
            todo = [c for c in _unique(candidates) if cache_key(name, c) not in cache]
            if not todo:
                return {}
            made = await run_critic(critic, task, todo, name=name)
            return {cache_key(name, c): k for c, k in zip(todo, made, strict=True)}

        fresh: dict[CacheKey, Critique] = {}
        for made in await gather_all(*(one_critic(c, n)
                                       for c, n in zip(self.critics, self.names, strict=True))):
            fresh.update(made)
        known = {**cache, **fresh}
        scored = [self.combine(c, [known[cache_key(n, c)] for n in self.names])
                  for c in candidates]
        return scored, fresh


def cache_key(critic: Critic | str, candidate: Candidate) -> CacheKey:
    """Critiques are cached by the critic's name in its panel and the candidate's content."""
    name = critic if isinstance(critic, str) else critic.name
    return f"{name}:{candidate.id}"


def numbered_names(names: Sequence[str]) -> list[str]:
    """Distinct names: the second ``judge`` becomes ``judge-2``, the third ``judge-3``
    (skipping a number that another critic already uses as its name)."""
    taken = set(names)
    out: list[str] = []
    seen: set[str] = set()
    for name in names:
        if name not in seen:
            seen.add(name)
            out.append(name)
            continue
        k = 2
        while f"{name}-{k}" in taken or f"{name}-{k}" in seen:
            k += 1
        seen.add(f"{name}-{k}")
        out.append(f"{name}-{k}")
    return out


def _unique(candidates: Sequence[Candidate]) -> list[Candidate]:
    seen: dict[str, Candidate] = {}
    for c in candidates:
        seen.setdefault(c.id, c)
    return list(seen.values())
