"""A Python program computes the answer, and the candidate's answer is checked against it
(CRITIC's interpreter tool).

CRITIC (Gou et al. 2024, "CRITIC: Large Language Models Can Self-Correct with
Tool-Interactive Critiquing") verifies mathematical answers by executing code in a
Python interpreter rather than by asking the model whether the answer looks right. Here
the model writes a short program that computes the answer to the task's question from
the question alone — never from a candidate, so that a candidate cannot lead it — and
the program runs in the sandbox. The answer the candidate states (`final_answer`) is
compared with the program's last line of output (`same_answer`: numbers with a
tolerance):

- they agree: score 1, ``passed=True``, no feedback;
- they disagree: score 0, ``passed=False``, feedback naming both answers, with the
  program and its output, so that the reviser can find which one is wrong;
- no verdict — the program failed (an error, a timeout, no output) or the candidate
  states no answer: score `NO_VERDICT_SCORE` (0.5), ``passed=None``, feedback and
  ``evidence["reason"]`` saying why. A broken verifier neither punishes nor rewards.

The program is written and run once per task (keyed by task id) and its result kept,
so every candidate of a task is checked against the same computation.
"""

from __future__ import annotations

import ast
import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from redline.critics._ask import Fence, ask_json, critic_model
from redline.critics._per_task import PerTask
from redline.critics.base import Critic
from redline.errors import ConfigError, CriticError
from redline.feedback_sources.answers import final_answer, same_answer
from redline.feedback_sources.code import extract_python
from redline.feedback_sources.sandbox import Sandbox, SandboxResult, default_sandbox
from redline.llm import ChatModel, Message
from redline.prompts import render
from redline.types import Candidate, Critique, Task

__all__ = ["NO_VERDICT_SCORE", "InterpreterCritic", "interpreter_critic", "parse_program"]

log = logging.getLogger("redline.critics")

NO_VERDICT_SCORE = 0.5
"""The score when the check could not run (the program failed, or the candidate states
no answer): neither right nor wrong, so half-way."""

_NUMBER = re.compile(r"\d+(?:[.,/]\d+)*")


@dataclass
class _Verification:
    """One task's program and how its run ended (made once, under the lock)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    done: bool = False
    program: str = ""
    run: SandboxResult | None = None
    expected: str | None = None
    """The program's answer: its last line of output (None: no usable result)."""
    problem: str = ""
    """Why there is no usable result ("" when there is one)."""


class InterpreterCritic(Critic):
    """Checks the candidate's final answer against a model-written program's result.

    Args:
        model: the chat model that writes the program; None uses the run's model.
        name: the critic's name.
        sandbox: where the program runs; default: the sandbox all critics share.
        timeout: wall-clock seconds for the program.
        max_tokens: the token limit of the program's reply.
        cache_size: tasks whose program and result are kept (least recently used go
            first).
        max_feedback_chars: the feedback's length limit.
    """

    def __init__(self, model: ChatModel | None = None, *, name: str = "interpreter",
                 sandbox: Sandbox | None = None, timeout: float = 10.0,
                 max_tokens: int = 600, cache_size: int = 1024,
                 max_feedback_chars: int = 2000) -> None:
        if timeout <= 0:
            raise ConfigError(f"critic {name!r}: timeout must be > 0 seconds, got {timeout}")
        self.model = model
        self.name = name
        self.sandbox = sandbox
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.cache_size = cache_size
        self.max_feedback_chars = max_feedback_chars
        self._tasks: PerTask[_Verification] = PerTask(_Verification, cache_size)

    def _state(self, task: Task) -> _Verification:
        return self._tasks.get(task.id)

    async def _verification(self, task: Task) -> _Verification:
        """The task's program and its result: made and run on first use, then kept."""
        state = self._state(task)
        async with state.lock:  # candidates judged concurrently share one program
            if not state.done:
                await self._verify(task, state)
                state.done = True
        return state

    async def _verify(self, task: Task, state: _Verification) -> None:
        model = critic_model(self)
        fence = Fence.new("QUESTION")
        messages: list[Message] = [
            {"role": "system", "content": render("interpreter_system")},
            {"role": "user", "content": render(
                "interpreter_user", open=fence.opening, close=fence.closing,
                task=fence.quote(task.prompt.strip()))}]
        try:
            state.program = await ask_json(
                model, messages, parse=parse_program,
                reask=lambda problem: render("interpreter_reask", problem=problem),
                schema=None, max_tokens=self.max_tokens, critic=self.name, what="program")
        except CriticError as exc:
            # The verifier is broken, not the candidate: no verdict rather than an error.
            log.warning("critic %r: no program for task %r: %s", self.name, task.id, exc)
            state.problem = f"the model wrote no usable program ({exc})"
            return
        run = state.run = await (self.sandbox or default_sandbox()).run(
            state.program, timeout=self.timeout)
        lines = [line.strip() for line in run.stdout.splitlines() if line.strip()]
        if run.timed_out:
            state.problem = f"the program did not finish within {self.timeout:g} s"
        elif run.exit_code != 0:
            error = run.stderr.strip().splitlines()[-1:] or [f"exit status {run.exit_code}"]
            state.problem = f"the program failed: {error[0][:300]}"
        elif not lines:
            state.problem = "the program printed nothing"
        else:
            state.expected = _program_answer(lines[-1])

    async def critique(self, task: Task, candidate: Candidate) -> Critique:
        state = await self._verification(task)
        stated = final_answer(candidate.text)
        evidence: dict[str, Any] = {
            "program": state.program, "answer": stated, "expected": state.expected,
            "stdout": _tail(state.run.stdout, 1000) if state.run else "",
            "stderr": _tail(state.run.stderr, 1000) if state.run else "",
            "exit_code": state.run.exit_code if state.run else None,
            "timed_out": state.run.timed_out if state.run else False}
        if state.expected is None or stated is None:
            reason = state.problem or "the answer states no final answer"
            feedback = (f"The answer could not be checked by computation: {reason}. This "
                        "says nothing about whether it is right.")
            if stated is None:
                feedback += " State the final answer plainly at the end (\"The answer is X.\")."
            return Critique(critic=self.name, score=NO_VERDICT_SCORE, passed=None,
                            feedback=feedback, evidence={**evidence, "reason": reason})
        if same_answer(stated, state.expected):
            return Critique(critic=self.name, score=1.0, passed=True, evidence=evidence)
        return Critique(critic=self.name, score=0.0, passed=False, evidence=evidence,
                        feedback=self._disagreement(stated, state))

    def _disagreement(self, stated: str, state: _Verification) -> str:
        """Both answers, the program and its output, within `max_feedback_chars`."""
        head = (f"The answer's final answer is {stated}, but a Python program written "
                f"independently from the question computes {state.expected}. Recheck each "
                "step of the answer against the program (the program can be wrong too).")
        output = _tail(state.run.stdout if state.run else "", 400)
        room = max(self.max_feedback_chars - len(head) - len(output) - 60, 200)
        program = state.program if len(state.program) <= room \
            else state.program[:room].rstrip() + "\n# ... (cut)"
        return f"{head}\nProgram:\n```python\n{program}\n```\nIts output:\n```\n{output}\n```"


def parse_program(text: str) -> tuple[str | None, str]:
    """A model's reply → ``(program, "")``, or ``(None, problem)`` when it is unusable.

    The program is the reply's Python (its ``python`` fenced block, or the whole reply);
    it must parse and print something.
    """
    program = extract_python(text).strip()
    if not program:
        return None, "no code found"
    try:
        tree = ast.parse(program)
    except SyntaxError as exc:
        return None, f"the program does not parse: {exc.msg} (line {exc.lineno})"
    prints = any((isinstance(node, ast.Name) and node.id == "print")
                 or (isinstance(node, ast.Attribute) and node.attr == "write")
                 for node in ast.walk(tree))
    if not prints:
        return None, "the program prints nothing: print the final answer"
    return program + "\n", ""


def _program_answer(line: str) -> str:
    """The answer in a program's last line: the line, or its one number when it has one
    and more ("18 dollars", "Answer: 18")."""
    if len(_NUMBER.findall(line)) == 1:
        return final_answer(line) or line
    return line


def _tail(text: str, limit: int) -> str:
    """The end of `text`, at most `limit` characters."""
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def interpreter_critic(arg: str | None) -> InterpreterCritic:
    """The answer checked against a Python program that computes it (CRITIC's verifier).

    Argument: the program's timeout in seconds (default 10). The run's model writes a
    program from the task's question alone (never seeing a candidate), once per task;
    it runs in the sandbox and the candidate's final answer is compared with the
    program's last line of output. A program that fails or prints nothing, or an answer
    that states none, gives no verdict (score 0.5).

    Examples:
        --critic interpreter
        --critic interpreter:30
    """
    if not arg:
        return InterpreterCritic()
    try:
        timeout = float(arg)
    except ValueError:
        raise ConfigError(f"critic 'interpreter': the argument is the program's timeout in "
                          f"seconds, got {arg!r}") from None
    return InterpreterCritic(timeout=timeout)
