"""A Python sandbox for untrusted, model-written code.

Each run is a child ``python -I`` in a working directory of its own, with a scrubbed
environment, limits for the run as a whole, a wall-clock timeout that kills it, and no
network. What was and was not isolated is reported in every result (`Isolation`, whose
``backend`` names the mechanism), never assumed.

Two backends (``Sandbox(backend=...)``; the default takes the first that works):

- ``bubblewrap`` (``bwrap``, see ``_bwrap.py``): new PID, network, IPC, UTS and mount
  namespaces in one call; a fresh ``/proc`` showing the run's processes only (no other
  process's command line or environment is readable); a read-only root of ``/usr``,
  ``/lib*``, a copy of a few files of ``/etc`` and the interpreter's own directories
  (not the home directory they may live in); a writable ``/tmp`` (the cwd, where the
  input files are copied) and ``/dev/shm`` that are size-limited tmpfs mounts
  (``disk_bytes`` for the run as a whole). The bootstrap is the namespace's PID 1: when
  the code's process exits it ends and reaps every other, then says so on a pipe, so
  that nothing of the run outlives the result; and the run ends with redline
  (``--die-with-parent``). Nothing of it is on the host's disk: inputs go in through
  file descriptors, output comes back in files without a name.
- ``namespaces`` (when bwrap is missing or fails): network and mount namespaces made
  through ``ctypes``; a run directory on the host over ``/tmp`` and ``/dev/shm``; as
  root, ``/proc`` remounted with ``hidepid=2``. No PID namespace, and disk limited per
  file only.

Run as root, the code runs under an unprivileged uid of its own (``uid_base`` and up),
taken under a host-wide lock held for the whole run (``_uids.py``), so that two redline
processes never share one and the process limit counts the run alone; a sweep of the
uid ends whatever a run left when it may have left something (the fallback's runs, and
bubblewrap's that timed out or were cancelled). Memory is limited per run as
``memory_bytes`` of address space split over ``max_processes`` processes (each gets its
share, so the total holds); output is capped by the file-size limit. See
``_sandbox_child.py`` for the child's side, ``_waits.py`` for the waiting.

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
import py_compile
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from redline._aio import PerLoop
from redline.errors import ConfigError, FeedbackSourceError
from redline.feedback_sources import _bwrap, _runfiles
from redline.feedback_sources._uids import UidLease
from redline.feedback_sources._waits import wait_bwrap, wait_then_kill_group

__all__ = ["Isolation", "Limit", "Sandbox", "SandboxJob", "SandboxResult",
           "default_sandbox"]

Limit = Literal["timeout", "cpu", "memory", "file_size", "processes"]
Backend = Literal["bubblewrap", "namespaces", "none"]

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
    """The code could write nowhere but its run directory (``/tmp``, ``/dev/shm``)."""
    user: int | None
    """The unprivileged uid it ran as (when started as root), or None (the caller's)."""
    processes: bool
    """The process-count limit was enforced for this run alone."""
    backend: Backend = "none"
    """What made the namespaces: ``bubblewrap``, ``namespaces`` (by hand, through
    ``ctypes``: the fallback) or ``none``."""
    pid: bool = False
    """A PID namespace and a fresh ``/proc`` of its own: no other process is visible."""
    disk: bool = False
    """The writable space was size-limited as a whole (``disk_bytes``)."""
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


@dataclass(frozen=True)
class SandboxJob:
    """One program of a group run together (`Sandbox.run_group`)."""

    code: str
    """The Python source to run as ``main.py``."""
    files: Mapping[str, str | bytes] = field(default_factory=dict)
    """More files for its run directory (relative names)."""
    collect: Sequence[str] = ()
    """Files to read back from its run directory after the run."""
    pass_fds: Sequence[int] = ()
    """Open fds the program keeps (same numbers). This process's copies are closed as
    soon as the program has started (or failed to), so that a pipe's other end sees
    its end when the program's side ends."""


class Sandbox:
    """Runs Python code in confined child processes, up to `max_parallel` at once.

    Args:
        timeout: wall-clock seconds per run (a run may override it).
        cpu_seconds: CPU-time limit per process; default: one second more than the
            run's timeout, so that the wall clock stops a busy loop and this limit stops
            code whose threads burn CPU faster than time passes.
        memory_bytes: address space for the run as a whole: each of its up to
            `max_processes` processes may use ``memory_bytes / max_processes`` (where the
            process count is enforced, else each may use it all); None for none.
        file_size_bytes: largest file the code may write; stdout and stderr are files
            too, so this caps the output.
        disk_bytes: the writable space of the run as a whole (bubblewrap only).
        max_processes: processes and threads the code may have at once.
        max_parallel: runs at once (per event loop); default: ``$REDLINE_SANDBOX_PARALLEL``
            (set per worker when several redline processes share a machine: Ray
            workers, two batches), else the CPUs available.
        tail_bytes: how much of the end of stdout and stderr a result keeps.
        python: the interpreter; default: the one running redline.
        uid_base: as root, runs use uids from ``uid_base`` up (one per concurrent run,
            across processes); None keeps root (the process limit then does not apply).
        env: extra environment variables (the child's environment is otherwise just
            ``PATH``, ``LANG``, ``HOME`` and ``TMPDIR``).
        tmp_dir: where run directories are made; default: the system's.
        backend: ``"auto"`` (bubblewrap when it works, else namespaces by hand),
            ``"bubblewrap"`` (an error when it does not work) or ``"namespaces"``.
    """

    def __init__(self, *, timeout: float = 10.0, cpu_seconds: int | None = None,
                 memory_bytes: int | None = 4 << 30, file_size_bytes: int = 16 << 20,
                 disk_bytes: int = 256 << 20, max_processes: int = 16,
                 max_parallel: int | None = None, tail_bytes: int = 8192,
                 python: str | None = None, uid_base: int | None = DEFAULT_UID_BASE,
                 env: Mapping[str, str] | None = None, tmp_dir: str | None = None,
                 backend: Literal["auto", "bubblewrap", "namespaces"] = "auto") -> None:
        if timeout <= 0:
            raise ConfigError(f"sandbox timeout must be > 0 seconds, got {timeout}")
        if max_processes < 1:
            raise ConfigError(f"sandbox max_processes must be >= 1, got {max_processes}")
        if memory_bytes is not None and memory_bytes // max_processes < 32 << 20:
            raise ConfigError(
                f"sandbox memory_bytes={memory_bytes} leaves each of max_processes="
                f"{max_processes} processes under 32 MiB, too little for Python; give "
                "more memory or fewer processes")
        if backend not in ("auto", "bubblewrap", "namespaces"):
            raise ConfigError(f"sandbox backend must be 'auto', 'bubblewrap' or "
                              f"'namespaces', got {backend!r}")
        self.timeout = timeout
        self.cpu_seconds = cpu_seconds
        self.memory_bytes = memory_bytes
        self.file_size_bytes = file_size_bytes
        self.disk_bytes = disk_bytes
        self.max_processes = max_processes
        self.max_parallel = max_parallel or _env_parallel() or _cpu_count()
        self.tail_bytes = tail_bytes
        self.python = python or sys.executable
        self.uid_base = uid_base
        self.env = dict(env or {})
        self.tmp_dir = tmp_dir
        self.backend = backend
        self._switch_user = uid_base is not None and hasattr(os, "setresuid") \
            and os.geteuid() == 0
        self._base: str | None = None
        self._bwrap: str | None | Literal[False] = False  # False: not probed yet
        self._bwrap_note = ""
        self._probe_lock = threading.Lock()
        self._semaphores: PerLoop[asyncio.Semaphore] = PerLoop(
            lambda: asyncio.Semaphore(self.max_parallel))

    def __repr__(self) -> str:
        return (f"<Sandbox timeout={self.timeout:g}s max_parallel={self.max_parallel} "
                f"python={self.python!r}>")

    async def run(self, code: str, *, files: Mapping[str, str | bytes] | None = None,
                  collect: Sequence[str] = (), timeout: float | None = None,
                  pass_fds: Sequence[int] = ()) -> SandboxResult:
        """Run `code` as ``main.py`` in a fresh run directory and wait for it.

        Args:
            code: the Python source to run.
            files: more files to put in the run directory (relative names).
            collect: files to read back from the run directory after the run.
            timeout: wall-clock seconds for this run; default: the sandbox's.
            pass_fds: open fds the code keeps (closed here once it has started).

        Raises:
            FeedbackSourceError: the interpreter could not be started, or the child
                failed before running the code.
        """
        job = SandboxJob(code, dict(files or {}), tuple(collect), tuple(pass_fds))
        return (await self.run_group([job], timeout=timeout))[0]

    async def run_group(self, jobs: Sequence[SandboxJob], *,
                        timeout: float | None = None) -> list[SandboxResult]:
        """Run `jobs` at once, each in a sandbox of its own (one parallel slot for all:
        programs that talk to each other must start together).

        Raises:
            FeedbackSourceError: as `run`, for the first job that failed so.
        """
        seconds = self.timeout if timeout is None else timeout
        # Each job's fds, closed here exactly once (by its run as soon as it has
        # started, else below): a number closed twice may be another run's fd by then.
        held = [list(job.pass_fds) for job in jobs]
        try:
            if seconds <= 0:
                raise ConfigError(f"sandbox timeout must be > 0 seconds, got {seconds}")
            for job in jobs:
                if _MAIN in job.files:
                    raise ConfigError(f"sandbox file {_MAIN!r} is the code itself; "
                                      "name it otherwise")
            async with self._semaphores.get():
                if self._bwrap is False:
                    await asyncio.to_thread(self._probe)
                outcomes = await asyncio.gather(
                    *(self._run(job, seconds, fds) for job, fds in zip(jobs, held, strict=True)),
                    return_exceptions=True)
        finally:
            for fds in held:
                _close(fds)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return list(outcomes)  # type: ignore[arg-type]

    def _base_dir(self) -> str:
        if self._base is None:
            base = tempfile.mkdtemp(prefix="redline-sandbox-", dir=self.tmp_dir)
            os.chmod(base, 0o711)  # runs under other uids must reach their directories
            weakref.finalize(self, shutil.rmtree, base, True)
            lib = os.path.join(base, "lib")
            os.mkdir(lib, 0o755)
            # The child's side is imported from there, its bytecode compiled once here.
            child = os.path.join(lib, f"{_CHILD}.py")
            Path(child).write_text(_CHILD_SOURCE, encoding="utf-8")
            try:
                py_compile.compile(child, doraise=True,
                                   invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
            except (py_compile.PyCompileError, OSError):
                pass  # the child compiles it on each start instead
            for root, dirs, names in os.walk(lib):
                for name in dirs:
                    os.chmod(os.path.join(root, name), 0o755)
                for name in names:
                    os.chmod(os.path.join(root, name), 0o644)
            _bwrap.prepare_etc(os.path.join(base, "etc"))
            self._base = base
        return self._base

    def _probe(self) -> None:
        """Find out once whether bubblewrap works here (else the fallback); concurrent
        first runs wait for the one probe, so that none runs the fallback meanwhile."""
        with self._probe_lock:
            if self._bwrap is not False:
                return
            path, note = None, ""
            if self.backend != "namespaces" and sys.platform.startswith("linux"):
                base = self._base_dir()
                path, note = _bwrap.probe(self.python, os.path.join(base, "lib"),
                                          os.path.join(base, "etc"))
            if path is None and self.backend == "bubblewrap":
                raise FeedbackSourceError(f"sandbox: backend 'bubblewrap' asked for: {note}")
            if note:
                log.warning("sandbox: %s", note)
            self._bwrap, self._bwrap_note = path, note

    async def _run(self, job: SandboxJob, timeout: float, held: list[int]) -> SandboxResult:
        base = self._base_dir()
        files = {_MAIN: job.code, **job.files}
        _runfiles.check_names(files)
        # As root, a uid of its own, taken under its host-wide lock (non-blocking calls:
        # no thread needed).
        lease = UidLease(self.uid_base) \
            if self._switch_user and self.uid_base is not None else None
        uid = None
        run_dir = None  # bubblewrap: none on the host, the inputs go in through fds
        control: list[int] = []  # stdout, stderr, status: files without a name
        done: list[int] = []  # bubblewrap: a pipe its bootstrap says "1" on at the end
        ended_clean = False
        try:
            if lease is not None:
                uid = lease.__enter__()
            # The code may write its output files (as /dev/stdout), not read them; the
            # status file is the bootstrap's alone.
            for mode in (0o622, 0o622, 0o600):
                control.append(_runfiles.anonymous_file(base, mode))
            fds: list[int] = []
            try:
                if self._bwrap:
                    done[:] = os.pipe()
                command = self._command(job, uid, control[2], timeout,
                                        done[1] if done else None)
                if self._bwrap:
                    inputs, fds = _bwrap.input_args(files)
                    fds.append(done.pop())
                    fds.append(_bwrap.args_fd(self._options(), inputs))
                    command = [self._bwrap, "--args", str(fds[-1]), "--", *command]
                else:
                    run_dir = tempfile.mkdtemp(prefix="run-", dir=base)
                    _runfiles.write_files(run_dir, files)
                started = time.perf_counter()
                spawn: dict[str, Any] = dict(
                    stdin=subprocess.DEVNULL, stdout=control[0], stderr=control[1],
                    pass_fds=(control[2], *fds, *job.pass_fds), cwd=run_dir or base,
                    env=self._env(run_dir or "/tmp"), start_new_session=True)
                # bwrap is waited for through a pidfd (no watcher thread); the fallback
                # through asyncio, as commands are.
                proc: subprocess.Popen[bytes] | asyncio.subprocess.Process = \
                    subprocess.Popen(command, **spawn) if done else \
                    await asyncio.create_subprocess_exec(*command, **spawn)
            except OSError as exc:
                raise FeedbackSourceError(
                    f"sandbox: cannot start Python {self.python!r}: {exc.strerror or exc}"
                ) from exc
            finally:
                _close(fds)
                _close(held)
            if isinstance(proc, subprocess.Popen):
                # The bootstrap, the PID namespace's init, says "1" once it has ended and
                # reaped every process of the run: no sweep is needed then, nor a wait
                # for bwrap to tear the namespaces down (it is reaped in the background).
                timed_out, ended_clean = await wait_bwrap(proc, done[0], timeout)
            else:
                timed_out = await wait_then_kill_group(proc, timeout)
            elapsed = time.perf_counter() - started
            return self._result(proc.returncode, timed_out, elapsed, run_dir, control,
                                tuple(job.collect))
        finally:
            # Every run, however it ended: nothing of its uid outlives it (a setsid
            # daemon, a fork bomb's last forks), then the uid goes back.
            if not ended_clean and (uid is not None or run_dir is not None):
                await asyncio.to_thread(_runfiles.cleanup, run_dir, uid)
            _close(control)
            _close(done)
            if lease is not None:
                lease.__exit__(None, None, None)

    def _options(self) -> tuple[str, ...]:
        base = self._base_dir()
        return _bwrap.bwrap_options(self.python, os.path.join(base, "lib"),
                                    os.path.join(base, "etc"), self.disk_bytes,
                                    os.geteuid() == 0)

    def _command(self, job: SandboxJob, uid: int | None, status_fd: int, timeout: float,
                 done_fd: int | None) -> list[str]:
        """The bootstrap's command line (bwrap's options go apart, through an fd)."""
        mode = "bwrap" if self._bwrap else "ns"
        inside_lib = _bwrap.LIB if self._bwrap else os.path.join(self._base_dir(), "lib")
        boot = (f"import sys; sys.path.insert(0, {inside_lib!r}); import {_CHILD} as c; "
                "del sys.path[0]; c.main()")
        args = [mode, _MAIN, "" if uid is None else str(uid), str(status_fd),
                str(self.cpu_seconds or math.ceil(timeout) + 1),
                str(self.memory_bytes or 0), str(self.file_size_bytes),
                str(self.max_processes), ",".join(str(fd) for fd in job.pass_fds),
                "\n".join(job.collect), "" if done_fd is None else str(done_fd)]
        return [self.python, "-I", "-X", "utf8", "-c", boot, *args]

    def _env(self, home: str) -> dict[str, str]:
        return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
                "HOME": home, "TMPDIR": home, **self.env}

    def _result(self, exit_code: int | None, timed_out: bool, seconds: float,
                run_dir: str | None, control: list[int],
                collect: tuple[str, ...]) -> SandboxResult:
        stdout, out_bytes = _runfiles.tail(control[0], self.tail_bytes)
        stderr, err_bytes = _runfiles.tail(control[1], self.tail_bytes)
        lines = _runfiles.read_all(control[2]).decode("utf-8", errors="replace").split("\n")
        if not lines[0]:
            why = "timed out" if timed_out else f"exit {exit_code}"
            raise FeedbackSourceError(
                f"sandbox: the child failed before running the code ({why}): "
                f"{stderr.strip()[-600:] or 'no output'}")
        status = ast.literal_eval(lines[0])  # a literal: nothing in it is run
        status["notes"] = tuple(status["notes"]) + \
            ((self._bwrap_note,) if self._bwrap_note else ())
        final = _runfiles.final_record(lines[1:])
        code = exit_code if exit_code is not None else -signal.SIGKILL
        if final is not None and not timed_out:
            code = os.waitstatus_to_exitcode(final["wait"])
        files = final["files"] if final is not None else {} if run_dir is None \
            else _runfiles.collect(run_dir, collect, self.file_size_bytes)
        return SandboxResult(
            exit_code=code, stdout=stdout, stderr=stderr, stdout_bytes=out_bytes,
            stderr_bytes=err_bytes, timed_out=timed_out,
            limit=self._limit(code, timed_out, stderr, max(out_bytes, err_bytes)),
            seconds=seconds, isolation=Isolation(**status), files=files)

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


def _close(fds: list[int]) -> None:
    """Close `fds` and empty the list (so that nothing closes them again)."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()


@functools.cache
def default_sandbox() -> Sandbox:
    """The sandbox critics share when given none (so they share one parallel limit)."""
    return Sandbox()


def _env_parallel() -> int | None:
    """``$REDLINE_SANDBOX_PARALLEL``: sandbox runs at once in this process (None: unset).

    Raises:
        ConfigError: not a whole number >= 1.
    """
    value = os.environ.get("REDLINE_SANDBOX_PARALLEL", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"REDLINE_SANDBOX_PARALLEL must be a whole number >= 1, got "
                          f"{value!r}")
    return int(value)


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1
