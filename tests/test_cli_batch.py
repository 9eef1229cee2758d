"""`redline batch` as a process: killed, torn, refused, failing and flooded with server
errors, it never loses or repeats an item. Real subprocesses against a loopback server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from redline.testing import Fail, OpenAICompatServer

MODEL_ENV = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "REDLINE_MODEL", "REDLINE_MODEL_PATH")
ENV = {k: v for k, v in os.environ.items() if k not in MODEL_ENV}
ITEM = re.compile(r"<item (\w+)>")


def batch(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "redline", "batch", *args],
                          capture_output=True, text=True, env=ENV, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def write_items(path: Path, ids: list[str], **extra: object) -> Path:
    path.write_text("".join(json.dumps({"id": i, "task": f"<item {i}> say hello", **extra})
                            + "\n" for i in ids))
    return path


def item_of(request: dict) -> str | None:
    found = ITEM.search(json.dumps(request))
    return found.group(1) if found else None


def is_verdict(request: dict) -> bool:
    return "grade" in request["messages"][0]["content"]


def judged(delay: float = 0.0, draft: Callable[[dict], str | Fail] | None = None
           ) -> Callable[[dict], str | Fail]:
    """A server: drafts answered by `draft` (default: a fixed text), verdicts 10/10."""
    def handle(request: dict) -> str | Fail:
        time.sleep(delay)
        if is_verdict(request):
            return json.dumps({"score": 10, "feedback": ""})
        return draft(request) if draft else f"hello from {item_of(request)}"
    return handle


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def result_ids(path: Path) -> list[str]:
    return [doc["id"] for doc in lines(path)[1:]]


def test_a_killed_batch_resumes_without_losing_repeating_or_redoing_an_item(
        tmp_path: Path) -> None:
    ids = [f"k{n:02d}" for n in range(16)]
    source, out = write_items(tmp_path / "in.jsonl", ids), tmp_path / "out.jsonl"
    with OpenAICompatServer(handler=judged(delay=0.15)) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "redline", "batch", str(source), "-o", str(out),
             "--base-url", server.base_url, "--concurrency", "3", "-q"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
        deadline = time.monotonic() + 120
        while not out.exists() or out.read_text().count("\n") < 4:  # header + 3 items
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
            time.sleep(0.02)
        proc.kill()
        proc.wait(timeout=30)
        whole = out.read_text()[:out.read_text().rfind("\n") + 1]
        finished = {json.loads(line)["id"] for line in whole.splitlines()[1:]}
        assert 3 <= len(finished) < len(ids)
        before = len(server.requests)

        again = batch(str(source), "-o", str(out), "--base-url", server.base_url, "--resume",
                      "--concurrency", "3")
        assert again.returncode == 0, again.stderr
        redone = {item_of(r) for r in server.requests[before:]}
    got = result_ids(out)
    assert sorted(got) == ids  # none lost, none twice
    assert not finished & redone  # what finished before the kill was not computed again
    assert redone == set(ids) - finished
    assert f"resuming: {len(finished)} of 16 items already done" in again.stderr


def test_a_torn_last_line_is_dropped_and_its_item_redone(tmp_path: Path) -> None:
    ids = ["a", "b", "c", "d"]
    source, out = write_items(tmp_path / "in.jsonl", ids), tmp_path / "out.jsonl"
    with OpenAICompatServer(handler=judged()) as server:
        first = batch(str(source), "-o", str(out), "--base-url", server.base_url)
        assert first.returncode == 0, first.stderr
        text = out.read_text().splitlines(keepends=True)
        torn = json.loads(text[-1])["id"]
        out.write_text("".join(text[:-1]) + text[-1][: len(text[-1]) // 2])
        before = len(server.requests)
        again = batch(str(source), "-o", str(out), "--base-url", server.base_url, "--resume")
        redone = {item_of(r) for r in server.requests[before:]}
    assert again.returncode == 0, again.stderr
    assert f"dropped the torn last line {len(text)}" in again.stderr
    assert redone == {torn}
    assert sorted(result_ids(out)) == ids


def test_bad_input_lines_are_all_named_and_nothing_runs(tmp_path: Path) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text('{"id": "a", "task": "fine"}\n{"id": "b", "task": 3}\nnot json\n\n'
                      '{"draft": "x"}\n{"id": "a", "task": "again"}\n')
    with OpenAICompatServer(handler=judged()) as server:
        result = batch(str(source), "-o", str(out), "--base-url", server.base_url)
        assert server.requests == []
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"redline: error: {source}: 4 bad lines: line 2: 'task'")
    for part in ("line 3: not JSON", "line 5: missing 'task'",
                 "line 6: duplicate id 'a' (first on line 1)"):
        assert part in result.stderr
    assert not out.exists()


def test_an_item_that_fails_is_recorded_and_the_batch_exits_3(tmp_path: Path) -> None:
    ids = ["ok1", "bad", "ok2"]
    source, out = write_items(tmp_path / "in.jsonl", ids), tmp_path / "out.jsonl"
    refuse = judged(draft=lambda r: Fail(400) if item_of(r) == "bad" else "fine")
    with OpenAICompatServer(handler=refuse) as server:
        result = batch(str(source), "-o", str(out), "--base-url", server.base_url)
    assert result.returncode == 3, result.stderr
    docs = {doc["id"]: doc for doc in lines(out)[1:]}
    assert sorted(docs) == sorted(ids)
    assert docs["bad"]["stop_reason"] == "error" and "HTTP 400" in docs["bad"]["error"]
    assert docs["ok1"]["stop_reason"] == docs["ok2"]["stop_reason"] == "threshold"
    assert "1 ended with an error" in result.stderr and "Traceback" not in result.stderr


def test_a_flaky_server_loses_nothing(tmp_path: Path) -> None:
    ids = [f"f{n}" for n in range(12)]
    source, out = write_items(tmp_path / "in.jsonl", ids), tmp_path / "out.jsonl"
    seen: dict[str, int] = {}
    lock = threading.Lock()
    faults = [Fail(500, headers={"Retry-After": "0"}), Fail(429, headers={"Retry-After": "0"}),
              Fail.dropped()]
    answer = judged()

    def flaky(request: dict) -> str | Fail:
        # About 30% of distinct requests fail once or twice, then succeed (within the
        # client's retries); which ones is fixed by the request, not by timing.
        key = json.dumps(request, sort_keys=True)
        with lock:
            seen[key] = tries = seen.get(key, 0) + 1
        bad = hash(key) % 10
        if bad < 3 and tries <= 1 + bad % 2:
            return faults[(bad + tries) % 3]
        return answer(request)

    with OpenAICompatServer(handler=flaky) as server:
        result = batch(str(source), "-o", str(out), "--base-url", server.base_url,
                       "--concurrency", "4")
        failures = len(server.requests) - len(seen)
    assert result.returncode == 0, result.stderr
    assert failures > 0  # the faults happened
    assert sorted(result_ids(out)) == sorted(ids)
    assert {doc["stop_reason"] for doc in lines(out)[1:]} == {"threshold"}


def test_a_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    source, out = write_items(tmp_path / "in.jsonl", ["a"]), tmp_path / "out.jsonl"
    with OpenAICompatServer(handler=judged()) as server:
        assert batch(str(source), "-o", str(out), "--base-url", server.base_url,
                     "--max-rounds", "1").returncode == 0
        kept = out.read_bytes()
        before = len(server.requests)
        other = batch(str(source), "-o", str(out), "--base-url", server.base_url,
                      "--max-rounds", "2", "--resume")
        fresh = batch(str(source), "-o", str(out), "--base-url", server.base_url,
                      "--max-rounds", "1")
        assert len(server.requests) == before
    assert other.returncode == 2 and other.stderr.count("\n") == 1
    assert "written with other settings (budget.max_rounds: 1 in the file, 2 now)" \
        in other.stderr
    assert fresh.returncode == 2 and "add --resume" in fresh.stderr
    assert out.read_bytes() == kept


def test_two_batches_run_sandboxed_tests_side_by_side(tmp_path: Path) -> None:
    code = "```python\ndef add(a, b):\n    return a + b\n```"
    tests = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n"
    with OpenAICompatServer(handler=judged(delay=0.05, draft=lambda r: code)) as server:
        procs = []
        for name in ("one", "two"):
            source = write_items(tmp_path / f"{name}.jsonl", [f"{name}{n}" for n in range(4)],
                                 metadata={"tests": tests})
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "redline", "batch", str(source), "-o",
                 str(tmp_path / f"{name}.out.jsonl"), "--base-url", server.base_url,
                 "-c", "pytest", "--concurrency", "4", "-q"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, env=ENV))
        errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    for name in ("one", "two"):
        docs = lines(tmp_path / f"{name}.out.jsonl")[1:]
        assert sorted(d["id"] for d in docs) == [f"{name}{n}" for n in range(4)]
        for doc in docs:
            assert doc["stop_reason"] == "threshold" and doc["best"]["score"] == 1.0
            assert doc["best"]["critiques"][0]["critic"] == "pytest"


def test_a_checkpoint_resumes_an_item_in_flight_mid_loop(tmp_path: Path) -> None:
    pytest.importorskip("langgraph.checkpoint.sqlite.aio")
    source, out = write_items(tmp_path / "in.jsonl", ["slow"]), tmp_path / "out.jsonl"
    db = tmp_path / "runs.sqlite"
    revising = threading.Event()

    def handle(request: dict) -> str:
        if is_verdict(request):
            text = json.dumps(request)
            done = "second try" in text
            return json.dumps({"score": 10 if done else 2,
                               "feedback": "" if done else "FIX-IT please"})
        if "FIX-IT" in json.dumps(request):
            revising.set()
            slow_done.wait(60)  # the first process is killed while it waits
            return "second try"
        return "first try"

    slow_done = threading.Event()
    with OpenAICompatServer(handler=handle) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "redline", "batch", str(source), "-o", str(out),
             "--base-url", server.base_url, "--checkpoint", str(db), "-q"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
        assert revising.wait(120), proc.stderr
        # LangGraph saves checkpoints in the background: wait for the one before the
        # revision (input, generate, critique, decide: 5 with the first), then kill.
        deadline = time.monotonic() + 60
        while _checkpoints(db) < 5:
            assert time.monotonic() < deadline, _checkpoints(db)
            time.sleep(0.05)
        proc.kill()
        proc.wait(timeout=30)
        slow_done.set()
        before = len(server.requests)
        again = batch(str(source), "-o", str(out), "--base-url", server.base_url,
                      "--checkpoint", str(db), "--resume")
        after = server.requests[before:]
    assert again.returncode == 0, again.stderr
    # The draft and its verdict came from the checkpoint: only the revision ran again.
    drafts = [r for r in after if not is_verdict(r) and "FIX-IT" not in json.dumps(r)]
    assert drafts == [] and any("FIX-IT" in json.dumps(r) for r in after)
    (doc,) = lines(out)[1:]
    assert [s["candidate"]["text"] for r in doc["rounds"] for s in r["scored"]] == \
        ["first try", "second try"]
    assert doc["stop_reason"] == "threshold"


def test_a_checkpoint_that_cannot_be_one_is_refused_before_anything_runs(tmp_path: Path
                                                                        ) -> None:
    pytest.importorskip("langgraph.checkpoint.sqlite.aio")
    source, out = write_items(tmp_path / "in.jsonl", ["a", "b"]), tmp_path / "out.jsonl"
    garbage = tmp_path / "garbage.db"
    garbage.write_text("not a database\n")
    cases = [
        ([str(garbage), "--resume"], "is not a SQLite database"),
        ([str(source), "--resume"], "is not a SQLite database"),  # the input, by mistake
        ([str(tmp_path / "no" / "ck.db")], "folder"),
        ([str(tmp_path)], "is not a file"),
    ]
    with OpenAICompatServer(handler=judged()) as server:
        for args, message in cases:
            result = batch(str(source), "-o", str(out), "--base-url", server.base_url,
                           "--checkpoint", *args)
            assert result.returncode == 2, result.stderr
            assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
            assert not out.exists()
        assert server.requests == []
        # The output file given as its own checkpoint: refused, the output left as it was.
        assert batch(str(source), "-o", str(out), "--base-url", server.base_url).returncode == 0
        kept, before = out.read_bytes(), len(server.requests)
        same = batch(str(source), "-o", str(out), "--base-url", server.base_url,
                     "--checkpoint", str(out), "--resume")
        assert len(server.requests) == before
    assert same.returncode == 2 and "is the output file" in same.stderr, same.stderr
    assert out.read_bytes() == kept


def _checkpoints(db: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_ctrl_c_keeps_what_finished_and_exits_130(tmp_path: Path) -> None:
    import signal

    ids = [f"c{n:02d}" for n in range(12)]
    source, out = write_items(tmp_path / "in.jsonl", ids), tmp_path / "out.jsonl"
    with OpenAICompatServer(handler=judged(delay=0.15)) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "redline", "batch", str(source), "-o", str(out),
             "--base-url", server.base_url, "--concurrency", "3"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=ENV)
        deadline = time.monotonic() + 120
        while not out.exists() or out.read_text().count("\n") < 3:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "interrupted:" in err and "--resume continues" in err and "Traceback" not in err
        kept = result_ids(out)  # whole lines only: in-flight items are not written
        assert out.read_text().endswith("\n") and len(set(kept)) == len(kept) < len(ids)
        again = batch(str(source), "-o", str(out), "--base-url", server.base_url, "--resume")
    assert again.returncode == 0, again.stderr
    assert sorted(result_ids(out)) == ids


def test_ctrl_c_before_the_first_result_leaves_no_file(tmp_path: Path) -> None:
    import signal

    source, out = write_items(tmp_path / "in.jsonl", ["a", "b"]), tmp_path / "out.jsonl"
    with OpenAICompatServer(handler=judged(delay=30)) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "redline", "batch", str(source), "-o", str(out),
             "--base-url", server.base_url],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=ENV)
        deadline = time.monotonic() + 120
        while len([r for r in server.requests if "messages" in r]) < 2:  # both drafting
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        assert out.exists()  # the header, written when the first item started
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert not out.exists()  # nothing finished: the rerun needs no --resume


def test_a_resume_onto_another_inputs_output_is_warned_about(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with OpenAICompatServer(handler=judged()) as server:
        first = batch(str(write_items(tmp_path / "one.jsonl", ["a", "b"])), "-o", str(out),
                      "--base-url", server.base_url)
        assert first.returncode == 0, first.stderr
        other = batch(str(write_items(tmp_path / "two.jsonl", ["a", "c"])), "-o", str(out),
                      "--base-url", server.base_url, "--resume")
    assert other.returncode == 0, other.stderr
    assert "the output holds 1 result whose id is not in the input ('b'): is it another " \
        "input's output?" in other.stderr
    assert sorted(result_ids(out)) == ["a", "b", "c"]  # warned, not refused: nothing lost
