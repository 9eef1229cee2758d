"""The Python sandbox, with real child processes: limits, timeouts, isolation, cleanup."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import uuid
from pathlib import Path

import pytest

from redline.errors import ConfigError, FeedbackSourceError
from redline.feedback_sources.sandbox import Sandbox, SandboxResult

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX only")


def live_processes(uid: int) -> list[int]:
    """Pids of processes of `uid` that are not zombies (killed ones await reaping)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
            found.append(int(entry.name))
    return found


def assert_notes_explain(result: SandboxResult) -> None:
    """Every isolation the run did not get is explained in its notes."""
    iso = result.isolation
    for flag, word in ((iso.network, "network"), (iso.filesystem, "filesystem"),
                       (iso.processes, "processes")):
        assert flag or any(n.startswith(word) for n in iso.notes), (word, iso.notes)


async def test_passing_code() -> None:
    result = await Sandbox(timeout=5).run("print(sum(range(10)))")
    assert result.ok and result.exit_code == 0
    assert result.stdout == "45\n" and result.stderr == ""
    assert result.limit is None and not result.timed_out
    assert 0 < result.seconds < 5
    assert_notes_explain(result)


async def test_failing_assertion_traceback_starts_at_the_code() -> None:
    result = await Sandbox(timeout=5).run("x = 1\nassert x == 2, 'x is not 2'\n")
    assert result.exit_code == 1 and not result.ok
    assert result.stderr.startswith("Traceback (most recent call last):\n"
                                    '  File "main.py", line 2, in <module>')
    assert result.stderr.rstrip().endswith("AssertionError: x is not 2")
    assert "<string>" not in result.stderr  # no frame of the sandbox's own bootstrap


async def test_syntax_error() -> None:
    result = await Sandbox(timeout=5).run("def f(:\n    pass\n")
    assert result.exit_code == 1
    assert 'File "main.py", line 1' in result.stderr
    assert "SyntaxError" in result.stderr


async def test_infinite_loop_is_killed_at_the_timeout() -> None:
    result = await Sandbox(timeout=5).run("while True:\n    pass\n", timeout=1)
    assert result.timed_out and result.limit == "timeout"
    assert result.exit_code == -signal.SIGKILL
    assert 1 <= result.seconds < 10  # killed at the timeout, not left running


async def test_cpu_limit_stops_a_busy_loop() -> None:
    result = await Sandbox(timeout=10, cpu_seconds=1).run("while True:\n    pass\n")
    assert result.limit == "cpu" and not result.timed_out
    assert result.exit_code == -signal.SIGXCPU


async def test_memory_hog_is_stopped_by_the_limit() -> None:
    hog = "chunks = []\nwhile True:\n    chunks.append(bytearray(50 << 20))\n"
    result = await Sandbox(timeout=10, memory_bytes=512 << 20, max_processes=4).run(hog)
    assert result.limit == "memory"
    assert result.stderr.rstrip().endswith("MemoryError")
    assert result.seconds < 5


async def test_fork_bomb_is_contained() -> None:
    bomb = "import os\nwhile True:\n    os.fork()\n"
    result = await Sandbox(timeout=5, max_processes=32).run(bomb)
    if not result.isolation.processes:
        pytest.skip(f"no process limit here: {result.isolation.notes}")
    assert result.limit == "processes" and not result.timed_out
    assert "BlockingIOError" in result.stderr
    if result.isolation.user is not None:
        assert live_processes(result.isolation.user) == []


async def test_network_is_unreachable() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    code = ("import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "    print('connected')\n"
            "except OSError as exc:\n"
            "    print('refused', exc.errno)\n")
    try:
        result = await Sandbox(timeout=5).run(code)
    finally:
        server.close()
    if not result.isolation.network:
        assert any(n.startswith("network") for n in result.isolation.notes)
        pytest.skip(f"no network namespace here: {result.isolation.notes}")
    assert result.stdout.startswith("refused")  # even the host's loopback is out of reach


async def test_files_land_in_the_run_directory_which_is_removed(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    outside = tmp_path / "outside"
    outside.mkdir()
    code = (
        "import os, tempfile\n"
        "open('relative.txt', 'w').write('r')\n"
        f"open('/tmp/{mark}', 'w').write('t')\n"
        "fd, path = tempfile.mkstemp(prefix='made-'); os.write(fd, b'm')\n"
        "try:\n"
        f"    open({str(outside / 'escaped.txt')!r}, 'w').write('x')\n"
        "    print('wrote outside')\n"
        "except OSError:\n"
        "    print('denied outside')\n"
        "print(sorted(os.listdir('.')))\n")
    sandbox = Sandbox(timeout=5, tmp_dir=str(tmp_path))
    result = await sandbox.run(code, collect=["relative.txt", mark])
    assert result.ok, result.stderr
    if not result.isolation.filesystem:  # CI sets REDLINE_NO_SKIPS: a skip fails there
        Path("/tmp", mark).unlink(missing_ok=True)
        pytest.skip(f"no filesystem isolation here: {result.isolation.notes}")
    assert result.files == {"relative.txt": "r", mark: "t"}
    assert not Path("/tmp", mark).exists()  # /tmp was the run's own
    assert any(name.startswith("made-") for name in eval(result.stdout.splitlines()[1]))
    if result.isolation.user is not None:  # another uid: root's directories are closed
        assert result.stdout.startswith("denied outside")
        assert not (outside / "escaped.txt").exists()
    Path("/tmp", mark).unlink(missing_ok=True)
    (base,) = tmp_path.glob("redline-sandbox-*")
    assert [p.name for p in base.iterdir() if p.name.startswith("run-")] == []  # all removed


@pytest.mark.parametrize("ending", ["exit", "timeout"])
async def test_background_processes_do_not_outlive_the_run(ending: str) -> None:
    code = ("import os, subprocess\n"
            "subprocess.Popen(['sleep', '30'])\n"
            "if os.fork() == 0:\n"
            "    os.setsid()  # leaves the process group\n"
            "    import time; time.sleep(30)\n"
            "print('started', flush=True)\n"
            + ("while True:\n    pass\n" if ending == "timeout" else ""))
    result = await Sandbox(timeout=1).run(code)
    assert result.stdout == "started\n" and result.timed_out == (ending == "timeout")
    if result.isolation.user is None:
        pytest.skip("no uid of its own: only its process group is killed")
    await asyncio.sleep(0.1)
    assert live_processes(result.isolation.user) == []


async def test_output_is_capped_by_the_file_size_limit() -> None:
    sandbox = Sandbox(timeout=10, file_size_bytes=64 << 10, tail_bytes=1000)
    result = await sandbox.run("while True:\n    print('x' * 100)\n")
    assert result.limit == "file_size" and not result.ok
    assert result.stdout_bytes <= 64 << 10
    assert len(result.stdout) <= 1000


async def test_environment_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDLINE_TEST_SECRET", "hunter2")
    monkeypatch.setenv("PYTHONPATH", "/nowhere")
    code = "import os, sys\nprint(sorted(os.environ))\nprint('/nowhere' in sys.path)\n"
    result = await Sandbox(timeout=5, env={"EXTRA": "1"}).run(code)
    names, in_path = result.stdout.splitlines()
    assert eval(names) == ["EXTRA", "HOME", "LANG", "PATH", "TMPDIR"]
    assert in_path == "False"


async def test_fifty_parallel_runs_all_complete() -> None:
    sandbox = Sandbox(timeout=20)
    results = await asyncio.gather(*(sandbox.run(f"print({i} * {i})") for i in range(50)))
    assert [r.stdout for r in results] == [f"{i * i}\n" for i in range(50)]
    assert all(r.ok for r in results)


async def test_parallel_limit_is_respected() -> None:
    code = "import time\nprint(time.time())\ntime.sleep(0.2)\nprint(time.time())\n"
    sandbox = Sandbox(timeout=10, max_parallel=2)
    results = await asyncio.gather(*(sandbox.run(code) for _ in range(6)))
    spans = [tuple(map(float, r.stdout.split())) for r in results]
    most = max(sum(a <= t < b for a, b in spans) for t, _ in spans)
    assert most <= 2


async def test_cancelling_a_run_kills_it() -> None:
    mark = uuid.uuid4().hex
    sandbox = Sandbox(timeout=30, env={"REDLINE_MARK": mark})
    task = asyncio.ensure_future(sandbox.run("import time\ntime.sleep(30)\n"))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    def marked() -> list[str]:
        found = []
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                if f"REDLINE_MARK={mark}".encode() in environ.read_bytes():
                    found.append(environ.parent.name)
            except OSError:
                continue
        return found

    assert marked() == []


async def test_missing_interpreter_is_a_feedback_source_error() -> None:
    with pytest.raises(FeedbackSourceError, match="cannot start Python"):
        await Sandbox(python="/nonexistent/python3", backend="namespaces").run("pass")


async def test_the_fallback_backend_says_what_it_lacks() -> None:
    result = await Sandbox(timeout=5, backend="namespaces").run("print(1)")
    iso = result.isolation
    assert result.stdout == "1\n" and iso.backend == "namespaces"
    assert not iso.pid and not iso.disk
    assert any(n.startswith("pid:") for n in iso.notes)
    assert any(n.startswith("disk:") for n in iso.notes)


def test_memory_too_small_for_the_process_count_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="under 32 MiB"):
        Sandbox(memory_bytes=256 << 20, max_processes=16)


async def test_uids_are_held_under_a_host_wide_lock() -> None:
    import fcntl

    from redline.feedback_sources._uids import UidLease, lock_dir

    with UidLease(3_000_000_000) as uid:
        fd = os.open(os.path.join(lock_dir(), str(uid)), os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):  # another holder (any process) is refused
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        with UidLease(3_000_000_000) as other:
            assert other != uid


def test_a_sandbox_serves_several_event_loops() -> None:
    sandbox = Sandbox(timeout=5)
    for _ in range(2):  # refine() starts a new loop per call
        assert asyncio.run(sandbox.run("print(1)")).stdout == "1\n"


@pytest.mark.skipif(getattr(os, "geteuid", lambda: -1)() != 0,
                    reason="uids of its own are for root")
async def test_root_runs_under_a_uid_of_its_own() -> None:
    result = await Sandbox(timeout=5).run("import os\nprint(os.getuid(), os.geteuid())")
    uid = result.isolation.user
    if uid is None:
        pytest.skip(f"stayed root here: {result.isolation.notes}")
    assert result.stdout.split() == [str(uid), str(uid)]


def test_the_parallel_limit_comes_from_the_environment_per_worker(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from redline.errors import ConfigError
    from redline.feedback_sources.sandbox import Sandbox

    monkeypatch.setenv("REDLINE_SANDBOX_PARALLEL", "3")
    assert Sandbox().max_parallel == 3 and Sandbox(max_parallel=5).max_parallel == 5
    monkeypatch.setenv("REDLINE_SANDBOX_PARALLEL", "0")
    with pytest.raises(ConfigError, match="REDLINE_SANDBOX_PARALLEL must be a whole number"):
        Sandbox()
