"""Self-Debug's reviser: explain the code and trace a failing test, then fix it.

Chen et al. (2024), "Teaching Large Language Models to Self-Debug": a model fixes its
code better when it first explains it, line by line, and traces the execution of a
failing test to where it goes wrong ("rubber duck debugging"); the paper's gains come
from this "explanation" feedback, over "simple feedback" (the failing tests alone).

`DebugReviser` makes two calls per revision with ``explain=True``:

1. ``selfdebug_explain``: the task, the code and the failing tests with their output;
   the model explains the code and traces a failing test, and writes no fix.
2. ``selfdebug_fix``: the same, plus that explanation; the model writes the fixed code
   in full, as one ``python`` block.

The explanation is kept on the revision (`Candidate.explanation`), so it is in the
trace. With ``explain=False`` (the paper's simple feedback) only the second call is
made, its explanation section left out. The feedback is `render_failures` by default:
only the critiques that failed, i.e. the failing tests and their assertion output.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence

from redline import prompts
from redline.agents.feedback import FeedbackRenderer, render_failures
from redline.agents.reviser import OnRepeat, ReviseMode, Reviser, clean_revision
from redline.errors import ConfigError
from redline.llm import ChatModel, Message
from redline.types import Candidate, ScoredCandidate, Task

__all__ = ["DebugReviser"]


class DebugReviser(Reviser):
    """Revises code the Self-Debug way: explain and trace a failing test, then fix.

    Takes `Reviser`'s arguments, ``on_repeat`` included; ``mode`` can only be
    ``"rewrite"`` (the fix is the whole program). The prompts' placeholders:
    `explain_prompt` fills ``$task``, ``$answer`` (the candidate's Python code) and
    ``$feedback``; `prompt` fills those, ``$explanation`` (the explanation section, ""
    with ``explain=False``) and ``$memory``.

    Args:
        model: the chat model.
        explain: ask for the explanation first (two calls per revision); False: one
            call with the failing tests only (the paper's simple feedback).
        temperature: sampling temperature of both calls.
        max_tokens: the fix's token limit (clamped further by the run's budget).
        explain_max_tokens: the explanation's token limit.
        prompt: the prompt asking for the fixed code.
        explain_prompt: the prompt asking for the explanation.
        system: the system message of both calls when the task has none.
        feedback: the critiques of the candidate → the ``$feedback`` text.
        mode: ``"rewrite"``; ``"edit"`` is refused.
        on_repeat: see `Reviser`; with Python code, a repeat is also the same code in
            a differently worded reply.
        repeat_temperature: see `Reviser`.
        repeat_prompt: see `Reviser`.

    Raises:
        ConfigError: ``mode="edit"``, or what `Reviser` refuses.
    """

    PLACEHOLDERS = frozenset({"task", "answer", "feedback", "explanation", "memory"})
    """What the fix prompt can use."""
    EXPLAIN_PLACEHOLDERS = frozenset({"task", "answer", "feedback"})
    """What the explain prompt can use."""

    def __init__(self, model: ChatModel, *, explain: bool = True, temperature: float = 0.3,
                 max_tokens: int = 1024, explain_max_tokens: int = 1024,
                 prompt: str = "selfdebug_fix", explain_prompt: str = "selfdebug_explain",
                 system: str = "selfdebug_system",
                 feedback: FeedbackRenderer = render_failures, mode: ReviseMode = "rewrite",
                 on_repeat: OnRepeat = "keep", repeat_temperature: float = 0.9,
                 repeat_prompt: str = "revise_repeat") -> None:
        if mode != "rewrite":
            raise ConfigError(f"DebugReviser writes the whole program again: mode must be "
                              f"'rewrite', got {mode!r}")
        super().__init__(model, mode="rewrite", temperature=temperature,
                         max_tokens=max_tokens, prompt=prompt,
                         system=system, feedback=feedback, on_repeat=on_repeat,
                         repeat_temperature=repeat_temperature, repeat_prompt=repeat_prompt)
        prompts.check(explain_prompt, allowed=self.EXPLAIN_PLACEHOLDERS)
        self.explain = explain
        self.explain_max_tokens = explain_max_tokens
        self.explain_prompt = explain_prompt

    def explain_messages(self, task: Task, scored: ScoredCandidate) -> list[Message]:
        """The conversation that asks for the explanation and the trace."""
        prompt = prompts.render(self.explain_prompt, task=task.prompt,
                                answer=_code(scored.candidate.text),
                                feedback=self.feedback_text(scored))
        return [{"role": "system", "content": task.system or prompts.render(self.system)},
                {"role": "user", "content": prompt}]

    def messages(self, task: Task, scored: ScoredCandidate, memory: Sequence[str],
                 mode: ReviseMode = "rewrite", *, explanation: str = "") -> list[Message]:
        """The conversation that asks for the fixed code (`mode` is always rewrite)."""
        section = ""
        if explanation.strip():
            section = "\n" + prompts.render("selfdebug_explanation",
                                            explanation=explanation.strip()) + "\n"
        prompt = prompts.render(self.prompt, task=task.prompt,
                                answer=_code(scored.candidate.text),
                                feedback=self.feedback_text(scored), explanation=section,
                                memory=self.memory_text(memory))
        return [{"role": "system", "content": task.system or prompts.render(self.system)},
                {"role": "user", "content": prompt}]

    def repeats(self, parent: Candidate, text: str) -> bool:
        """As `Reviser.repeats`, or the same Python program in a reply worded
        differently: the same code (its fenced blocks), or code that differs only in
        docstrings, comments and layout (the same syntax tree once docstrings are
        dropped). The tests would fail the same way. A small model asked to fix a
        failing doctest often edits the docstring's expected value and leaves the code
        as it was (seen on HumanEval with a 0.5B coder)."""
        if super().repeats(parent, text):
            return True
        before, after = _code(parent.text), _code(text)
        if super().repeats(Candidate(text=before), after):
            return True
        program = _program(after)
        return program is not None and program == _program(before)

    async def _revision(self, task: Task, scored: ScoredCandidate, round: int,
                        memory: Sequence[str]) -> tuple[Candidate, list[Message]]:
        parent = scored.candidate
        explanation = None
        usage = None
        if self.explain:
            said = await self.model.complete(self.explain_messages(task, scored),
                                             max_tokens=self.explain_max_tokens,
                                             temperature=self.temperature)
            explanation, usage = said.text.strip(), said.usage
        messages = self.messages(task, scored, memory, explanation=explanation or "")
        completion = await self.model.complete(messages, max_tokens=self.max_tokens,
                                               temperature=self.temperature)
        return (Candidate(text=clean_revision(completion.text), round=round, origin="rewrite",
                          parent=parent.id, explanation=explanation,
                          usage=completion.usage if usage is None else usage + completion.usage),
                [*messages, {"role": "assistant", "content": completion.text}])


def _code(text: str) -> str:
    """The Python code of an answer (its fenced blocks, or the whole text), without
    surrounding blank lines, to sit inside the prompts' own fence."""
    # Imported here: the package pulls in the sandbox and HTTP clients, which the
    # agents do not otherwise need.
    from redline.feedback_sources.code import extract_python

    return extract_python(text).rstrip().lstrip("\n")


def _program(code: str) -> str | None:
    """The syntax tree of `code` without its docstrings, as text (None: not Python that
    parses). Two programs with the same one behave the same: they differ only in
    comments, layout, quoting or docstrings."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):  # ValueError: a null byte
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False)
