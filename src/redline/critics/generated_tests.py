"""Tests written by the model from the task alone (Reflexion's and CodeT's critic).

Many tasks carry no tests: 44 of 82 HumanEval problems have no doctest example, and a
draft that merely runs is not a correct one. This critic asks the model for `k` unit
tests from the task's prompt — never from a candidate, so a candidate cannot lead the
tests — and runs them against each candidate's code in the sandbox, as
`PythonTestsCritic` does. The tests are made once per task (keyed by task id) and kept,
so every candidate of a task is judged by the same tests.

Generated tests can be wrong. A test that every candidate judged so far failed (once at
least two candidates whose code loads have been judged) is flagged as *suspect*: listed
in ``evidence["suspect"]`` and left out of the score and the feedback. Flags can only be
added as more candidates are judged, so earlier critiques (cached by the loop) may still
count a test that later became suspect.

When several candidates are judged together (``n > 1`` drafts), the score uses CodeT's
dual agreement (Chen et al. 2023): with ``P(x)`` the counted tests that candidate ``x``
passes and ``S(x)`` the candidates that pass exactly the same tests,
``dual(x) = |S(x)| * |P(x)|`` and ``score(x) = dual(x) / max_y dual(y)`` (0 when no
candidate passes anything). A candidate that agrees with many others on passing many
tests ranks first; ``passed`` stays "every counted test passed". One candidate at a
time (a revision) is scored by its pass fraction.
"""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from redline._aio import gather_all
from redline.critics._ask import Fence, ask_json, critic_model
from redline.critics._json import find_json
from redline.critics._per_task import PerTask
from redline.critics.base import Critic
from redline.critics.code_tests import entry_point, report_critique
from redline.errors import ConfigError, CriticError
from redline.feedback_sources.code import extract_python
from redline.feedback_sources.python_tests import TestReport, TestSuite, run_tests
from redline.feedback_sources.sandbox import Sandbox, default_sandbox
from redline.llm import ChatModel, Message
from redline.prompts import render
from redline.types import Candidate, Critique, Task

__all__ = ["GeneratedTestsCritic", "gentests_critic", "parse_tests"]

_TESTS_SCHEMA: dict[str, Any] = {
    "title": "tests", "type": "object", "additionalProperties": False,
    "required": ["tests"],
    "properties": {"tests": {"type": "array", "items": {"type": "string"}}},
}


@dataclass
class _TaskTests:
    """One task's generated tests and what each candidate judged so far passed."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    suite: TestSuite | None = None
    outcomes: dict[str, dict[str, bool]] = field(default_factory=dict)
    """By candidate id: each test's name and whether it passed."""

    def suspects(self) -> frozenset[str]:
        """Tests failed by every candidate seen, once two or more have been."""
        if len(self.outcomes) < 2:
            return frozenset()
        seen: dict[str, bool] = {}
        for outcomes in self.outcomes.values():
            for name, passed in outcomes.items():
                seen[name] = seen.get(name, False) or passed
        return frozenset(name for name, passed in seen.items() if not passed)


class GeneratedTestsCritic(Critic):
    """Runs model-written unit tests (from the task alone) against the candidate's code.

    Args:
        model: the chat model that writes the tests; None uses the run's model.
        k: how many tests to ask for (and keep at most).
        name: the critic's name.
        sandbox: where the code runs; default: the sandbox all critics share.
        timeout: wall-clock seconds for the code and all its tests.
        test_timeout: seconds for each test.
        agreement: score several candidates judged together by dual agreement.
        max_tokens: the token limit of the tests' reply.
        cache_size: tasks whose tests are kept (least recently used go first).
        max_feedback_chars: the feedback's length limit.
        json_mode: send the reply's JSON schema to the server (``response_format`` in
            the server's dialect); off, the format is asked for in the prompt only.
    """

    def __init__(self, model: ChatModel | None = None, *, k: int = 5, name: str = "gentests",
                 sandbox: Sandbox | None = None, timeout: float = 20.0,
                 test_timeout: float = 3.0, agreement: bool = True, max_tokens: int = 800,
                 cache_size: int = 1024, max_feedback_chars: int = 3000,
                 json_mode: bool = True) -> None:
        if k < 1:
            raise ConfigError(f"critic {name!r}: k must be at least 1, got {k}")
        self.model = model
        self.k = k
        self.name = name
        self.sandbox = sandbox
        self.timeout = timeout
        self.test_timeout = test_timeout
        self.agreement = agreement
        self.max_tokens = max_tokens
        self.cache_size = cache_size
        self.max_feedback_chars = max_feedback_chars
        self.json_mode = json_mode
        self._tasks: PerTask[_TaskTests] = PerTask(_TaskTests, cache_size)

    def _state(self, task: Task) -> _TaskTests:
        return self._tasks.get(task.id)

    async def tests_for(self, task: Task) -> TestSuite:
        """The task's tests: written by the model on first use, then kept.

        Raises:
            ConfigError: no model (none given, and not inside a run).
            CriticError: the model gave no usable tests, even when asked again.
        """
        state = self._state(task)
        async with state.lock:  # candidates judged concurrently share one generation
            if state.suite is None:
                state.suite = await self._generate(task)
            return state.suite

    async def _generate(self, task: Task) -> TestSuite:
        model = critic_model(self)
        entry = entry_point(task)
        target = f"`{entry}`" if entry else "the function the task asks for"
        fence = Fence.new("TASK")
        messages: list[Message] = [
            {"role": "system", "content": render("gentests_system")},
            {"role": "user", "content": render(
                "gentests_user", k=self.k, target=target, open=fence.opening,
                close=fence.closing, task=fence.quote(task.prompt.strip()))}]
        def parse(text: str) -> tuple[str | None, str]:
            source = parse_tests(text, self.k)
            return (source, "") if source else (None, "no assert statement found")

        try:
            source = await ask_json(
                model, messages, parse=parse,
                reask=lambda problem: render("gentests_reask", k=self.k, problem=problem),
                schema=_TESTS_SCHEMA if self.json_mode else None,
                max_tokens=self.max_tokens, critic=self.name, what="tests")
        except CriticError as exc:
            raise CriticError(f"critic {self.name!r}: model {model.model!r} wrote no usable "
                              f"tests for task {task.id!r}: {exc}", critic=self.name) from exc
        return TestSuite.from_source(source, entry_point=entry)

    async def critique(self, task: Task, candidate: Candidate) -> Critique:
        return (await self.critique_many(task, [candidate]))[0]

    async def critique_many(self, task: Task, candidates: Sequence[Candidate]) -> list[Critique]:
        """Judge candidates by the task's tests; several at once by dual agreement."""
        suite = await self.tests_for(task)
        sandbox = self.sandbox or default_sandbox()
        reports = await gather_all(*(
            run_tests(sandbox, extract_python(c.text), suite, timeout=self.timeout,
                      test_timeout=self.test_timeout) for c in candidates))
        state = self._state(task)
        for candidate, report in zip(candidates, reports, strict=True):
            if not report.error and not report.tampering:  # says nothing about the tests
                state.outcomes[candidate.id] = {o.name: o.passed for o in report.outcomes}
        suspects = state.suspects()
        reports = [replace(r, suspects=suspects) for r in reports]
        duals = _dual_agreement(reports) \
            if self.agreement and len(candidates) > 1 and any(r.total for r in reports) \
            else None
        critiques = []
        for i, report in enumerate(reports):
            extra: dict[str, Any] = {"generated": suite.names, "suspect": sorted(suspects)}
            score = raw = None
            if duals is not None:
                score, raw, extra["agreement"] = duals[i]
            critiques.append(report_critique(self.name, report, score=score, raw=raw,
                                             max_feedback_chars=self.max_feedback_chars,
                                             evidence=extra))
        return critiques


def _dual_agreement(reports: list[TestReport]) -> list[tuple[float, float, dict[str, int]]]:
    """CodeT's dual agreement of each report: (score, dual, its terms); see the module."""
    passing = [frozenset() if r.tampering else frozenset(o.name for o in r.counted if o.passed)
               for r in reports]
    duals = []
    for mine in passing:
        consensus = sum(other == mine for other in passing)
        duals.append((consensus, len(mine), consensus * len(mine)))
    best = max(d for _, _, d in duals)
    return [(d / best if best else 0.0, float(d),
             {"consensus": c, "tests_passed": p, "candidates": len(reports)})
            for c, p, d in duals]


def parse_tests(text: str, k: int) -> str:
    """The first `k` tests in a model's reply, as a tests module ("" when none).

    The reply is a JSON object ``{"tests": ["assert ...", ...]}`` (what the critic asks
    for) or Python code, fenced or not. Kept: top-level ``assert`` statements,
    ``test_*`` functions and imports. Everything
    else (a solution the model wrote anyway, helpers, prints) is dropped, so that the
    tests can only call the candidate's code. When the code does not parse, each line
    that is an ``assert`` statement by itself is used.
    """
    found, _ = find_json(text, kinds=(dict,))
    listed = found.value.get("tests") if found is not None else None
    if isinstance(listed, list) and all(isinstance(t, str) for t in listed):
        code = "\n".join(t.strip() for t in listed)
    else:
        code = extract_python(text)
    try:
        body = ast.parse(code).body
    except SyntaxError:
        body = []
        for line in code.splitlines():
            if line.strip().startswith("assert"):
                try:
                    body += ast.parse(line.strip()).body
                except SyntaxError:
                    continue
    kept: list[ast.stmt] = []
    tests = 0
    for node in body:
        is_test = isinstance(node, ast.Assert) or (
            isinstance(node, ast.FunctionDef) and node.name.startswith("test"))
        if is_test and tests < k:
            kept.append(node)
            tests += 1
        elif isinstance(node, ast.Import | ast.ImportFrom):
            kept.append(node)
    return "\n".join(ast.unparse(n) for n in kept) + "\n" if tests else ""


def gentests_critic(arg: str | None) -> GeneratedTestsCritic:
    """Unit tests written by the run's model from the task alone, run in the sandbox.

    Argument: how many tests to write (default 5). The tests are written once per task
    and never see a candidate; tests that every candidate fails are flagged as suspect
    and not counted; several drafts (``-n``) are scored by CodeT's dual agreement.

    Examples:
        --critic gentests
        --critic gentests:8
    """
    if not arg:
        return GeneratedTestsCritic()
    try:
        k = int(arg)
    except ValueError:
        raise ConfigError(f"critic 'gentests': the argument is the number of tests, "
                          f"got {arg!r}") from None
    return GeneratedTestsCritic(k=k)
