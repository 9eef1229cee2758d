"""Small asyncio helpers: `gather_all`, `run_sync`, `PerLoop` and `gc_frozen`.

asyncio objects (locks, semaphores, queues, HTTP connections) belong to the event loop
they were made in, while redline's models, critics and sources are plain objects that
may serve several loops in turn (``asyncio.run`` twice in a script, `refine()` from two
threads, a test per loop). `PerLoop` is the one place that keeps such state: a value per
running loop, closed when that loop shuts down. `run_sync` runs the sync API on one loop
per thread, kept across calls, so its connections are reused rather than rebuilt.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import gc
import logging
import os
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

__all__ = ["PerLoop", "gather_all", "gc_frozen", "run_sync"]

T = TypeVar("T")

log = logging.getLogger("redline")


async def gather_all(*aws: Awaitable[T]) -> list[T]:
    """Like `asyncio.gather`, but the first failure cancels the rest before re-raising.

    Nothing keeps running (and spending budget) after the run has already failed.
    """
    if len(aws) == 1:
        # Nothing to run beside it, nothing to cancel: awaited in place (a task per
        # critic call was a tenth of a batch's CPU, bench/batch_overhead.py).
        return [await aws[0]]
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


_frozen = 0
_frozen_lock = threading.Lock()


@contextmanager
def gc_frozen() -> Iterator[None]:
    """Keep the objects alive at entry out of the cyclic garbage collector's scans until
    the block ends (`gc.freeze`), for long concurrent work such as a batch.

    Each full collection walks every tracked object: the imports alone (LangGraph,
    pydantic, aiohttp) are ~125,000, and a batch allocates fast enough to trigger a
    collection every ~15 ms; GC was ~28% of a batch's CPU, ~10% frozen. Nested and
    concurrent blocks share one freeze; a process that froze objects itself is left
    alone.
    """
    global _frozen
    with _frozen_lock:  # batches may run on several threads' loops (run_sync)
        if _frozen == 0 and gc.get_freeze_count() > 0:  # frozen by someone else: theirs
            ours = False
        else:
            ours = True
            if _frozen == 0:
                gc.freeze()
            _frozen += 1
    try:
        yield
    finally:
        if ours:
            with _frozen_lock:
                _frozen -= 1
                if _frozen == 0:
                    gc.unfreeze()


# -- run_sync: one event loop per thread ----------------------------------------------


class _ThreadLoop:
    """The thread's runner; its finalizer closes the loop when the thread ends."""

    def __init__(self) -> None:
        self.runner = asyncio.Runner()
        self.close = weakref.finalize(self, _close_runner, self.runner)
        self.close.atexit = False  # `_at_exit` closes it, before the shutdown sweep
        _thread_loops.add(self)


_local = threading.local()
_thread_loops: weakref.WeakSet[_ThreadLoop] = weakref.WeakSet()


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion on this thread's event loop and return its result.

    The loop is made by the thread's first call and reused by later ones (as
    pydantic-ai's ``run_sync`` does), so connections opened by one call serve the next;
    it is closed, with every `PerLoop` value it holds, when the thread ends or the
    interpreter exits. Each call runs in a copy of the caller's context variables, as
    ``asyncio.run`` does. Ctrl-C cancels the coroutine and raises `KeyboardInterrupt`.

    Raises:
        RuntimeError: an event loop is already running in this thread (callers say
            which async function to await instead).
    """
    if _running_loop() is not None:
        coro.close()
        raise RuntimeError("run_sync() cannot run inside a running event loop")
    holder: _ThreadLoop | None = getattr(_local, "loop", None)
    if holder is None or not holder.close.alive:
        holder = _local.loop = _ThreadLoop()
    return holder.runner.run(coro, context=contextvars.copy_context())


def _close_runner(runner: asyncio.Runner) -> None:
    loop = runner.get_loop()
    if loop.is_running():  # a daemon thread still inside run_sync at exit
        return
    # Cancels what is left, shuts the async generators down (which closes the loop's
    # PerLoop values, see `_shutdown_hook`) and the default executor, closes the loop.
    runner.close()


def _forget_in_child() -> None:
    # A forked child shares its parent's loop selector and sockets: it must neither use
    # nor close them.
    global _local, _lock
    _lock = threading.Lock()  # another thread may have held it at the fork
    for holder in list(_thread_loops):
        holder.close.detach()
    _thread_loops.clear()
    _local = threading.local()
    _shutdowns.clear()


# -- PerLoop: a value per running event loop ------------------------------------------


class PerLoop(Generic[T]):
    """A value per running event loop, made on first use in each loop.

    Example:
        >>> clients = PerLoop(httpx.AsyncClient, close=httpx.AsyncClient.aclose)
        >>> response = await clients.get().get(url)   # doctest: +SKIP

    Values are keyed weakly by their loop. With ``close``, each loop's value is closed
    when the loop shuts down (the end of ``asyncio.run``, a ``pytest`` loop, `run_sync`'s
    loop at thread end or interpreter exit), so no connection outlives its loop and
    nothing is left for the garbage collector to close on a closed loop. Values of loops
    closed without shutting down are dropped, unclosed, when another loop makes a value.

    Args:
        factory: makes the value, called inside the loop that will use it.
        close: releases a value, awaited inside its own loop; None when values need no
            closing (locks, semaphores).
    """

    def __init__(self, factory: Callable[[], T], *,
                 close: Callable[[T], Awaitable[object]] | None = None) -> None:
        self._factory = factory
        self._close = close
        self._values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary())

    def __repr__(self) -> str:
        return f"<PerLoop of {getattr(self._factory, '__qualname__', self._factory)!r}, " \
               f"{len(self._values)} loop(s)>"

    def get(self) -> T:
        """The running loop's value, made now if this loop has none.

        Raises:
            RuntimeError: no event loop is running.
        """
        loop = asyncio.get_running_loop()
        value = self._values.get(loop)
        if value is None:
            value = self._factory()
            with _lock:
                # Asyncio objects that have been waited on refer to their loop, so the
                # weak key alone would never let a closed loop go.
                for old in [old for old in self._values if old.is_closed()]:
                    del self._values[old]
                self._values[loop] = value
            if self._close is not None:
                _close_at_shutdown(loop, self)
        return value

    def current(self) -> T | None:
        """The running loop's value if it has made one (None outside a loop)."""
        try:
            return self._values.get(asyncio.get_running_loop())
        except RuntimeError:
            return None

    async def aclose(self) -> None:
        """Close and forget the running loop's value (the next `get` makes a new one).

        Other loops' values stay: only their own loop can close them, which it does
        when it shuts down.
        """
        loop = asyncio.get_running_loop()
        await self._close_value(loop)

    def clear(self) -> None:
        """Forget every loop's value without closing it (for values needing no close)."""
        with _lock:
            self._values.clear()

    async def _close_value(self, loop: asyncio.AbstractEventLoop) -> None:
        with _lock:
            value = self._values.pop(loop, None)
        if value is not None and self._close is not None:
            await self._close(value)


# -- closing PerLoop values when their loop shuts down ---------------------------------
#
# asyncio offers no "loop is closing" callback, but every way of ending a loop properly
# (asyncio.run, asyncio.Runner, pytest-asyncio) awaits `loop.shutdown_asyncgens()`,
# which closes the async generators started in the loop. So one generator per loop,
# started when its first closable value is made, closes the loop's values from its
# `finally`, inside the loop, before the loop closes.


class _Shutdown:
    def __init__(self) -> None:
        self.owners: weakref.WeakSet[PerLoop[Any]] = weakref.WeakSet()
        self.hook: Any = None


_lock = threading.Lock()
_shutdowns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Shutdown] = (
    weakref.WeakKeyDictionary())


def _close_at_shutdown(loop: asyncio.AbstractEventLoop, owner: PerLoop[Any]) -> None:
    with _lock:
        stale = [old for old in _shutdowns if old.is_closed()]
        dropped = [_shutdowns.pop(old) for old in stale]
        record = _shutdowns.get(loop)
        if record is None:
            record = _shutdowns[loop] = _Shutdown()
            record.hook = _shutdown_hook(loop, record)
            start = record.hook.__anext__()
        else:
            start = None
        record.owners.add(owner)
    if start is not None:
        # Run the generator to its `yield` now (it awaits nothing before it): the first
        # step registers it with the running loop's shutdown.
        try:
            start.send(None)
        except StopIteration:
            pass
    for old in dropped:
        _finish(old)


async def _shutdown_hook(loop: asyncio.AbstractEventLoop,
                         record: _Shutdown) -> AsyncIterator[None]:
    try:
        yield
    finally:
        with _lock:
            if _shutdowns.get(loop) is record:
                del _shutdowns[loop]
        if _running_loop() is loop:  # else: finished by `_finish`, the loop is gone
            for owner in list(record.owners):
                try:
                    await owner._close_value(loop)
                except Exception as exc:  # noqa: BLE001 - one failed close must not stop the rest
                    log.warning("closing %r at the end of its event loop failed: %s",
                                owner, exc)


def _finish(record: _Shutdown) -> None:
    """End the hook of a loop that closed without shutting down, outside any loop: its
    values are dropped (they cannot be closed any more), and a finished generator is not
    handed to the closed loop's finalizer when it is collected."""
    closing = record.hook.aclose()
    try:
        closing.send(None)
    except StopIteration:
        pass
    else:  # pragma: no cover - the hook awaits nothing outside its own loop
        closing.close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


@atexit.register
def _at_exit() -> None:
    for holder in list(_thread_loops):
        # Detached and called here: weakref.finalize runs nothing once its own exit
        # hook has run, which may come first.
        if holder.close.detach() is None:
            continue
        try:
            _close_runner(holder.runner)
        except Exception as exc:  # noqa: BLE001 - exiting: report and go on
            log.warning("closing the event loop of run_sync at exit failed: %s", exc)
    with _lock:
        left = [(loop, _shutdowns.pop(loop)) for loop in list(_shutdowns)
                if not loop.is_running()]
    for _, record in left:
        _finish(record)


os.register_at_fork(after_in_child=_forget_in_child)
