"""The resampler: a "revision" that is a fresh sample of the task, the failure unseen."""

from __future__ import annotations

from collections.abc import Sequence

from redline.agents.generator import Generator
from redline.agents.reviser import Reviser, given_text
from redline.llm import ChatModel, Message
from redline.types import Candidate, ScoredCandidate, Task

__all__ = ["Resampler"]


class Resampler(Reviser):
    """Replaces a failing candidate with a new sample of the task: the model is asked the
    task again, as the generator asks it, at `temperature`; it does not see the failed
    answer, its critique or any memory.

    At equal compute, drawing new samples fixes more code than asking a small model to
    repair its own (Olausson et al. 2024): the repair is often the same code again, and
    the failed attempt in the prompt anchors the next one to it. The new sample is a
    draft (``origin="draft"``) of the round it is drawn in, with no parent. A task that
    gave a text to work on (`Task.draft`, the round-0 candidate) is asked with that text
    as it was given, so each sample starts from the original, not from a failed attempt.

    A sample that repeats a candidate the run already has does not end the run as
    converged (`repeat_converges` is False): its round is spent, and the next round
    draws again with the next seed, until `n` drafts or a passing one.

    Args:
        model: the chat model that samples.
        temperature: the samples' temperature (above 0, or every sample is the same).
        max_tokens: each sample's token limit (clamped further by the run's budget).
        seed: base seed; the sample of round r uses ``seed + r``.
        system: the system message when the task has none (as `Generator`'s).

    Raises:
        ConfigError: an unknown prompt name or a system prompt with placeholders.
    """

    repeat_converges = False
    round_noun = "new draft"

    def rounds_done(self, done: int, limit: int) -> str:
        """As `Reviser.rounds_done`, naming the drafts in all: the `resample` preset's
        ``n`` sets ``max_rounds`` to ``n - 1``, so "2 of 2" alone reads wrong for n=3."""
        return (f"max_rounds: {done} of {limit} {self.round_noun}s done "
                f"({limit + 1} drafts in all, resample's n)")

    def __init__(self, model: ChatModel, *, temperature: float = 0.7, max_tokens: int = 1024,
                 seed: int | None = None, system: str = "generate_system") -> None:
        super().__init__(model, temperature=temperature, max_tokens=max_tokens, system=system)
        self.seed = seed
        self.drafter = Generator(model, system=system)  # asks the task as drafts are asked

    def messages(self, task: Task, scored: ScoredCandidate | None = None,
                 memory: Sequence[str] = (), mode: object = None) -> list[Message]:
        """The conversation that asks for a new sample: the generator's, plus the text
        the task gave, if any (`scored`, `memory` and `mode` are not used)."""
        messages = self.drafter.messages(task)
        given = given_text(task)
        if given:
            messages[-1] = {"role": "user", "content": f"{task.prompt}\n\n{given}"}
        return messages

    async def revise(self, task: Task, scored: ScoredCandidate, *, round: int,
                     memory: Sequence[str] = ()) -> Candidate:
        """A new sample of `task` for round `round` (`scored` and `memory` are not
        shown to the model)."""
        completion = await self.model.complete(
            self.messages(task), max_tokens=self.max_tokens,
            temperature=self.temperature, seed=None if self.seed is None else self.seed + round)
        return Candidate(text=completion.text.strip(), round=round, origin="draft",
                         usage=completion.usage)
