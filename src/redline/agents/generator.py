"""The generator: drafts candidates for a task."""

from __future__ import annotations

import asyncio

from redline.errors import BudgetExceeded
from redline.llm import ChatModel, Message
from redline.prompts import check, render
from redline.types import Candidate, Task

__all__ = ["Generator"]


class Generator:
    """Drafts `n` candidates for a task, concurrently.

    Args:
        model: the chat model.
        temperature: sampling temperature (n > 1 needs > 0 to get different drafts).
        max_tokens: each draft's token limit (clamped further by the run's budget).
        seed: base seed; draft i uses ``seed + i``.
        system: the system message when the task has none (a name from
            `redline.prompts` or template text, no placeholders).
        greedy_first: draft 0 is greedy (temperature 0) and the others are sampled at
            `temperature`: the set then always holds the answer single-shot would give,
            listed first, so a selection that ties keeps it (`best_of_n`'s default).

    Raises:
        ConfigError: an unknown prompt name or a system prompt with placeholders.
    """

    def __init__(self, model: ChatModel, *, temperature: float = 0.7, max_tokens: int = 1024,
                 seed: int | None = None, system: str = "generate_system",
                 greedy_first: bool = False) -> None:
        check(system, allowed=())
        self.system = system
        self.model = model
        self.temperature = temperature
        self.greedy_first = greedy_first
        self.max_tokens = max_tokens
        self.seed = seed

    def messages(self, task: Task) -> list[Message]:
        """The conversation that asks for a draft."""
        return [{"role": "system", "content": task.system or render(self.system)},
                {"role": "user", "content": task.prompt}]

    async def generate(self, task: Task, n: int = 1) -> list[Candidate]:
        """Draft `n` candidates."""
        messages = self.messages(task)

        async def one(i: int) -> Candidate:
            seed = None if self.seed is None else self.seed + i
            greedy = self.greedy_first and i == 0
            completion = await self.model.complete(
                messages, max_tokens=self.max_tokens,
                temperature=0.0 if greedy else self.temperature, seed=seed)
            return Candidate(text=completion.text.strip(), round=0, origin="draft",
                             usage=completion.usage)

        if n == 1:
            return [await one(0)]
        # Keep the drafts that fit the budget: a refused call does not waste the others.
        outcomes = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
        drafts = [o for o in outcomes if isinstance(o, Candidate)]
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        fatal = [e for e in errors if not isinstance(e, BudgetExceeded)]
        if fatal or not drafts:
            raise (fatal or errors)[0]
        return drafts
