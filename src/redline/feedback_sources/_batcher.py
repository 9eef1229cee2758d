"""`MicroBatcher`: coalesces concurrent calls into batches (the reward sources use it)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from redline._aio import PerLoop, gather_all

__all__ = ["MicroBatcher"]

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


@dataclass
class _LoopQueue(Generic[ItemT, ResultT]):
    slots: asyncio.Semaphore
    pending: list[tuple[ItemT, asyncio.Future[ResultT]]] = field(default_factory=list)
    full: asyncio.Event = field(default_factory=asyncio.Event)
    drain: asyncio.Task[None] | None = None
    running: set[asyncio.Task[None]] = field(default_factory=set)


async def _drop(queue: _LoopQueue[Any, Any]) -> None:
    """Nothing to release: the queue is let go with its loop (its tasks ended with it)."""


class MicroBatcher(Generic[ItemT, ResultT]):
    """Coalesces concurrent submissions into batches for one ``run`` call each.

    When work arrives and nothing waits, it waits up to ``max_wait`` seconds for a full
    batch (``max_batch`` items), then hands every item pending to ``run``; items arriving
    while ``concurrency`` batches are in flight queue up and go together in the next
    one. So N concurrent submissions take about N / max_batch batches, and ``run`` may
    get more than ``max_batch`` items (it splits them). Each event loop has its own
    queue (a `PerLoop` value, let go when the loop shuts down), so calls from several
    loops share ``run`` but never each other's asyncio objects.

    Args:
        run: scores a list of items, returning one result per item, in order.
        max_batch: the batch size that is worth waiting for.
        max_wait: seconds to wait for a full batch when the first item arrives.
        concurrency: batches in flight at once.
    """

    def __init__(self, run: Callable[[list[ItemT]], Awaitable[list[ResultT]]], *,
                 max_batch: int, max_wait: float, concurrency: int = 1) -> None:
        self.run = run
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.concurrency = concurrency
        self._queues: PerLoop[_LoopQueue[ItemT, ResultT]] = PerLoop(
            lambda: _LoopQueue(slots=asyncio.Semaphore(concurrency)), close=_drop)

    async def submit_many(self, items: Sequence[ItemT]) -> list[ResultT]:
        """Queue items and wait for their results (they may share batches with others)."""
        if not items:
            return []
        loop = asyncio.get_running_loop()
        queue = self._queues.get()
        futures = [loop.create_future() for _ in items]
        queue.pending.extend(zip(items, futures, strict=True))
        if len(queue.pending) >= self.max_batch:
            queue.full.set()
        if queue.drain is None or queue.drain.done():
            queue.drain = loop.create_task(self._drain(queue))
        return await gather_all(*futures)

    async def _drain(self, queue: _LoopQueue[ItemT, ResultT]) -> None:
        loop = asyncio.get_running_loop()
        while queue.pending:
            if len(queue.pending) < self.max_batch and self.max_wait > 0:
                queue.full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(queue.full.wait(), self.max_wait)
            await queue.slots.acquire()
            batch = [(item, f) for item, f in queue.pending if not f.done()]
            queue.pending.clear()
            if not batch:
                queue.slots.release()
                continue
            task = loop.create_task(self._run(batch))
            queue.running.add(task)
            task.add_done_callback(lambda t: self._finished(queue, t))
        queue.drain = None

    @staticmethod
    def _finished(queue: _LoopQueue[ItemT, ResultT], task: asyncio.Task[None]) -> None:
        queue.running.discard(task)
        queue.slots.release()

    async def _run(self, batch: list[tuple[ItemT, asyncio.Future[ResultT]]]) -> None:
        try:
            results = await self.run([item for item, _ in batch])
        except asyncio.CancelledError:  # the loop is closing: free the callers
            for _, f in batch:
                f.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - each caller gets the failure and raises it
            for _, f in batch:
                if not f.done():
                    f.set_exception(exc)
            return
        for (_, f), result in zip(batch, results, strict=True):
            if not f.done():
                f.set_result(result)
