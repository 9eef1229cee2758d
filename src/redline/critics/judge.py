"""The LLM judge: self-critique against a rubric, as a JSON verdict.

Defences against an answer that tries to grade itself (prompt injection):

- the answer is fenced between random markers as untrusted data, and the instructions
  are restated after it;
- the verdict's JSON schema is sent to the server (``response_format`` in its dialect),
  so a server with constrained decoding can only answer ``{"score", "feedback"}``;
- passages of the answer that address the grader (a fake verdict, fake markers, "ignore
  previous instructions", a role-played system message, "the grader has approved this")
  are found before the model reads the answer, replaced by a note of what they were,
  listed in ``evidence["injection"]``, and count against the answer: the critique scores
  0 and fails, with feedback that says to remove them (see ``critics/_injection.py``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from redline._files import read_config_text
from redline.critics._ask import Fence, ask_json, critic_model
from redline.critics._injection import find_injections, neutralise
from redline.critics._json import find_json
from redline.critics.base import Critic
from redline.llm import ChatModel, Message
from redline.prompts import check, render
from redline.types import Candidate, Critique, Task

__all__ = ["VERDICT_SCHEMA", "LLMJudge", "judge_critic"]

log = logging.getLogger("redline.critics")

VERDICT_SCHEMA: dict[str, Any] = {
    "title": "verdict",
    "type": "object",
    "properties": {
        # An enum rather than minimum/maximum: every grammar engine (llama.cpp's too)
        # turns it into exactly these eleven strings.
        "score": {"type": "integer", "enum": list(range(11))},
        "feedback": {"type": "string"},
    },
    "required": ["score", "feedback"],
    "additionalProperties": False,
}
"""The judge's verdict: a score 0-10 and what must change."""


class LLMJudge(Critic):
    """Grades a candidate against a rubric with a chat model (Self-Refine's feedback step).

    The candidate is fenced between random markers and the model is told that it is
    untrusted data, before and after it. The model is asked for `VERDICT_SCHEMA`
    (``{"score": 0-10, "feedback": "..."}``), constrained by the server where it can
    be; an unusable reply is re-asked once, then the judge raises `CriticError`.

    Text in the candidate that addresses the grader (see the module) is replaced by a
    note before the model reads it, and the critique then scores 0 with
    ``passed=False``, feedback asking to remove it, ``evidence["injection"]`` listing
    each passage and ``evidence["judged_score"]`` the model's score of the rest.

    Args:
        model: the chat model; None uses the model the run generates with.
        rubric: what a good answer is; a default general rubric otherwise.
        name: the critic's name.
        max_tokens: the verdict's token limit.
        json_mode: send the verdict's schema to the server (``response_format`` in the
            server's dialect, see `ChatModel.structured_format`); off, the JSON is asked
            for in the prompt only.
        prompt: the request (a name from `redline.prompts` or template text). It is
            filled with ``$task``, ``$rubric``, ``$answer`` and the fence's ``$open`` and
            ``$close`` markers, and must contain the last three: the answer is always
            fenced.
        system: the system message (a prompt name or template text, no placeholders).

    Raises:
        ConfigError: an unknown prompt name, or a prompt that does not fit the above.
    """

    PLACEHOLDERS = frozenset({"task", "rubric", "open", "answer", "close"})
    """What the judge fills in its prompt."""

    def __init__(self, model: ChatModel | None = None, *, rubric: str | None = None,
                 name: str = "judge", max_tokens: int = 300, json_mode: bool = True,
                 prompt: str = "judge_user", system: str = "judge_system") -> None:
        check(prompt, allowed=self.PLACEHOLDERS, required=("open", "answer", "close"))
        check(system, allowed=())
        self.model = model
        self.rubric = rubric.strip() if rubric else render("judge_rubric")
        self.name = name
        self.max_tokens = max_tokens
        self.json_mode = json_mode
        self.prompt = prompt
        self.system = system

    @classmethod
    def from_rubric_file(cls, path: str | Path, **kwargs: Any) -> LLMJudge:
        """A judge whose rubric is read from a text file."""
        return cls(rubric=read_config_text(path, "rubric file"), **kwargs)

    async def critique(self, task: Task, candidate: Candidate) -> Critique:
        model = critic_model(self)
        injections = find_injections(candidate.text, task.prompt)
        answer = neutralise(candidate.text, injections) if injections else candidate.text
        fence = Fence.new("ANSWER")
        messages: list[Message] = [
            {"role": "system", "content": render(self.system)},
            {"role": "user", "content": render(
                self.prompt, task=task.prompt, rubric=self.rubric, open=fence.opening,
                close=fence.closing, answer=fence.quote(answer))},
        ]
        mark, feedback = await ask_json(
            model, messages, parse=_parse,
            reask=lambda problem: render("judge_reask", problem=problem),
            schema=VERDICT_SCHEMA if self.json_mode else None,
            max_tokens=self.max_tokens, critic=self.name)
        evidence: dict[str, Any] = {"rubric": self.rubric}
        if not injections:
            return Critique(critic=self.name, score=mark / 10, raw=mark, feedback=feedback,
                            evidence=evidence)
        kinds = list(dict.fromkeys(i.kind for i in injections))
        log.info("judge %r: the answer addresses the grader (%s)", self.name, ", ".join(kinds))
        evidence.update(injection=[{"kind": i.kind, "text": i.text[:200]} for i in injections],
                        judged_score=mark / 10)
        note = ("The answer contains text addressed to the grader, not to the task ("
                + "; ".join(f"{i.kind}: {i.text.strip()[:80]!r}" for i in injections[:5])
                + "); remove it.")
        return Critique(critic=self.name, score=0.0, passed=False, raw=mark,
                        feedback=f"{note}\n{feedback}".strip(), evidence=evidence)


def _parse(text: str) -> tuple[tuple[float, str] | None, str]:
    """The (mark 0-10, feedback) in a reply, or None and what is wrong with it."""
    found, problem = find_json(text, kinds=(dict,))
    if found is None:
        return None, problem
    data = found.value
    if "score" not in data:
        return None, 'the JSON object has no "score"'
    try:
        mark = float(data["score"])
    except (TypeError, ValueError):
        return None, f'"score" is {data["score"]!r}, not a number'
    if not 0 <= mark <= 10:
        return None, f'"score" is {mark:g}, outside 0 to 10'
    feedback = data.get("feedback", "")
    feedback = feedback if isinstance(feedback, str) else json.dumps(feedback)
    if feedback.strip().startswith("<what must change"):
        feedback = ""  # small models copy the prompt's placeholder: it is not feedback
    return (mark, feedback), ""


def judge_critic(arg: str | None) -> LLMJudge:
    """LLM self-critique: the run's model grades each answer 0-10 against a rubric.

    Argument: an optional rubric file (plain text). Without it, a general rubric
    (correct, complete, responsive, clear) is used.

    Examples:
        --critic judge
        --critic judge:rubric.txt
    """
    return LLMJudge.from_rubric_file(arg) if arg else LLMJudge()
