"""`MicroBatcher`: coalesces concurrent calls into batches (the reward sources use it)."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from redline._aio import gather_all

__all__ = ["MicroBatcher"]

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


@dataclass
class _LoopQueue(Generic[ItemT, ResultT]):
    pending: list[tuple[ItemT, asyncio.Future[ResultT]]] = field(default_factory=list)
    full: asyncio.Event = field(default_factory=asyncio.Event)
    drain: asyncio.Task[None] | None = None
    slots: asyncio.Semaphore | None = None
    running: set[asyncio.Task[None]] = field(default_factory=set)


class MicroBatcher(Generic[ItemT, ResultT]):
    """Coalesces concurrent submissions into batches for one ``run`` call each.

    When work arrives and nothing waits, it waits up to ``max_wait`` seconds for a full
    batch (``max_batch`` items), then hands every item pending to ``run``; items arriving
    while ``concurrency`` batches are in flight queue up and go together in the next
    one. So N concurrent submissions take about N / max_batch batches, and ``run`` may
    get more than ``max_batch`` items (it splits them). The queues live on the event
    loop (one per loop; nothing outlives the work, so no task is left when a loop ends).

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
        self._queues: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, _LoopQueue[ItemT, ResultT]] = weakref.WeakKeyDictionary()

    async def submit_many(self, items: Sequence[ItemT]) -> list[ResultT]:
        """Queue items and wait for their results (they may share batches with others)."""
        if not items:
            return []
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _LoopQueue(slots=asyncio.Semaphore(self.concurrency))
        futures = [loop.create_future() for _ in items]
        queue.pending.extend(zip(items, futures, strict=True))
        if len(queue.pending) >= self.max_batch:
            queue.full.set()
        if queue.drain is None or queue.drain.done():
            queue.drain = loop.create_task(self._drain(queue))
        return await gather_all(*futures)

    async def _drain(self, queue: _LoopQueue[ItemT, ResultT]) -> None:
        assert queue.slots is not None
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
            task.add_done_callback(lambda t: self._finished(loop, queue, t))
        queue.drain = None
        self._forget_if_idle(loop, queue)

    def _finished(self, loop: asyncio.AbstractEventLoop, queue: _LoopQueue[ItemT, ResultT],
                  task: asyncio.Task[None]) -> None:
        queue.running.discard(task)
        assert queue.slots is not None
        queue.slots.release()
        self._forget_if_idle(loop, queue)

    def _forget_if_idle(self, loop: asyncio.AbstractEventLoop,
                        queue: _LoopQueue[ItemT, ResultT]) -> None:
        # An idle queue is dropped: its tasks and primitives refer to the loop, so keeping
        # it would keep every finished loop (one per `refine()` call) alive.
        if not queue.pending and not queue.running and queue.drain is None \
                and self._queues.get(loop) is queue:
            del self._queues[loop]

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
