"""Hostile programs against the real sandbox and the real test critics: one test per
attack, each asserting that the attack failed and that the verdict is right.

CI installs bubblewrap (``.ci/run``); these tests require it (no silent skip).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from redline.critics.code_tests import DoctestCritic, PythonTestsCritic
from redline.critics.generated_tests import GeneratedTestsCritic
from redline.feedback_sources.sandbox import Sandbox, SandboxResult
from redline.testing import ScriptedChat
from redline.types import Candidate, Task

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

ADD_TESTS = "from solution import add\n\nassert add(2, 3) == 5\n\ndef test_zero():\n" \
            "    assert add(0, 0) == 0\n"
TASK = Task(prompt="Write add(a, b) returning the sum of a and b.", id="add")


def confined(result: SandboxResult) -> SandboxResult:
    """The run had bubblewrap's isolation (CI installs it: a fallback is a failure)."""
    iso = result.isolation
    assert iso.backend == "bubblewrap", iso.notes
    assert iso.pid and iso.network and iso.filesystem and iso.disk, iso
    return result


async def run(code: str, **limits: object) -> SandboxResult:
    return confined(await Sandbox(timeout=10, **limits).run(code))  # type: ignore[arg-type]


def of_uid(uid: int) -> list[int]:
    """Host pids of live (not zombie) processes of `uid`."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines()
                          if ":" in line)
        except OSError:
            continue
        if str(uid) in fields["Uid"].split() and not fields["State"].strip().startswith("Z"):
            found.append(int(status.parent.name))
    return found


def alive_with(needle: bytes) -> list[int]:
    """Host pids whose command line holds `needle`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if needle in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


# Verdicts ---------------------------------------------------------------------------

FORGERIES = {
    "patch builtins": "import builtins\nbuiltins.AssertionError = type('X', (Exception,), {})\n"
                      "builtins.len = lambda x: 0\n",
    "patch the server": "import sys\nm = sys.modules['__main__']\n"
                        "m.encode = lambda *a, **k: 5\nm.tampered = lambda: []\n",
    "write results": "import json\nwith open('.redline-results.jsonl', 'w') as f:\n"
                     "    f.write(json.dumps({'event': 'load', 'ok': True}) + '\\n')\n"
                     "    f.write(json.dumps({'name': 'test_zero', 'ok': True}) + '\\n')\n",
    "print records and exit": "import os\n"
                              "print('{\"event\": \"load\", \"ok\": true}', flush=True)\n"
                              "print('{\"name\": \"test_zero\", \"ok\": true}', flush=True)\n"
                              "print('{\"event\": \"done\"}', flush=True)\nos._exit(0)\n",
}


@pytest.mark.parametrize("attack", list(FORGERIES))
async def test_forging_the_verdict_scores_zero_and_is_flagged(attack: str) -> None:
    code = "def add(a, b):\n    return 42\n" + FORGERIES[attack]
    critique = await PythonTestsCritic(ADD_TESTS).critique(TASK, Candidate(text=code))
    assert (critique.score, critique.passed) == (0.0, False)
    assert critique.evidence["passed"] == 0  # the harness's own verdicts: every test failed
    assert critique.evidence["tampering"], critique.evidence
    assert critique.feedback.startswith("Tampering detected")


async def test_an_object_equal_to_everything_does_not_pass() -> None:
    code = ("class Anything:\n    def __eq__(self, other):\n        return True\n"
            "    __hash__ = object.__hash__\n"
            "class Five(int):\n    def __eq__(self, other):\n        return True\n"
            "def add(a, b):\n    return Anything() if a else Five(1)\n")
    critique = await PythonTestsCritic(ADD_TESTS).critique(TASK, Candidate(text=code))
    assert (critique.score, critique.passed) == (0.0, False)
    assert critique.evidence["passed"] == 0
    assert "where add(2, 3) = <" in critique.feedback  # a reference: only its repr


async def test_doctest_and_generated_tests_cannot_be_forged() -> None:
    prompt = 'def add(a, b):\n    """Sum.\n    >>> add(2, 3)\n    5\n    """\n'
    code = "def add(a, b):\n    return 42\n" + FORGERIES["patch the server"]
    doc = await DoctestCritic().critique(Task(prompt=prompt), Candidate(text=code))
    assert (doc.score, doc.passed) == (0.0, False) and doc.evidence["tampering"]
    gen = GeneratedTestsCritic(ScriptedChat(["```python\nassert add(2, 3) == 5\n```"]), k=1)
    judged = await gen.critique(TASK, Candidate(text=code))
    assert (judged.score, judged.passed) == (0.0, False) and judged.evidence["tampering"]
    honest = await gen.critique(TASK, Candidate(text="def add(a, b):\n    return a + b\n"))
    assert (honest.score, honest.passed) == (1.0, True)
    assert "tampering" not in honest.evidence


# Secrets ----------------------------------------------------------------------------

async def test_other_command_lines_and_environments_are_invisible(
        monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"sk-SECRET-{uuid.uuid4().hex}"
    monkeypatch.setenv("REDLINE_TEST_SECRET", secret)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", secret])
    try:
        for _ in range(100):  # until it has exec'd: then its command line holds the secret
            if alive_with(secret.encode()):
                break
            await asyncio.sleep(0.05)
        assert alive_with(secret.encode())  # visible from the host: the probe is real
        code = (f"import os\nseen = []\nfor pid in [{os.getpid()}, {holder.pid}, 1, "
                f"{os.getppid()}] + [p for p in os.listdir('/proc') if p.isdigit()]:\n"
                "    for part in ('cmdline', 'environ'):\n"
                "        try:\n"
                "            seen.append(open(f'/proc/{pid}/{part}', 'rb').read())\n"
                "        except OSError:\n"
                "            pass\n"
                "print(repr(b'|'.join(seen)))\nprint(sorted(os.listdir('/proc'))[:6])\n"
                "print(len(seen))\n")
        result = await run(code)
    finally:
        holder.kill()
        holder.wait()
    assert result.ok, result.stderr
    assert secret not in result.stdout
    assert int(result.stdout.splitlines()[2]) >= 2  # it did read command lines (its own)
    pids = [p for p in eval(result.stdout.splitlines()[1]) if p.isdigit()]
    assert all(int(p) < 10 for p in pids)  # a PID namespace of its own: a handful


async def test_home_and_cache_are_not_readable() -> None:
    home = os.path.expanduser("~")
    code = ("import os\n"
            f"for path in [{home!r}, {home + '/.cache'!r}, {home + '/.ssh'!r}]:\n"
            "    try:\n"
            "        print(path, sorted(os.listdir(path)))\n"
            "    except OSError as exc:\n"
            "        print(path, 'denied', exc.errno)\n")
    result = await run(code)
    assert result.ok, result.stderr
    for line in result.stdout.splitlines():
        assert "denied" in line or line.endswith("[]") or line.endswith("['.pyenv']"), line


# Filesystem, processes, limits ------------------------------------------------------

async def test_nothing_outside_the_run_directory_can_be_written() -> None:
    mark = uuid.uuid4().hex
    targets = [f"/run/lock/{mark}", f"/dev/shm/{mark}", f"/tmp/{mark}", f"/var/tmp/{mark}",
               f"/{mark}", f"/etc/{mark}", f"{os.path.expanduser('~')}/{mark}"]
    code = (f"for path in {targets!r}:\n"
            "    try:\n"
            "        open(path, 'w').write('x')\n"
            "        print('wrote', path)\n"
            "    except OSError as exc:\n"
            "        print('refused', path, exc.errno)\n")
    result = await run(code)
    assert result.ok, result.stderr
    said = dict((line.split()[1], line.split()[0]) for line in result.stdout.splitlines())
    assert set(said) == set(targets)  # every write was tried
    # /tmp and /dev/shm are the run's own (size-limited tmpfs): writable, and gone with it
    assert [t for t in targets if said[t] == "wrote"] == targets[1:3]
    assert [t for t in targets if os.path.exists(t)] == []


async def test_a_setsid_double_fork_daemon_does_not_survive() -> None:
    mark = f"{time.time_ns() % 10**9}.5"
    code = ("import os, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            f"        os.execv('/bin/sleep', ['sleep', {mark!r}])\n"
            "    os._exit(0)\n"
            "for _ in range(200):  # until the daemon runs\n"
            "    if any(open(f'/proc/{p}/cmdline', 'rb').read().startswith(b'sleep')\n"
            "           for p in os.listdir('/proc') if p.isdigit()):\n"
            "        print('daemon running')\n"
            "        break\n"
            "    time.sleep(0.01)\n")
    result = await run(code)
    assert result.ok and result.stdout == "daemon running\n", result
    assert alive_with(f"sleep\0{mark}".encode()) == []  # gone as the run returned


async def test_a_fork_bomb_is_contained() -> None:
    result = await run("import os\nwhile True:\n    os.fork()\n", max_processes=16,
                       memory_bytes=2 << 30)
    assert result.limit in ("processes", "memory") and not result.timed_out
    assert result.isolation.processes and result.isolation.user is not None
    assert result.seconds < 8
    assert of_uid(result.isolation.user) == []  # not one fork left alive


async def test_memory_is_limited_across_forked_children() -> None:
    code = ("import os\npids = []\nfor _ in range(4):\n    pid = os.fork()\n"
            "    if pid == 0:\n"
            "        try:\n"
            "            data = bytearray(700 << 20)\n"
            "            os._exit(0)\n"
            "        except MemoryError:\n"
            "            os._exit(3)\n"
            "    pids.append(pid)\n"
            "print([os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids])\n")
    result = await run(code, memory_bytes=2 << 30, max_processes=8)
    assert result.ok, result.stderr
    assert result.stdout.strip() == "[3, 3, 3, 3]"  # 2 GiB for the run: 256 MiB each


async def test_disk_is_limited_across_many_files() -> None:
    code = ("written = 0\ntry:\n    for i in range(600):\n"
            "        with open(f'f{i}', 'wb') as f:\n"
            "            f.write(b'x' * (1 << 20))\n"
            "        written += 1\nexcept OSError as exc:\n    print('stopped', exc.errno)\n"
            "print(written)\n")
    result = await run(code, disk_bytes=64 << 20)
    assert result.stdout.startswith("stopped 28")  # ENOSPC
    assert int(result.stdout.split()[-1]) <= 64


async def test_a_stdout_flood_is_capped() -> None:
    result = await run("while True:\n    print('x' * 1000)\n", file_size_bytes=1 << 20)
    assert result.limit == "file_size" and not result.timed_out
    assert result.stdout_bytes <= 1 << 20


async def test_no_network_to_loopback_or_outside() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    code = ("import socket, time\n"
            f"for host, port in [('127.0.0.1', {port}), ('192.0.2.1', 80)]:\n"
            "    started = time.monotonic()\n"
            "    try:\n"
            "        socket.create_connection((host, port), timeout=0.5)\n"
            "        print('connected')\n"
            "    except OSError as exc:\n"
            "        print('failed', exc.errno, round(time.monotonic() - started, 2))\n")
    try:
        server.setblocking(False)
        result = await run(code)
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing reached the listener
    finally:
        server.close()
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("failed") for line in lines), lines
    assert all(float(line.split()[-1]) < 0.3 for line in lines)  # no route: at once


async def test_killing_the_parent_or_everything_harms_no_one() -> None:
    sandbox = Sandbox(timeout=10)
    victim = "import time\ntime.sleep(1.0)\nprint('alive')\n"
    attacker = ("import os, signal\n"
                "for pid in (os.getppid(), 1, -1):\n"
                "    try:\n"
                "        os.kill(pid, signal.SIGKILL)\n"
                "    except OSError as exc:\n"
                "        print('refused', pid, exc.errno)\n"
                "print('attacker done')\n")
    first, second = await asyncio.gather(sandbox.run(victim), sandbox.run(attacker))
    assert confined(first).ok and first.stdout == "alive\n"
    # Its parent and PID 1 (the same process: the run's own init, root's) refused it
    # (EPERM); kill(-1) found nothing it may signal (ESRCH): it sees no other process.
    lines = confined(second).stdout.splitlines()
    assert second.ok and lines == ["refused 1 1", "refused 1 1", "refused -1 3",
                                   "attacker done"], second
