"""Reflectors: what the loop remembers between attempts (the ``reflect`` node's agent).

A reflector reads the attempt that just failed, with its critiques, and writes one
memory entry; the loop keeps the last ``memory`` entries in its (checkpointed) state and
hands them to the reviser's ``$memory``. Two ship with redline:

- `Reflector` (Reflexion, Shinn et al. 2023): the model writes a short verbal
  reflection on the failed attempt: what went wrong and what to do differently.
- `FeedbackHistory` (Self-Refine, Madaan et al. 2023): no model call; the entry is the
  round's feedback itself, so the reviser reads the history of feedback, not only the
  last.

Any object with a ``memory`` bound and an ``async reflect(task, scored, memory)`` that
returns the entry (or None for none) can be a reflector.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from redline import prompts
from redline.agents.feedback import FeedbackRenderer, render_feedback
from redline.errors import ConfigError
from redline.llm import ChatModel, Message
from redline.types import ScoredCandidate, Task

__all__ = ["FeedbackHistory", "Reflector", "ReflectorLike"]


@runtime_checkable
class ReflectorLike(Protocol):
    """What the ``reflect`` node needs of a reflector."""

    memory: int
    """How many entries the loop keeps (the oldest is dropped first)."""

    async def reflect(self, task: Task, scored: ScoredCandidate,
                      memory: Sequence[str]) -> str | None:
        """The memory entry for the failed attempt `scored` (None: nothing to keep)."""
        ...


def _check_memory(memory: int) -> int:
    if isinstance(memory, bool) or not isinstance(memory, int) or memory < 1:
        raise ConfigError(f"memory must be a whole number of entries >= 1, got {memory!r}")
    return memory


class Reflector:
    """Writes Reflexion's verbal reflection on a failed attempt.

    The model reads the task, the attempt, what the evaluator said (its feedback and
    verdict) and the earlier reflections, and writes a few sentences: what went wrong and
    what the next attempt should do differently. It is asked not to write the answer
    itself, so the next attempt is the actor's, guided by the lesson.

    Args:
        model: the chat model that reflects (it may differ from the one that answers).
        memory: how many reflections the loop keeps (Reflexion used 1 to 3).
        temperature: sampling temperature.
        max_tokens: the reflection's token limit (clamped further by the run's budget).
        prompt: the request (a name from `redline.prompts` or template text with
            ``$task``, ``$answer``, ``$feedback``, ``$memory``).
        system: the system message.
        feedback: the critiques of the attempt → the ``$feedback`` text.

    Raises:
        ConfigError: a bad `memory`, or a prompt with a placeholder it does not fill.
    """

    PLACEHOLDERS = frozenset({"task", "answer", "feedback", "memory"})
    """What the reflector fills in its prompt."""

    def __init__(self, model: ChatModel, *, memory: int = 3, temperature: float = 0.0,
                 max_tokens: int = 256, prompt: str = "reflect_user",
                 system: str = "reflect_system",
                 feedback: FeedbackRenderer = render_feedback) -> None:
        prompts.check(prompt, allowed=self.PLACEHOLDERS)
        prompts.check(system, allowed=())
        self.model = model
        self.memory = _check_memory(memory)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.prompt = prompt
        self.system = system
        self.feedback = feedback

    def messages(self, task: Task, scored: ScoredCandidate,
                 memory: Sequence[str]) -> list[Message]:
        """The conversation that asks for a reflection."""
        earlier = "\n".join(f"- {m}" for m in memory) or "(none)"
        feedback = self.feedback(scored).strip() or "(the evaluator said nothing more)"
        verdict = "failed" if scored.failed else f"scored {scored.score:.2f}"
        user = prompts.render(self.prompt, task=task.prompt, answer=scored.candidate.text,
                              feedback=f"The attempt {verdict}.\n{feedback}",
                              memory=earlier)
        return [{"role": "system", "content": prompts.render(self.system)},
                {"role": "user", "content": user}]

    async def reflect(self, task: Task, scored: ScoredCandidate,
                      memory: Sequence[str]) -> str | None:
        """The reflection on `scored` (None when the model wrote nothing)."""
        completion = await self.model.complete(self.messages(task, scored, memory),
                                               max_tokens=self.max_tokens,
                                               temperature=self.temperature)
        text = " ".join(completion.text.split())
        return text or None


class FeedbackHistory:
    """Keeps each round's feedback as a memory entry (Self-Refine's history), no model call.

    Args:
        memory: how many rounds of feedback the loop keeps.
        max_chars: each entry's length limit.
        feedback: the critiques → the entry's text.

    Raises:
        ConfigError: a bad `memory`.
    """

    def __init__(self, *, memory: int = 3, max_chars: int = 600,
                 feedback: FeedbackRenderer = render_feedback) -> None:
        self.memory = _check_memory(memory)
        self.max_chars = max_chars
        self.feedback = feedback

    async def reflect(self, task: Task, scored: ScoredCandidate,
                      memory: Sequence[str]) -> str | None:
        """``Round k (score s): <feedback>`` for the attempt of round k; None without
        feedback."""
        text = " ".join(self.feedback(scored).split())
        if not text:
            return None
        if len(text) > self.max_chars:
            text = text[: self.max_chars - 1] + "…"
        return f"Round {scored.candidate.round} (score {scored.score:.2f}): {text}"
