"""The run context: the meter's arithmetic, its one deadline, tallies and the run model."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

import redline
import redline.llm
from redline import context
from redline.context import Meter, Tally, current_meter, run_model, using_run_model
from redline.errors import BudgetExceeded
from redline.testing import ScriptedChat
from redline.types import Budget, Price, Usage


def test_the_old_homes_still_export_the_same_objects() -> None:
    for name in ("Meter", "Tally", "current_meter", "run_model", "using_run_model"):
        assert getattr(redline.llm, name) is getattr(context, name)
        assert name in redline.llm.__all__
    assert redline.Price is redline.llm.Price is Price
    # A static type (errors.py imports nothing at run time): the annotation names it.
    assert BudgetExceeded.__init__.__annotations__["limit"] == "BudgetLimit"


def test_importing_the_context_loads_no_client_or_graph_library() -> None:
    code = ("import sys, redline.context; "
            "print(sorted(m for m in ('langgraph', 'openai', 'httpx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_reserve_takes_numbers_and_clamps_max_tokens_to_what_is_left() -> None:
    meter = Meter(Budget(max_tokens=100), spent=Usage(input_tokens=30, output_tokens=10))
    first = meter.reserve(20, 1000)
    assert first.max_tokens == 40  # 100 - 40 spent - 20 prompt
    with pytest.raises(BudgetExceeded) as refused:
        meter.reserve(1, 10)  # everything left is reserved by the first call
    assert refused.value.limit == "max_tokens"
    meter.settle(first, Usage(input_tokens=20, output_tokens=5, llm_calls=1))
    assert meter.spent.total_tokens == 65
    assert meter.reserve(10, 1000).max_tokens == 25


def test_reserve_counts_calls_and_prices_the_worst_case() -> None:
    price = Price(input_per_mtok=1_000_000.0, output_per_mtok=2_000_000.0)  # $1 / $2 a token
    meter = Meter(Budget(max_cost_usd=10.0, max_llm_calls=2))
    reservation = meter.reserve(2, 100, price)
    assert reservation.max_tokens == 4  # ($10 - $2 of prompt) / $2 a token
    assert reservation.cost == pytest.approx(10.0)
    with pytest.raises(BudgetExceeded) as refused:
        meter.reserve(1, 1, price)
    assert refused.value.limit == "max_cost_usd"
    assert meter.reserve(1, 1).max_tokens == 1  # no price: no cost limit applies
    with pytest.raises(BudgetExceeded) as refused:
        meter.reserve(1, 1)
    assert refused.value.limit == "max_llm_calls"


async def test_the_deadline_ends_a_block_at_max_seconds_minus_the_margin() -> None:
    meter = Meter(Budget(max_seconds=10.0), elapsed=9.5, margin=0.4)
    with pytest.raises(BudgetExceeded) as late:
        async with meter.deadline():
            await asyncio.sleep(5)
    assert late.value.limit == "max_seconds"
    assert str(late.value) == "max_seconds: the run's 10 s ran out"
    assert meter.elapsed() < 9.5 + 1.0
    # Before any work, and before any call, the message is the same.
    for check in (meter.check_seconds, lambda: meter.reserve(1, 1)):
        with pytest.raises(BudgetExceeded) as early:
            check()
        assert str(early.value) == str(late.value)


async def test_a_timeout_inside_the_block_is_not_the_runs_deadline() -> None:
    meter = Meter(Budget(max_seconds=60.0))
    with pytest.raises(TimeoutError):
        async with meter.deadline():
            async with asyncio.timeout(0.01):
                await asyncio.sleep(1)


async def test_no_limit_means_no_deadline() -> None:
    meter = Meter(Budget())
    async with meter.deadline():
        await asyncio.sleep(0)
    assert meter.remaining_seconds() == float("inf")


async def test_a_model_call_past_the_deadline_stops_with_the_same_message() -> None:
    chat = ScriptedChat(["slow"], delay=5.0)
    meter = Meter(Budget(max_seconds=0.2))
    with meter.active(), Tally.scope() as tally, pytest.raises(BudgetExceeded) as late:
        await chat.complete([{"role": "user", "content": "hi"}])
    assert str(late.value) == "max_seconds: the run's 0.2 s ran out"
    # The call still counts, in the meter and in the tally.
    assert meter.spent.llm_calls == tally.usage.llm_calls == 1
    assert 0.2 <= meter.spent.seconds < 2.0


async def test_calls_are_counted_by_every_open_tally_and_the_meter() -> None:
    chat = ScriptedChat(["one two three", "four"], price=Price(output_per_mtok=1e6))
    messages = [{"role": "user", "content": "count to three"}]
    with Meter(Budget(max_tokens=100)).active() as meter, Tally.scope() as outer:
        assert current_meter() is meter
        await chat.complete(messages, max_tokens=10)  # type: ignore[arg-type]
        with Tally.scope() as inner:
            await asyncio.gather(chat.complete(messages))  # type: ignore[arg-type]
    assert current_meter() is None
    assert inner.usage.output_tokens == 1 and inner.usage.llm_calls == 1
    assert outer.usage.output_tokens == 4 and outer.usage.llm_calls == 2
    assert outer.usage.cost_usd == pytest.approx(4.0)
    assert meter.spent.total_tokens == outer.usage.total_tokens


async def test_the_run_model_is_set_for_the_block_and_its_tasks() -> None:
    chat = ScriptedChat()
    assert run_model() is None
    with using_run_model(chat):
        assert await asyncio.create_task(_run_model_in_task()) is chat
    assert run_model() is None


async def _run_model_in_task() -> object:
    return run_model()


def test_every_public_name_has_a_docstring() -> None:
    for name in context.__all__:
        assert getattr(context, name).__doc__, f"redline.context.{name} has no docstring"


def test_run_scope_sets_the_meter_model_and_a_tally_and_restores_them() -> None:
    from redline.context import RunScope, record_usage
    from redline.testing import ScriptedChat
    from redline.types import Budget, Usage

    outer_meter, model = Meter(Budget()), ScriptedChat()
    with Tally.scope() as outer:
        with RunScope(outer_meter, model) as tally:
            assert current_meter() is outer_meter and run_model() is model
            record_usage(Usage(llm_calls=1, input_tokens=5))
        assert current_meter() is None and run_model() is None
        record_usage(Usage(llm_calls=1))
    assert tally.usage.llm_calls == 1 and tally.usage.input_tokens == 5
    assert outer.usage.llm_calls == 2  # the enclosing tally counted both
