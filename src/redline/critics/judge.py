"""The LLM judge: self-critique against a rubric, as a JSON verdict."""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Any

from redline._files import read_config_text
from redline.agents._prompts import render
from redline.critics._json import find_json
from redline.critics.base import Critic
from redline.errors import ConfigError, CriticError
from redline.llm._base import ChatModel, Message, run_model
from redline.types import Candidate, Critique, Task

__all__ = ["LLMJudge", "judge_critic"]

log = logging.getLogger("redline.critics")

class LLMJudge(Critic):
    """Grades a candidate against a rubric with a chat model (Self-Refine's feedback step).

    The candidate is fenced between random markers and the model is told that it is
    untrusted data, so text inside it cannot dictate the verdict. The model answers
    ``{"score": 0-10, "feedback": "..."}``; an unusable reply is re-asked once, then
    the judge raises `CriticError`.

    Args:
        model: the chat model; None uses the model the run generates with.
        rubric: what a good answer is; a default general rubric otherwise.
        name: the critic's name.
        max_tokens: the verdict's token limit.
        json_mode: ask the server for a JSON object (``response_format``); turn off
            for servers that reject it.
    """

    def __init__(self, model: ChatModel | None = None, *, rubric: str | None = None,
                 name: str = "judge", max_tokens: int = 300, json_mode: bool = True) -> None:
        self.model = model
        self.rubric = rubric.strip() if rubric else render("judge_rubric")
        self.name = name
        self.max_tokens = max_tokens
        self.json_mode = json_mode

    @classmethod
    def from_rubric_file(cls, path: str | Path, **kwargs: Any) -> LLMJudge:
        """A judge whose rubric is read from a text file."""
        return cls(rubric=read_config_text(path, "rubric file"), **kwargs)

    async def critique(self, task: Task, candidate: Candidate) -> Critique:
        model = self.model or run_model()
        if model is None:
            raise ConfigError(f"critic {self.name!r} has no model: pass LLMJudge(model=...) "
                              "or run it inside refine()")
        marker = secrets.token_hex(4)
        opening, closing = f"<<<ANSWER-{marker}", f"ANSWER-{marker}>>>"
        messages: list[Message] = [
            {"role": "system", "content": render("judge_system")},
            {"role": "user", "content": render(
                "judge_user", task=task.prompt, rubric=self.rubric, open=opening,
                close=closing, answer=candidate.text.replace(closing, ""))},
        ]
        response_format = {"type": "json_object"} if self.json_mode else None
        for attempt in (1, 2):
            completion = await model.complete(messages, max_tokens=self.max_tokens,
                                               temperature=0.0, response_format=response_format)
            verdict, problem = _parse(completion.text)
            if verdict is not None:
                mark, feedback = verdict
                return Critique(critic=self.name, score=mark / 10, raw=mark,
                                feedback=feedback,
                                evidence={"rubric": self.rubric})
            log.info("judge %r: unusable verdict (attempt %d): %s", self.name, attempt, problem)
            messages = [*messages, {"role": "assistant", "content": completion.text},
                        {"role": "user", "content": render("judge_reask", problem=problem)}]
        raise CriticError(
            f"judge {self.name!r}: model {model.model!r} gave no usable verdict after 2 tries "
            f"({problem}); last reply: {completion.text[:200]!r}", critic=self.name)


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
