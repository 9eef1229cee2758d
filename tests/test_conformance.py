"""`redline.testing.check_critic` finds each kind of contract breach."""

from __future__ import annotations

import asyncio
import itertools

import pytest

import redline
from redline import Critic, Critique, critic
from redline.testing import acheck_critic, check_critic

SAMPLES = ["short", "a somewhat longer answer", ("Name a colour", "blue")]


def test_a_good_critic_passes() -> None:
    @critic
    def short(text: str) -> bool:
        "Keep it under 10 characters."
        return len(text) < 10

    report = check_critic(short, SAMPLES)
    assert report.ok and report.concurrent_calls == 32
    assert [c.passed for c in report.critiques] == [True, False, True]


def test_a_falsely_deterministic_critic_is_caught() -> None:
    counter = itertools.count()

    @critic(deterministic=True)
    def drifting(text: str) -> float:
        return (next(counter) % 7) / 7

    with pytest.raises(AssertionError, match="declared deterministic but judged"):
        check_critic(drifting, SAMPLES)


def test_a_bare_exception_is_caught() -> None:
    class Crashy(Critic):
        name = "crashy"

        async def critique(self, task, candidate) -> Critique:
            raise KeyError("missing")

    with pytest.raises(AssertionError, match=r"raised KeyError: 'missing'; a broken critic "
                                             r"must raise a redline error"):
        check_critic(Crashy(), SAMPLES)


def test_wrong_name_and_silent_failure_are_caught() -> None:
    class Sloppy(Critic):
        name = "sloppy"

        async def critique(self, task, candidate) -> Critique:
            return Critique(critic="other", score=0.0, passed=False)

    report = check_critic(Sloppy(), SAMPLES, raise_on_problem=False)
    assert any("names critic 'other'" in p for p in report.problems)
    assert any("without feedback" in p for p in report.problems)


async def test_shared_state_under_concurrency_is_caught() -> None:
    class Racy(Critic):
        name = "racy"
        deterministic = True

        def __init__(self) -> None:
            self.current = ""

        async def critique(self, task, candidate) -> Critique:
            self.current = candidate.text          # shared across concurrent calls
            await asyncio.sleep(0.001)
            return Critique(critic=self.name, score=min(1.0, len(self.current) / 30))

    report = await acheck_critic(Racy(), SAMPLES, raise_on_problem=False)
    assert any("not safe under concurrency" in p for p in report.problems)


async def test_sync_check_refuses_inside_a_running_loop() -> None:
    with pytest.raises(redline.ConfigError, match="use `await acheck_critic"):
        check_critic(critic(lambda t: 1.0), SAMPLES)


def test_check_critic_warns_about_a_gate_that_can_never_fail() -> None:
    from redline import critic
    from redline.testing import GateWarning, check_critic

    @critic(gate=True, pass_mark=0.0)
    def lenient(text: str) -> float:
        return 0.0 if "TODO" in text else 1.0

    with pytest.warns(GateWarning, match="can never fail"):
        report = check_critic(lenient, ["done", "x TODO"])
    assert report.ok and report.warnings


def test_check_critic_warns_about_a_gate_that_rejected_no_sample() -> None:
    from redline import critic
    from redline.testing import GateWarning, check_critic

    @critic(gate=True)
    def no_todo(text: str) -> tuple[float, str]:
        return (0.0, "remove the TODO") if "TODO" in text else (1.0, "")

    with pytest.warns(GateWarning, match="failed none of the samples"):
        check_critic(no_todo, ["done", "also done"])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", GateWarning)
        report = check_critic(no_todo, ["done", "x TODO"])  # a score-returning gate can fail
    assert report.warnings == []
