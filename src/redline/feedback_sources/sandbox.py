"""A Python sandbox for untrusted, model-written code.

Each run is a child ``python -I`` in a run directory of its own (its cwd, removed
afterwards), with a scrubbed environment, resource limits (CPU seconds, address space,
file size — which also caps its output — and process count), a wall-clock timeout that
kills its whole process group, and no network where the platform allows it. What was
and was not isolated is reported in every result (`Isolation`), never assumed.

On Linux the child enters new network and mount namespaces (inside a user namespace
when not root), so it has no network and every world-writable directory it sees
(``/tmp``, ``/dev/shm``, ``/var/tmp``) is its run directory. Run as root, the code runs
under an unprivileged uid of its own (``uid_base`` and up, one per concurrent run) so
that the process limit applies and it cannot touch root's files; directories on
Python's own paths that other users cannot enter (a ``/root/.pyenv`` install) are made
readable inside the child's mount namespace only. Elsewhere (macOS, containers without
namespaces) the sandbox still runs, with the limits it could apply, and says what it
could not (``result.isolation.notes``). See ``_sandbox_child.py`` for the child's side.

```python
sandbox = Sandbox(timeout=5)
result = await sandbox.run("print(sum(range(10)))")
assert result.ok and result.stdout == "45\\n"
```
"""

from __future__ import annotations

import ast
import asyncio
import functools
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict

from redline.errors import ConfigError, FeedbackSourceError

__all__ = ["Isolation", "Limit", "Sandbox", "SandboxResult", "default_sandbox"]

Limit = Literal["timeout", "cpu", "memory", "file_size", "processes"]

log = logging.getLogger("redline.sandbox")

_CHILD = "_redline_sandbox_child"
_CHILD_SOURCE = Path(__file__).with_name("_sandbox_child.py").read_text(encoding="utf-8")
_MAIN = "main.py"
DEFAULT_UID_BASE = 2_100_000_000
"""First uid of the sandbox's private uids (above the ranges LDAP/SSSD and systemd use)."""


class Isolation(BaseModel):
    """What confinement a run actually got."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    network: bool
    """The code ran in a network namespace of its own (no interface up: no network)."""
    filesystem: bool
    """World-writable directories (``/tmp``, ``/dev/shm``) were its run directory."""
    user: int | None
    """The unprivileged uid it ran as (when started as root), or None (the caller's)."""
    processes: bool
    """The process-count limit was enforced for this run alone."""
    notes: tuple[str, ...] = ()
    """What could not be isolated, and why."""


class SandboxResult(BaseModel):
    """How one run ended."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    exit_code: int
    """The exit status; negative: killed by that signal (as in `subprocess`)."""
    stdout: str
    """The last ``tail_bytes`` of standard output."""
    stderr: str
    """The last ``tail_bytes`` of standard error (tracebacks end there)."""
    stdout_bytes: int
    """Bytes written to standard output (capped by the file-size limit)."""
    stderr_bytes: int
    """Bytes written to standard error."""
    timed_out: bool
    """The wall-clock timeout ran out and the process group was killed."""
    limit: Limit | None
    """The limit that stopped the code, when one did (read from the exit signal and the
    error's text: best effort)."""
    seconds: float
    """Wall-clock seconds, start to exit."""
    isolation: Isolation
    """What confinement the run got."""
    files: dict[str, str] = {}
    """The files asked for with ``collect`` that the code left, as text."""

    @property
    def ok(self) -> bool:
        """The code exited with status 0 in time."""
        return self.exit_code == 0 and not self.timed_out


class _UidPool:
    """Hands each concurrent run a uid that no other run of this process holds.

    Uids go round a span rather than lowest-first, so that a uid comes back only long
    after its last run: killed processes (a fork bomb's) may stay zombies until init
    reaps them, and they would count against the next run's process limit.
    """

    def __init__(self, span: int = 4096) -> None:
        self._lock = threading.Lock()
        self._busy: set[int] = set()
        self._next = 0
        self._span = span

    def acquire(self, base: int) -> int:
        with self._lock:
            for _ in range(self._span):
                uid = base + self._next
                self._next = (self._next + 1) % self._span
                if uid not in self._busy:
                    self._busy.add(uid)
                    return uid
        raise FeedbackSourceError(f"sandbox: all {self._span} sandbox uids are in use")

    def release(self, uid: int) -> None:
        with self._lock:
            self._busy.discard(uid)


_UIDS = _UidPool()


class Sandbox:
    """Runs Python code in confined child processes, up to `max_parallel` at once.

    Args:
        timeout: wall-clock seconds per run (a run may override it).
        cpu_seconds: CPU-time limit per run; default: one second more than the run's
            timeout, so that the wall clock stops a busy loop and this limit stops code
            whose threads burn CPU faster than time passes.
        memory_bytes: address-space limit (``RLIMIT_AS``); None for none.
        file_size_bytes: largest file the code may write; stdout and stderr are files
            too, so this caps the output.
        max_processes: processes and threads the code may have at once.
        max_parallel: runs at once (per event loop); default: the CPUs available.
        tail_bytes: how much of the end of stdout and stderr a result keeps.
        python: the interpreter; default: the one running redline.
        uid_base: as root, runs use uids ``uid_base``, ``uid_base + 1``, ... (one per
            concurrent run); None keeps root (the process limit then does not apply).
        env: extra environment variables (the child's environment is otherwise just
            ``PATH``, ``LANG``, ``HOME`` and ``TMPDIR``).
        tmp_dir: where run directories are made; default: the system's.
    """

    def __init__(self, *, timeout: float = 10.0, cpu_seconds: int | None = None,
                 memory_bytes: int | None = 2 << 30, file_size_bytes: int = 16 << 20,
                 max_processes: int = 64, max_parallel: int | None = None,
                 tail_bytes: int = 8192, python: str | None = None,
                 uid_base: int | None = DEFAULT_UID_BASE,
                 env: Mapping[str, str] | None = None, tmp_dir: str | None = None) -> None:
        if timeout <= 0:
            raise ConfigError(f"sandbox timeout must be > 0 seconds, got {timeout}")
        self.timeout = timeout
        self.cpu_seconds = cpu_seconds
        self.memory_bytes = memory_bytes
        self.file_size_bytes = file_size_bytes
        self.max_processes = max_processes
        self.max_parallel = max_parallel or _cpu_count()
        self.tail_bytes = tail_bytes
        self.python = python or sys.executable
        self.uid_base = uid_base
        self.env = dict(env or {})
        self.tmp_dir = tmp_dir
        self._switch_user = uid_base is not None and hasattr(os, "setresuid") \
            and os.geteuid() == 0
        self._base: str | None = None
        self._boot = ""
        self._semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                                    asyncio.Semaphore] = \
            weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return (f"<Sandbox timeout={self.timeout:g}s max_parallel={self.max_parallel} "
                f"python={self.python!r}>")

    async def run(self, code: str, *, files: Mapping[str, str | bytes] | None = None,
                  collect: Sequence[str] = (), timeout: float | None = None) -> SandboxResult:
        """Run `code` as ``main.py`` in a fresh run directory and wait for it.

        Args:
            code: the Python source to run.
            files: more files to put in the run directory (relative names).
            collect: files to read back from the run directory after the run.
            timeout: wall-clock seconds for this run; default: the sandbox's.

        Raises:
            FeedbackSourceError: the interpreter could not be started, or the child
                failed before running the code.
        """
        seconds = self.timeout if timeout is None else timeout
        if seconds <= 0:
            raise ConfigError(f"sandbox timeout must be > 0 seconds, got {seconds}")
        if files and _MAIN in files:
            raise ConfigError(f"sandbox file {_MAIN!r} is the code itself; name it otherwise")
        async with self._semaphore():
            return await self._run(code, dict(files or {}), tuple(collect), seconds)

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        semaphore = self._semaphores.get(loop)
        if semaphore is None:
            semaphore = self._semaphores[loop] = asyncio.Semaphore(self.max_parallel)
        return semaphore

    def _base_dir(self) -> str:
        if self._base is None:
            base = tempfile.mkdtemp(prefix="redline-sandbox-", dir=self.tmp_dir)
            os.chmod(base, 0o711)  # runs under other uids must reach their directories
            weakref.finalize(self, shutil.rmtree, base, True)
            # The child's side is imported from here, so its bytecode is compiled once.
            Path(base, f"{_CHILD}.py").write_text(_CHILD_SOURCE, encoding="utf-8")
            self._base = base
            self._boot = (f"import sys; sys.path.insert(0, {base!r}); import {_CHILD} as c; "
                          "del sys.path[0]; c.main()")
        return self._base

    async def _run(self, code: str, files: dict[str, str | bytes], collect: tuple[str, ...],
                   timeout: float) -> SandboxResult:
        run_dir = tempfile.mkdtemp(prefix="run-", dir=self._base_dir())
        control = [f"{run_dir}.{name}" for name in ("out", "err", "status")]
        uid = _UIDS.acquire(self.uid_base) \
            if self._switch_user and self.uid_base is not None else None
        killed = False
        try:
            _write_files(run_dir, {_MAIN: code, **files})
            fds: list[int] = []
            try:
                for path in control:
                    fds.append(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                       | os.O_CLOEXEC, 0o600))
                args = [_MAIN, "" if uid is None else str(uid), str(fds[2]),
                        str(self.cpu_seconds or math.ceil(timeout) + 1),
                        str(self.memory_bytes or 0), str(self.file_size_bytes),
                        str(self.max_processes)]
                started = time.perf_counter()
                proc = await asyncio.create_subprocess_exec(
                    self.python, "-I", "-X", "utf8", "-c", self._boot, *args,
                    stdin=asyncio.subprocess.DEVNULL, stdout=fds[0],
                    stderr=fds[1], pass_fds=(fds[2],), cwd=run_dir, env=self._env(run_dir),
                    start_new_session=True)
            except OSError as exc:
                raise FeedbackSourceError(
                    f"sandbox: cannot start Python {self.python!r}: {exc.strerror or exc}"
                ) from exc
            finally:
                for fd in fds:
                    os.close(fd)
            try:
                timed_out = await _wait_then_kill_group(proc, timeout)
            finally:
                killed = proc.returncode is None or proc.returncode < 0
            elapsed = time.perf_counter() - started
            result = self._result(proc.returncode, timed_out, elapsed, run_dir, control,
                                  collect)
            # A fork bomb's children may still be forking while the group is killed.
            killed = killed or result.limit == "processes"
            return result
        finally:
            # A run killed by a signal had no chance to end what it started outside its
            # process group (setsid), and a fork bomb's last forks can outrun the group
            # kill: end every process of its uid before handing the uid back.
            await asyncio.to_thread(_cleanup, run_dir, control, uid if killed else None)
            if uid is not None:
                _UIDS.release(uid)

    def _env(self, run_dir: str) -> dict[str, str]:
        return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
                "HOME": run_dir, "TMPDIR": run_dir, **self.env}

    def _result(self, exit_code: int | None, timed_out: bool, seconds: float, run_dir: str,
                control: list[str], collect: tuple[str, ...]) -> SandboxResult:
        stdout, out_bytes = _tail(control[0], self.tail_bytes)
        stderr, err_bytes = _tail(control[1], self.tail_bytes)
        status_text = Path(control[2]).read_text(encoding="utf-8")
        if not status_text:
            why = "timed out" if timed_out else f"exit {exit_code}"
            raise FeedbackSourceError(
                f"sandbox: the child failed before running the code ({why}): "
                f"{stderr.strip()[-600:] or 'no output'}")
        status = ast.literal_eval(status_text)  # a literal: nothing in it is run
        status["notes"] = tuple(status["notes"])
        code = exit_code if exit_code is not None else -signal.SIGKILL
        return SandboxResult(
            exit_code=code, stdout=stdout, stderr=stderr, stdout_bytes=out_bytes,
            stderr_bytes=err_bytes, timed_out=timed_out,
            limit=self._limit(code, timed_out, stderr, max(out_bytes, err_bytes)),
            seconds=seconds, isolation=Isolation(**status),
            files=_collect(run_dir, collect, self.file_size_bytes))

    def _limit(self, code: int, timed_out: bool, stderr: str, most_written: int) -> Limit | None:
        if timed_out:
            return "timeout"
        if code == -signal.SIGXCPU:
            return "cpu"
        if code == -signal.SIGXFSZ or most_written >= self.file_size_bytes \
                or "[Errno 27] File too large" in stderr:
            return "file_size"
        if code != 0 and "MemoryError" in stderr:
            return "memory"
        if code != 0 and "BlockingIOError: [Errno 11]" in stderr:
            return "processes"
        return None


@functools.cache
def default_sandbox() -> Sandbox:
    """The sandbox critics share when given none (so they share one parallel limit)."""
    return Sandbox()


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _write_files(run_dir: str, files: Mapping[str, str | bytes]) -> None:
    for name, content in files.items():
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise ConfigError(f"sandbox file name {name!r} must be relative, without '..'")
        path = Path(run_dir, relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode("utf-8") if isinstance(content, str) else content
        path.write_bytes(data)


def _tail(path: str, size: int) -> tuple[str, int]:
    with open(path, "rb") as f:
        total = f.seek(0, os.SEEK_END)
        f.seek(max(0, total - size))
        return f.read().decode("utf-8", errors="replace"), total


def _collect(run_dir: str, names: tuple[str, ...], limit: int) -> dict[str, str]:
    found = {}
    inside = os.path.realpath(run_dir) + os.sep
    for name in names:
        path = os.path.join(run_dir, name)
        # The code may have left symlinks: never read outside its run directory.
        if os.path.realpath(path).startswith(inside) and os.path.isfile(path):
            with open(path, "rb") as f:
                found[name] = f.read(limit).decode("utf-8", errors="replace")
    return found


async def _wait_then_kill_group(proc: asyncio.subprocess.Process, timeout: float) -> bool:
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
        _kill_group(proc.pid)
        await proc.wait()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of `uid` (Linux; elsewhere the next run's sweep does it).

    Sweeps until a pass finds none alive: a fork bomb's survivors of one pass may fork
    again before their own SIGKILL lands.
    """
    if not os.path.isdir("/proc"):
        return
    for _ in range(200):
        if not _kill_uid_once(uid):
            return
        time.sleep(0.005)
    log.warning("sandbox uid %d: processes still alive after 200 sweeps", uid)


def _kill_uid_once(uid: int) -> int:
    """One sweep of /proc; the number of live (not zombie) processes of `uid` it saw."""
    alive = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(os.path.join(entry.path, "status"), encoding="utf-8") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            if str(uid) in fields["Uid"].split() and not fields["State"].strip().startswith("Z"):
                alive += 1
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, KeyError):
            continue  # gone meanwhile
    return alive


def _cleanup(run_dir: str, control: list[str], kill_uid: int | None) -> None:
    """End what is left of a run (its uid's processes, when given) and remove its files."""
    if kill_uid is not None:
        _kill_uid(kill_uid)

    def writable(function: object, path: str, _exc: object) -> None:
        # Code may leave read-only directories (a problem when not root): make the
        # parent writable and retry. Never chmod through a symlink.
        os.chmod(os.path.dirname(path), 0o700)
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
        else:
            os.chmod(path, 0o700)
            shutil.rmtree(path, ignore_errors=True)

    try:
        shutil.rmtree(run_dir, onerror=writable)
    except OSError as exc:  # a leftover directory must not hide the run's result
        log.warning("sandbox: could not remove run directory %s: %s", run_dir, exc)
    for path in control:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
