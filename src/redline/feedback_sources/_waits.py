"""Waiting for a sandbox run's process, and making sure nothing of it outlives the wait
(`redline.feedback_sources.sandbox`; commands share `wait_then_kill_group`)."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import threading
from typing import Any

__all__ = ["kill_group", "wait_bwrap", "wait_then_kill_group"]


async def wait_then_kill_group(proc: asyncio.subprocess.Process, timeout: float) -> bool:
    """Wait for `proc` up to `timeout` seconds, then kill its whole process group.

    Whatever happens (exit, timeout, cancellation), nothing of the group outlives the
    call. Returns whether the timeout was hit.
    """
    try:
        await asyncio.wait_for(proc.wait(), timeout)
        return False
    except TimeoutError:
        return True
    finally:
        kill_group(proc.pid)
        await proc.wait()


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def wait_bwrap(proc: subprocess.Popen[bytes], done_fd: int,
                     timeout: float) -> tuple[bool, bool]:
    """Wait for a bubblewrap run up to `timeout` seconds: (timed out, ended clean).

    Clean: its bootstrap said "1" on `done_fd` (after reaping every process of the
    run); bwrap, still tearing the namespaces down, is then reaped by a thread of its
    own. Otherwise (bwrap exited first, time ran out, the call was cancelled), as
    `wait_then_kill_group`: nothing of the group outlives the call.
    """
    loop = asyncio.get_running_loop()
    said: asyncio.Future[bool] = loop.create_future()
    exited: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        try:
            chunk = os.read(done_fd, 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not said.done():
            said.set_result(chunk == b"1")

    def ended() -> None:
        if not exited.done():
            exited.set_result(None)

    os.set_blocking(done_fd, False)
    loop.add_reader(done_fd, readable)
    pidfd = _pidfd(proc.pid)
    if pidfd is not None:
        loop.add_reader(pidfd, ended)
    else:  # no pidfd here: a thread waits
        loop.run_in_executor(None, proc.wait).add_done_callback(lambda _: ended())
    clean = False
    try:
        either: set[asyncio.Future[Any]] = {said, exited}
        finished, _ = await asyncio.wait(either, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        if not finished:
            return True, False
        if not said.done():
            readable()  # bwrap exited: whatever the bootstrap said is in the pipe now
        clean = said.done() and said.result()
        return False, clean
    finally:
        loop.remove_reader(done_fd)
        if pidfd is not None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        if clean:
            _reap_later(proc)
        else:
            kill_group(proc.pid)
            await asyncio.to_thread(proc.wait)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


_reaper: queue.SimpleQueue[subprocess.Popen[bytes]] = queue.SimpleQueue()
_reaper_lock = threading.Lock()
_reaper_started = False


def _reap_later(proc: subprocess.Popen[bytes]) -> None:
    """Have `proc`, about to exit, reaped by a thread that waits for such processes."""
    global _reaper_started
    with _reaper_lock:
        if not _reaper_started:
            threading.Thread(target=_reap_forever, name="redline-sandbox-reaper",
                             daemon=True).start()
            _reaper_started = True
    _reaper.put(proc)


def _reap_forever() -> None:
    while True:
        _reaper.get().wait()
