"""One event loop per thread for the sync API, and per-loop state closed with its loop."""

from __future__ import annotations

import asyncio
import contextvars
import subprocess
import sys
import textwrap
import threading

import pytest

from redline._aio import PerLoop, run_sync

_var: contextvars.ContextVar[str] = contextvars.ContextVar("test_aio_var", default="unset")


class Resource:
    """A value that must be closed inside the loop that made it."""

    closed: list[Resource] = []

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()

    async def aclose(self) -> None:
        assert asyncio.get_running_loop() is self.loop, "closed outside its own loop"
        Resource.closed.append(self)


@pytest.fixture(autouse=True)
def _no_closed_resources() -> None:
    Resource.closed.clear()


async def _loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def test_run_sync_keeps_one_loop_per_thread() -> None:
    first, again = run_sync(_loop()), run_sync(_loop())
    assert first is again and not first.is_closed()
    other: list[asyncio.AbstractEventLoop] = []
    thread = threading.Thread(target=lambda: other.append(run_sync(_loop())))
    thread.start()
    thread.join()
    assert other[0] is not first


def test_run_sync_runs_in_a_copy_of_the_callers_context() -> None:
    async def read_then_set() -> str:
        seen = _var.get()
        _var.set("inside")
        return seen

    token = _var.set("caller")
    try:
        assert run_sync(read_then_set()) == "caller"
        assert _var.get() == "caller"  # what the coroutine set stays in its copy
    finally:
        _var.reset(token)


def test_run_sync_propagates_errors_and_the_loop_stays_usable() -> None:
    async def fail() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        run_sync(fail())
    assert run_sync(_loop()) is run_sync(_loop())


async def test_run_sync_refuses_to_run_inside_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="running event loop"):
        run_sync(_loop())


def test_per_loop_values_are_made_once_per_loop_and_closed_when_it_shuts_down() -> None:
    resources = PerLoop(Resource, close=Resource.aclose)

    async def use() -> Resource:
        value = resources.get()
        assert resources.get() is value and resources.current() is value
        return value

    first = asyncio.run(use())
    assert Resource.closed == [first]
    second = asyncio.run(use())
    assert second is not first and Resource.closed == [first, second]
    kept = run_sync(use())
    assert run_sync(use()) is kept  # the thread's loop keeps its value across calls
    assert kept not in Resource.closed


def test_aclose_closes_the_current_loops_value_and_the_next_get_makes_another() -> None:
    resources = PerLoop(Resource, close=Resource.aclose)

    async def cycle() -> tuple[Resource, Resource]:
        before = resources.get()
        await resources.aclose()
        assert resources.current() is None
        return before, resources.get()

    before, after = asyncio.run(cycle())
    assert before is not after
    assert Resource.closed == [before, after]  # `after` at the loop's shutdown


def test_values_of_a_loop_closed_without_shutdown_are_dropped() -> None:
    resources = PerLoop(Resource, close=Resource.aclose)
    loop = asyncio.new_event_loop()
    try:
        orphan = loop.run_until_complete(_get(resources))
    finally:
        loop.close()  # no shutdown_asyncgens: nothing can close it in its loop now
    asyncio.run(_get(resources))
    assert orphan not in Resource.closed
    assert loop not in resources._values


async def _get(values: PerLoop[Resource]) -> Resource:
    return values.get()


def test_per_loop_values_without_close_need_no_shutdown() -> None:
    locks = PerLoop(asyncio.Lock)

    async def lock() -> asyncio.Lock:
        async with locks.get():
            return locks.get()

    assert asyncio.run(lock()) is not asyncio.run(lock())


def run_script(code: str) -> subprocess.CompletedProcess[str]:
    # ResourceWarnings shown: an HTTP connection left to the garbage collector shows.
    return subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=120, check=False)


def assert_clean_exit(child: subprocess.CompletedProcess[str]) -> None:
    assert child.returncode == 0, child.stderr
    for sign in ("Traceback", "Event loop is closed", "unclosed", "Exception ignored"):
        assert sign not in child.stderr, child.stderr


def test_the_thread_loops_values_are_closed_at_interpreter_exit() -> None:
    child = run_script("""
        import asyncio
        from redline._aio import PerLoop, run_sync

        class Resource:
            async def aclose(self):
                assert asyncio.get_running_loop() is loop
                print("closed", flush=True)

        values = PerLoop(Resource, close=Resource.aclose)

        async def use():
            global loop
            loop = asyncio.get_running_loop()
            return values.get()

        assert run_sync(use()) is run_sync(use())
        print("done", flush=True)
    """)
    assert_clean_exit(child)
    assert child.stdout.split() == ["done", "closed"]


def test_no_unclosed_connections_at_exit_after_refine_and_arefine() -> None:
    child = run_script("""
        import asyncio
        import redline
        from redline.llm import OpenAIChat
        from redline.testing import OpenAICompatServer

        with OpenAICompatServer() as server:
            chat = OpenAIChat(server.model, base_url=server.url + "/v1")
            options = dict(model=chat, critics=[lambda text: 1.0],
                           budget=redline.Budget(max_rounds=0))
            for _ in range(2):
                assert redline.refine("Say hi.", **options).best is not None
            for _ in range(2):
                assert asyncio.run(redline.arefine("Say hi.", **options)).best is not None
            print(len(server.requests), flush=True)
    """)
    assert_clean_exit(child)
    assert child.stdout.split() == ["4"]  # one draft per run


def test_gc_frozen_freezes_once_for_nested_blocks_and_leaves_a_users_freeze_alone() -> None:
    import gc

    from redline._aio import gc_frozen

    assert gc.get_freeze_count() == 0
    with gc_frozen():
        frozen = gc.get_freeze_count()
        assert frozen > 0
        with gc_frozen():
            assert gc.get_freeze_count() == frozen  # not frozen again
        assert gc.get_freeze_count() == frozen  # the outer block still holds it
    assert gc.get_freeze_count() == 0
    gc.freeze()  # someone else's: not undone by a block
    try:
        theirs = gc.get_freeze_count()
        with gc_frozen():
            pass
        assert gc.get_freeze_count() == theirs
    finally:
        gc.unfreeze()


async def test_gather_all_awaits_one_awaitable_in_place_and_still_cancels_the_rest() -> None:
    from redline._aio import gather_all

    async def where() -> asyncio.Task[object] | None:
        return asyncio.current_task()

    [task] = await gather_all(where())
    assert task is asyncio.current_task()  # no task of its own
    started: list[str] = []

    async def slow() -> None:
        started.append("slow")
        await asyncio.sleep(30)

    async def broken() -> None:
        await asyncio.sleep(0)
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        await gather_all(slow(), broken())
    assert started == ["slow"]
