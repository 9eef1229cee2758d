"""`Runner`: one configuration, the preflight once and the graph compiled once, any
number of tasks (concurrently)."""

from __future__ import annotations

import asyncio

import pytest

from redline import Candidate, Critique, Task
from redline.critics.base import Critic
from redline.errors import ConfigError
from redline.testing import ScriptedChat
from redline.types import Budget, StopReason
from redline.workflows import RefineConfig, Runner


class Counting(Critic):
    name = "counting"

    def __init__(self, fail_first: bool = False) -> None:
        self.preflights = 0
        self.fail_first = fail_first

    async def preflight(self) -> None:
        self.preflights += 1
        await asyncio.sleep(0.01)
        if self.fail_first and self.preflights == 1:
            raise ConfigError("not ready yet")

    async def critique(self, task: Task, candidate: Candidate) -> Critique:
        return Critique(critic=self.name, score=1.0 if "good" in candidate.text else 0.2)


async def test_many_tasks_share_one_preflight_and_one_graph() -> None:
    critic = Counting()
    model = ScriptedChat(handler=lambda m: "good " + m[-1]["content"])
    runner = Runner(RefineConfig(model=model, critics=[critic]))
    graph = runner.graph
    results = await asyncio.gather(*(runner.run(Task(prompt=f"q{i}")) for i in range(5)))
    assert critic.preflights == 1 and runner.graph is graph
    assert sorted(r.text for r in results) == [f"good q{i}" for i in range(5)]
    assert all(r.stop_reason is StopReason.threshold for r in results)


async def test_a_failed_preflight_is_checked_again_on_the_next_run() -> None:
    critic = Counting(fail_first=True)
    runner = Runner(RefineConfig(model=ScriptedChat(["good"]), critics=[critic],
                                 budget=Budget(max_rounds=0)))
    with pytest.raises(ConfigError, match="not ready yet"):
        await runner.run("Q")
    assert (await runner.run("Q")).text == "good" and critic.preflights == 2
