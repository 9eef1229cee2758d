"""The tests a code task carries, whichever kind it has (Self-Debug's default critic).

`TaskTestsCritic` judges each task by the first of:

1. the task's ``metadata["tests"]`` (a benchmark's tests), run as `PythonTestsCritic`;
2. the examples of its prompt, or of the draft given to improve (``>>>`` examples, else
   prose ones such as ``f(2) == 4``), run as `DoctestCritic`;
3. tests the model writes from the task alone (`GeneratedTestsCritic`, with CodeT's dual
   agreement when several drafts are judged together).

When the model cannot write usable tests (a small model often cannot), the task has
nothing to test against: the critique says so, scores the code on whether it loads, and
gives no verdict, rather than ending the run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

from redline.critics.base import Critic
from redline.critics.code_tests import DoctestCritic, PythonTestsCritic, task_has_examples
from redline.critics.generated_tests import GeneratedTestsCritic
from redline.errors import ConfigError, CriticError
from redline.feedback_sources.sandbox import Sandbox
from redline.llm import ChatModel
from redline.types import Candidate, Critique, Task

__all__ = ["TaskTestsCritic", "tests_critic"]

log = logging.getLogger("redline.critics")

Source = Literal["metadata", "examples", "generated"]


class TaskTestsCritic(Critic):
    """Runs a task's own tests (metadata, examples) or, without any, generated ones.

    Args:
        model: the model that writes tests for tasks without any; default: the run's.
        name: the critic's name (its critiques carry it whatever the source).
        k: how many tests to generate.
        sandbox: where the code runs; default: the sandbox all critics share.
        timeout: wall-clock seconds for the code and all its tests.
        test_timeout: seconds for each test.
    """

    deterministic = False  # generated tests depend on the model

    def __init__(self, model: ChatModel | None = None, *, name: str = "tests", k: int = 5,
                 sandbox: Sandbox | None = None, timeout: float = 20.0,
                 test_timeout: float = 3.0) -> None:
        self.name = name
        limits = {"name": name, "sandbox": sandbox, "timeout": timeout,
                  "test_timeout": test_timeout}
        self.given = PythonTestsCritic(**limits)  # type: ignore[arg-type]
        self.examples = DoctestCritic(**limits)  # type: ignore[arg-type]
        self.generated = GeneratedTestsCritic(model, k=k, **limits)  # type: ignore[arg-type]

    @staticmethod
    def source(task: Task) -> Source:
        """Which tests judge `task`."""
        if task.metadata.get("tests"):
            return "metadata"
        if task_has_examples(task):
            return "examples"
        return "generated"

    async def critique(self, task: Task, candidate: Candidate) -> Critique:
        return (await self.critique_many(task, [candidate]))[0]

    async def critique_many(self, task: Task, candidates: Sequence[Candidate]
                            ) -> list[Critique]:
        source = self.source(task)
        if source == "metadata":
            return await self.given.critique_many(task, candidates)
        if source == "examples":
            return await self.examples.critique_many(task, candidates)
        try:
            return await self.generated.critique_many(task, candidates)
        except CriticError as exc:
            log.info("no generated tests for task %s: %s", task.id, exc)
            loads = await self.examples.critique_many(task, candidates)  # no examples: loads?
            note = (f"no tests: the task has none and the model wrote no usable ones "
                    f"({exc}); only checked that the code loads")
            return [c.model_copy(update={"passed": False if c.passed is False else None,
                                         "evidence": {**c.evidence, "note": note}})
                    for c in loads]


def tests_critic(arg: str | None) -> TaskTestsCritic:
    """The task's own tests (metadata, examples), else K tests the model writes.

    Argument: K, how many tests to generate for a task that carries none (default 5).
    Tests come from each task's ``metadata["tests"]``, else the examples of its prompt
    or of the draft given with -f (``>>>`` examples, else prose ones of the function,
    such as ``f(2) == 4`` or ``f(2) ➞ 4``), else the model writes them from the task
    alone; when it cannot, the code is only checked to load (no verdict).

    Examples:
        --critic tests
        --critic tests:8
    """
    if arg is None or not arg.strip():
        return TaskTestsCritic()
    try:
        k = int(arg)
    except ValueError:
        k = 0
    if k < 1:
        raise ConfigError(f"critic 'tests': K must be a whole number >= 1, got {arg!r}")
    return TaskTestsCritic(k=k)
