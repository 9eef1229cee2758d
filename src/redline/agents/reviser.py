"""The reviser: turns a candidate and its critiques into a better candidate."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Literal

from redline import prompts
from redline.agents._edits import EditError, apply_edits
from redline.agents.feedback import FeedbackRenderer, render_feedback
from redline.errors import ConfigError
from redline.llm import ChatModel, Message
from redline.types import Candidate, ScoredCandidate, Task, Usage

__all__ = ["ReviseMode", "Reviser", "clean_revision"]

log = logging.getLogger("redline.agents")

ReviseMode = Literal["rewrite", "edit"]


class Reviser:
    """Revises a candidate using the critics' feedback.

    In ``rewrite`` mode the model writes the whole answer again. In ``edit`` mode it
    replies with search/replace blocks applied to the candidate, which saves output
    tokens on long texts; when a block does not apply, the reviser asks for a rewrite.

    What the model reads is injectable, so a preset changes it without a new reviser:
    the prompts (a name from `redline.prompts` or template text with the placeholders
    ``$task``, ``$answer``, ``$feedback``, ``$memory``), and the function that turns the
    critiques into the ``$feedback`` text.

    Args:
        model: the chat model.
        mode: ``"rewrite"`` or ``"edit"``.
        temperature: sampling temperature.
        max_tokens: the revision's token limit (clamped further by the run's budget).
        prompt: the prompt asking for a rewrite (also the fallback of ``edit`` mode).
        edit_prompt: the prompt asking for search/replace blocks (``edit`` mode).
        system: the system message when the task has none.
        feedback: the critiques of the candidate → the ``$feedback`` text; "" means
            none (the reviser then reads the ``revise_no_feedback`` prompt).

    Raises:
        ConfigError: an unknown mode or prompt name, or a prompt with a placeholder the
            reviser does not fill.
    """

    PLACEHOLDERS = frozenset({"task", "answer", "feedback", "memory"})
    """What the reviser fills in its prompts."""

    def __init__(self, model: ChatModel, *, mode: ReviseMode = "rewrite",
                 temperature: float = 0.3, max_tokens: int = 1024,
                 prompt: str = "revise_rewrite", edit_prompt: str = "revise_edit",
                 system: str = "generate_system",
                 feedback: FeedbackRenderer = render_feedback) -> None:
        if mode not in ("rewrite", "edit"):
            raise ConfigError(f"revise mode must be 'rewrite' or 'edit', got {mode!r}")
        for template in (prompt, edit_prompt):
            prompts.check(template, allowed=self.PLACEHOLDERS)
        prompts.check(system, allowed=())
        self.model = model
        self.mode = mode
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.prompt = prompt
        self.edit_prompt = edit_prompt
        self.system = system
        self.feedback = feedback

    def messages(self, task: Task, scored: ScoredCandidate, memory: Sequence[str],
                 mode: ReviseMode) -> list[Message]:
        """The conversation that asks for a revision."""
        notes = ""
        if memory:
            notes = "\n" + prompts.render("revise_memory",
                                          lessons="\n".join(f"- {m}" for m in memory))
        feedback = self.feedback(scored).strip() or prompts.render("revise_no_feedback")
        prompt = prompts.render(self.edit_prompt if mode == "edit" else self.prompt,
                                task=task.prompt, answer=scored.candidate.text,
                                feedback=feedback, memory=notes)
        system = task.system or prompts.render(self.system)
        return [{"role": "system", "content": system}, {"role": "user", "content": prompt}]

    async def revise(self, task: Task, scored: ScoredCandidate, *, round: int,
                     memory: Sequence[str] = ()) -> Candidate:
        """A revision of ``scored.candidate`` for round `round`."""
        parent = scored.candidate
        usage = Usage()
        if self.mode == "edit":
            completion = await self.model.complete(
                self.messages(task, scored, memory, "edit"), max_tokens=self.max_tokens,
                temperature=self.temperature)
            usage = completion.usage
            try:
                text = apply_edits(parent.text, completion.text)
            except EditError as exc:
                log.info("edit did not apply (%s); asking for a rewrite", exc)
            else:
                return Candidate(text=text, round=round, origin="edit", parent=parent.id,
                                 usage=usage)
        completion = await self.model.complete(
            self.messages(task, scored, memory, "rewrite"), max_tokens=self.max_tokens,
            temperature=self.temperature)
        return Candidate(text=clean_revision(completion.text), round=round,
                         origin="rewrite" if self.mode == "rewrite" else "edit-fallback",
                         parent=parent.id, usage=usage + completion.usage)


_MARKER_LINE = re.compile(r"^\s*(?:<{2,}\s*ANSWER\S*|ANSWER\S*?>{2,})\s*$")
_PREAMBLE = re.compile(
    r"^\s*(?:here(?:'s| is)\s+(?:the|my|an?)\s+)?(?:improved|revised|updated|new|"
    r"corrected|final|rewritten)\s+(?:answer|version|text|response)\s*[:.]?\s*$",
    re.IGNORECASE)
_INLINE_PREAMBLE = re.compile(
    r"^\s*(?:here(?:'s| is)\s+(?:the|my|an?)\s+)?(?:improved|revised|updated|corrected|"
    r"rewritten)\s+(?:answer|version|text|response)\s*:[ \t]*", re.IGNORECASE)
_INLINE_MARKER = re.compile(r"<{2,}\s*ANSWER[-\w]*|ANSWER[-\w]*?>{2,}")


def clean_revision(text: str) -> str:
    """A revision without the prompt's scaffolding that small models copy into it.

    Drops an opening line such as ``Improved answer:``, the ``<<<ANSWER`` /
    ``ANSWER>>>`` markers the prompt fenced the answer with (on their own lines or
    inline). An answer that is nothing but scaffolding is returned as it came.
    """
    lines = text.strip().splitlines()
    while lines and (_PREAMBLE.match(lines[0]) or not lines[0].strip()):
        lines.pop(0)
    kept = [line for line in lines if not _MARKER_LINE.match(line)]
    cleaned = _INLINE_MARKER.sub("", "\n".join(kept)).strip()
    cleaned = _INLINE_PREAMBLE.sub("", cleaned, count=1).strip()
    return cleaned or text.strip()
