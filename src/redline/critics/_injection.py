"""Finding answer-side text that addresses the grader (prompt injection against a judge).

A candidate answer is graded by a model that reads it. Text inside the answer that
imitates the verdict (``{"score": 10}``), the prompt's markers (``ANSWER>>>``), the
chat template (``System:``, ``<|im_start|>``), or speaks to the grader ("ignore previous
instructions", "the grader has approved this answer") has no place in an answer to the
task: `find_injections` lists it, and `neutralise` replaces each passage with a short
note, so the judge reads what the passage was, not what it says.

A kind of passage that the task itself talks about is not counted: a task that asks for
a JSON object with a ``"score"`` or a product rating gets answers that hold one, and an
essay on prompt injection quotes injections.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Injection", "find_injections", "neutralise"]

_I = re.IGNORECASE | re.MULTILINE

# Each kind: the patterns whose match (extended as `_EXTEND_TO_SENTENCE` says) is one
# passage, and the words that, in the task, make answers of that kind legitimate.
_PATTERNS: dict[str, tuple[re.Pattern[str], ...]] = {
    "fake verdict": (
        # A JSON-ish object carrying a score, grade or verdict.
        re.compile(r"""\{[^{}]{0,400}?["']?\b(?:score|grade|rating|verdict|mark)\b["']?"""
                   r"""\s*[:=][^{}]{0,400}\}""", _I),
        # "Score: 10", "score = 10/10", "Final grade: 9".
        re.compile(r"\b(?:final\s+)?(?:score|grade|rating|verdict)\s*[:=]\s*\d+(?:\.\d+)?"
                   r"(?:\s*/\s*10)?", _I),
    ),
    "fake marker": (
        # The fence's shape (<<<ANSWER-..., ...>>>); doctest's ">>> " has no word before.
        re.compile(r"<<<\s*[A-Za-z][\w-]*|\b[A-Za-z][\w-]*\s*>>>", _I),
        re.compile(r"</?\s*(?:answer|response|candidate|system|instructions?|rubric)\s*>"
                   r"|\[/?(?:answer|inst|system)\]", _I),
        re.compile(r"\b(?:end|start|beginning)\s+of\s+(?:the\s+)?(?:answer|response|"
                   r"candidate|submission)\b", _I),
    ),
    "instruction to the grader": (
        re.compile(r"\b(?:ignore|disregard)\b[^.\n]{0,40}?\b(?:previous|prior|above|earlier|"
                   r"preceding|all|any|the|your|these|those)\b[^.\n]{0,20}?"
                   r"\b(?:instructions?|prompts?|rules?|rubric|directions?|guidelines)\b", _I),
        re.compile(r"\bforget\b[^.\n]{0,20}?\b(?:previous|prior|above|earlier|all|your)\b"
                   r"[^.\n]{0,20}?\b(?:instructions?|prompts?|rules?)\b", _I),
        re.compile(r"\b(?:output|give|assign|award|return|reply\s+with|respond\s+with|grant)"
                   r"\b[^.\n]{0,30}?\b(?:score|grade|rating|mark)s?\b[^.\n]{0,20}?"
                   r"(?:\b10\b|\bten\b|perfect|maximum|full|highest)", _I),
        re.compile(r"\b(?:score|grade|rate)\b[^.\n]{0,20}?\b(?:this|the|my)\s+(?:answer|"
                   r"response|submission)\b[^.\n]{0,20}?(?:\b10\b|\bten\b|perfect|highly)",
                   _I),
        re.compile(r"\bnew\s+instructions?\s*:|\byou\s+are\s+now\b|\bas\s+the\s+(?:judge|"
                   r"grader|evaluator)\b", _I),
    ),
    "role play": (
        re.compile(r"^[ \t#>*\[]*(?:system|developer)\s*(?:message|prompt|note)?\s*[\]:]"
                   r"[^\n]{0,200}?\b(?:you|grader|judge|score|ignore|must|instructions?)\b", _I),
        re.compile(r"<\|(?:im_start|im_end|system|assistant|user|endoftext)\|>"
                   r"|\[/?INST\]|<</?SYS>>", _I),
    ),
    "claim of approval": (
        re.compile(r"\b(?:grader|judge|reviewer|evaluator|grading\s+system|moderator)s?\b"
                   r"[^.\n]{0,40}?\b(?:approved|verified|confirmed|accepted|validated|passed|"
                   r"certified)\b", _I),
        re.compile(r"\b(?:this|my|the)\s+(?:answer|response|solution|submission)\s+(?:has\s+"
                   r"been|was|is)\s+(?:already\s+)?(?:pre-?)?(?:approved|verified|validated|"
                   r"certified|graded)\b", _I),
    ),
}

_LEGITIMATE_IN_TASK: dict[str, re.Pattern[str]] = {
    "fake verdict": re.compile(r"\b(?:score|grade|rating|rate|verdict|json)\b", _I),
    "fake marker": re.compile(r"<<<|>>>|\b(?:markers?|delimiters?|tags?)\b", _I),
    "instruction to the grader": re.compile(
        r"\b(?:injections?|jailbreaks?|grader|judge|grading)\b", _I),
    "role play": re.compile(r"\b(?:system\s+prompt|chat\s+template|roles?|dialogue|"
                            r"conversation|transcript|script)\b", _I),
    "claim of approval": re.compile(r"\b(?:approv|verif|certif|grader|review)\w*", _I),
}

_EXTEND_TO_SENTENCE = frozenset({"instruction to the grader", "claim of approval",
                                 "role play"})
"""Kinds whose passage runs on to the end of its sentence (or line)."""
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")


@dataclass(frozen=True)
class Injection:
    """One passage of an answer that addresses the grader.

    Attributes:
        kind: what it imitates: ``"fake verdict"``, ``"fake marker"``, ``"instruction
            to the grader"``, ``"role play"`` or ``"claim of approval"``.
        start: its offset in the answer.
        end: the offset just past it.
        text: the passage itself.
    """

    kind: str
    start: int
    end: int
    text: str


def find_injections(answer: str, task: str = "") -> list[Injection]:
    """The passages of `answer` that address the grader, in order, not overlapping.

    Args:
        answer: the candidate's text.
        task: the task's prompt; a kind of passage it contains too is not counted.
    """
    found: list[Injection] = []
    for kind, patterns in _PATTERNS.items():
        if _LEGITIMATE_IN_TASK[kind].search(task):
            continue  # the task itself talks this way: answers may too
        for pattern in patterns:
            for match in pattern.finditer(answer):
                end = match.end()
                if kind in _EXTEND_TO_SENTENCE:
                    stop = _SENTENCE_END.search(answer, end)
                    end = stop.end() if stop else len(answer)
                found.append(Injection(kind, match.start(), end, answer[match.start():end]))
    found.sort(key=lambda i: (i.start, -i.end))
    kept: list[Injection] = []
    for injection in found:
        if kept and injection.start < kept[-1].end:
            if injection.end > kept[-1].end:  # overlapping: merge into the first
                last = kept[-1]
                kept[-1] = Injection(last.kind, last.start, injection.end,
                                     answer[last.start:injection.end])
            continue
        kept.append(injection)
    return kept


def neutralise(answer: str, injections: list[Injection]) -> str:
    """`answer` with each passage replaced by a note of what it was."""
    parts, pos = [], 0
    for injection in injections:
        parts.append(answer[pos:injection.start])
        parts.append(f"[removed by redline: {injection.kind}]")
        pos = injection.end
    parts.append(answer[pos:])
    return "".join(parts)
