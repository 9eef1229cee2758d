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
from redline.types import Candidate, ScoredCandidate, Task, Usage, content_hash

__all__ = ["OnRepeat", "ReviseMode", "Reviser", "clean_revision"]

log = logging.getLogger("redline.agents")

ReviseMode = Literal["rewrite", "edit"]
OnRepeat = Literal["keep", "resample"]


class Reviser:
    """Revises a candidate using the critics' feedback.

    In ``rewrite`` mode the model writes the whole answer again. In ``edit`` mode it
    replies with search/replace blocks applied to the candidate, which saves output
    tokens on long texts; when a block does not apply, the reviser asks for a rewrite.

    Small models often return the answer unchanged (23 of 27 revisions of a 1.5B coder
    on HumanEval), and the loop then stops as converged. With
    ``on_repeat="resample"`` a revision that repeats its parent (see `repeats`) is asked
    for once more, in the same conversation, at `repeat_temperature` and with a note
    that the last reply changed nothing (the ``revise_repeat`` prompt); the second
    reply is the revision, even when it repeats too (then the loop stops as converged).
    Its cost is added to the revision's.

    What the model reads is injectable, so a preset changes it without a new reviser:
    the prompts (a name from `redline.prompts` or template text with the placeholders
    ``$task``, ``$answer``, ``$feedback``, ``$memory``, ``$given``), and the function
    that turns the critiques into the ``$feedback`` text.

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
        on_repeat: ``"keep"`` a revision that repeats its parent (the loop stops as
            converged), or ``"resample"`` it once.
        repeat_temperature: the sampling temperature of that second try.
        repeat_prompt: the note that asks for it, after the repeated reply.

    Raises:
        ConfigError: an unknown mode, `on_repeat` or prompt name, a negative
            `repeat_temperature`, or a prompt with a placeholder the reviser does not
            fill.
    """

    PLACEHOLDERS = frozenset({"task", "answer", "feedback", "memory", "given"})
    """What the reviser fills in its prompts (``$given``: the text the task gave to work
    on, `Task.draft`, fenced, or "" when it gave none; a prompt for a fresh attempt
    that does not show ``$answer`` needs it)."""
    REPEAT_PLACEHOLDERS = frozenset({"task", "answer", "feedback", "memory"})
    """What the reviser fills in `repeat_prompt`."""
    repeat_converges = True
    """Whether a revision that returns a candidate the run already has ends the run as
    converged (a repair that changes nothing will not change on the next round either).
    A reviser whose every round is an independent draw (`Resampler`) sets it False:
    the repeat spends its round, and the next round draws again."""
    round_noun = "revision"
    """What one of its rounds makes, in messages such as the ``max_rounds`` stop's
    ("2 of 2 revisions done"); `Resampler`'s rounds make new drafts."""

    def rounds_done(self, done: int, limit: int) -> str:
        """The ``max_rounds`` stop's detail: `done` of `limit` rounds made."""
        return f"max_rounds: {done} of {limit} {self.round_noun}s done"

    def __init__(self, model: ChatModel, *, mode: ReviseMode = "rewrite",
                 temperature: float = 0.3, max_tokens: int = 1024,
                 prompt: str = "revise_rewrite", edit_prompt: str = "revise_edit",
                 system: str = "generate_system",
                 feedback: FeedbackRenderer = render_feedback,
                 on_repeat: OnRepeat = "keep", repeat_temperature: float = 0.9,
                 repeat_prompt: str = "revise_repeat") -> None:
        if mode not in ("rewrite", "edit"):
            raise ConfigError(f"revise mode must be 'rewrite' or 'edit', got {mode!r}")
        if on_repeat not in ("keep", "resample"):
            raise ConfigError(f"on_repeat must be 'keep' or 'resample', got {on_repeat!r}")
        if isinstance(repeat_temperature, bool) or \
                not isinstance(repeat_temperature, int | float) or \
                not 0 <= repeat_temperature <= 2:
            raise ConfigError(f"repeat_temperature must be a number in [0, 2], got "
                              f"{repeat_temperature!r}")
        for template in (prompt, edit_prompt):
            prompts.check(template, allowed=self.PLACEHOLDERS)
        prompts.check(repeat_prompt, allowed=self.REPEAT_PLACEHOLDERS)
        prompts.check(system, allowed=())
        self.model = model
        self.mode = mode
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.prompt = prompt
        self.edit_prompt = edit_prompt
        self.system = system
        self.feedback = feedback
        self.on_repeat = on_repeat
        self.repeat_temperature = float(repeat_temperature)
        self.repeat_prompt = repeat_prompt

    def feedback_text(self, scored: ScoredCandidate) -> str:
        """The ``$feedback`` the reviser's prompts read: the renderer's text, or the
        ``revise_no_feedback`` prompt when it is empty."""
        return self.feedback(scored).strip() or prompts.render("revise_no_feedback")

    @staticmethod
    def memory_text(memory: Sequence[str]) -> str:
        """The ``$memory`` the reviser's prompts read ("" without lessons)."""
        if not memory:
            return ""
        return "\n" + prompts.render("revise_memory",
                                     lessons="\n".join(f"- {m}" for m in memory))

    def messages(self, task: Task, scored: ScoredCandidate, memory: Sequence[str],
                 mode: ReviseMode) -> list[Message]:
        """The conversation that asks for a revision."""
        prompt = prompts.render(self.edit_prompt if mode == "edit" else self.prompt,
                                task=task.prompt, answer=scored.candidate.text,
                                feedback=self.feedback_text(scored),
                                memory=self.memory_text(memory), given=given_text(task))
        return [{"role": "system", "content": task.system or prompts.render(self.system)},
                {"role": "user", "content": prompt}]

    async def revise(self, task: Task, scored: ScoredCandidate, *, round: int,
                     memory: Sequence[str] = ()) -> Candidate:
        """A revision of ``scored.candidate`` for round `round`."""
        candidate, conversation = await self._revision(task, scored, round, memory)
        return await self._unrepeated(task, scored, memory, candidate, conversation)

    def repeats(self, parent: Candidate, text: str) -> bool:
        """Whether `text` is `parent`'s answer again: the same content, or the same
        lines once trailing spaces and blank lines are dropped. Indentation counts: in
        Python, moving a line in or out of a block is a fix."""
        return content_hash(text) == parent.id or _lines(text) == _lines(parent.text)

    async def _revision(self, task: Task, scored: ScoredCandidate, round: int,
                        memory: Sequence[str]) -> tuple[Candidate, list[Message]]:
        """The revision, and the conversation that produced it (its reply included)."""
        parent = scored.candidate
        usage = Usage()
        if self.mode == "edit":
            messages = self.messages(task, scored, memory, "edit")
            completion = await self.model.complete(messages, max_tokens=self.max_tokens,
                                                   temperature=self.temperature)
            usage = completion.usage
            try:
                text = apply_edits(parent.text, completion.text)
            except EditError as exc:
                log.info("edit did not apply (%s); asking for a rewrite", exc)
            else:
                return (Candidate(text=text, round=round, origin="edit", parent=parent.id,
                                  usage=usage),
                        [*messages, {"role": "assistant", "content": completion.text}])
        messages = self.messages(task, scored, memory, "rewrite")
        completion = await self.model.complete(messages, max_tokens=self.max_tokens,
                                               temperature=self.temperature)
        return (Candidate(text=clean_revision(completion.text), round=round,
                          origin="rewrite" if self.mode == "rewrite" else "edit-fallback",
                          parent=parent.id, usage=usage + completion.usage),
                [*messages, {"role": "assistant", "content": completion.text}])

    async def _unrepeated(self, task: Task, scored: ScoredCandidate, memory: Sequence[str],
                          candidate: Candidate, conversation: list[Message]) -> Candidate:
        """`candidate`; or, when it repeats its parent and ``on_repeat="resample"``, the
        model's second try, asked for after its reply in `conversation`."""
        if self.on_repeat == "keep" or not self.repeats(scored.candidate, candidate.text):
            return candidate
        log.info("the revision of %s repeats it; asking once more at temperature %g",
                 scored.candidate.id, self.repeat_temperature)
        note = prompts.render(self.repeat_prompt, task=task.prompt,
                              answer=scored.candidate.text,
                              feedback=self.feedback_text(scored),
                              memory=self.memory_text(memory))
        completion = await self.model.complete(
            [*conversation, {"role": "user", "content": note}], max_tokens=self.max_tokens,
            temperature=self.repeat_temperature)
        # The second reply is a whole answer: an edit that changed nothing falls back.
        return candidate.model_copy(update={
            "text": clean_revision(completion.text),
            "origin": "rewrite" if candidate.origin == "rewrite" else "edit-fallback",
            "usage": candidate.usage + completion.usage})


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip().splitlines() if line.strip()]


def given_text(task: Task) -> str:
    """The ``$given`` of the reviser's prompts: the task's draft to work on, fenced, or
    "" when the task gave none."""
    if task.draft is None:
        return ""
    return prompts.render("revise_given", given=task.draft)


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
