"""The sandbox across OS processes: two redline processes at once, and the API key of a
CLI run out of reach of the code it tests (end to end, through a loopback server)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from redline.testing import OpenAICompatServer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

WORKER = """
import asyncio, sys
from redline.critics.code_tests import PythonTestsCritic
from redline.types import Candidate, Task

TESTS = "from solution import slow_add\\n" + "".join(
    f"assert slow_add({i}, 1) == {i + 1}\\n" for i in range(4))
GOOD = "import time\\ndef slow_add(a, b):\\n    time.sleep(0.05)\\n    return a + b\\n"
BAD = "def slow_add(a, b):\\n    return a - b\\n"

async def main():
    critic = PythonTestsCritic(TESTS)
    scores = []
    for i in range(6):
        text = GOOD if (i + int(sys.argv[1])) % 2 == 0 else BAD
        critique = await critic.critique(Task(prompt="slow_add"), Candidate(text=text))
        scores.append((text == GOOD, critique.score))
    print(scores)

asyncio.run(main())
"""


def test_two_processes_sandboxing_at_once_do_not_interfere() -> None:
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(i)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for i in range(2)]
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        scores = eval(out)
        assert scores == [(good, 1.0 if good else 0.0) for good, _ in scores], scores


EXFILTRATE = """```python
import os

def add(a, b):
    return a + b

seen = []
for pid in os.listdir('/proc'):
    if pid.isdigit():
        for part in ('cmdline', 'environ'):
            try:
                seen.append(open(f'/proc/{pid}/{part}', 'rb').read().replace(b'\\0', b' '))
            except OSError:
                pass
hits = [s.decode(errors='replace') for s in seen if b'sk-' in s]
raise RuntimeError(f'EXFIL read={len(seen)} hits={hits!r}')
```"""


def test_the_api_key_on_the_command_line_reaches_no_one(tmp_path: Path) -> None:
    secret = "sk-SECRET-123"
    tests = tmp_path / "test_add.py"
    tests.write_text("from solution import add\nassert add(2, 3) == 5\n")
    with OpenAICompatServer([EXFILTRATE] * 3) as server:
        done = subprocess.run(
            [sys.executable, "-m", "redline", "refine", "Write add(a, b).", "--api-key",
             secret, "--base-url", server.base_url, "-c", f"pytest:{tests}",
             "--max-rounds", "2", "--json"],
            capture_output=True, text=True, timeout=120)
        bodies = json.dumps(server.requests)
    assert done.returncode == 1, done.stderr  # ran to the end; the code never passed
    assert "--api-key" in done.stderr  # the CLI warned that the key is visible
    trace = json.loads(done.stdout)
    feedback = [c["feedback"] for r in trace["rounds"] for s in r["scored"]
                for c in s["critiques"]]
    assert len(feedback) == 2 and all(c["score"] == 0.0 for r in trace["rounds"]
                                      for s in r["scored"] for c in s["critiques"])
    # The code ran, read every command line and environment it could (its own at
    # least) and reported what held "sk-": nothing.
    reports = [re.findall(r"RuntimeError: EXFIL read=(\d+) hits=(.*)", f) for f in feedback]
    assert all(r and int(r[-1][0]) >= 2 and r[-1][1] == "[]" for r in reports), feedback
    assert len(server.requests) >= 2  # a revision prompt carried that feedback
    assert "EXFIL read=" in bodies
    assert secret not in done.stdout and secret not in bodies
    assert all(secret not in f for f in feedback)
