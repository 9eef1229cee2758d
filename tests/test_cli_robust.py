"""`redline refine` under hostile and malformed input, interrupts and odd output targets:
one line and an exit code, nothing lost or half-written. Real subprocesses against a
real loopback server."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from redline.testing import OpenAICompatServer

MODEL_ENV = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "REDLINE_MODEL", "REDLINE_MODEL_PATH")
ENV = {k: v for k, v in os.environ.items() if k not in MODEL_ENV}


def redline(*args: str, stdin: bytes | str | None = b"", env: dict | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    proc = subprocess.run([sys.executable, "-m", "redline", *args], input=data,
                          capture_output=True, env=env or ENV, timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode,
                                       proc.stdout.decode("utf-8", "replace"),
                                       proc.stderr.decode("utf-8", "replace"))


def scorer(marks: dict[str, int], drafts: list[str], delay: float = 0.0):  # noqa: ANN201
    queue = list(drafts)

    def handle(request: dict) -> str:
        time.sleep(delay)
        if "json_schema" in json.dumps(request.get("response_format") or {}) or \
                "grade" in request["messages"][0]["content"]:
            user = request["messages"][-1]["content"]
            mark = next((m for t, m in marks.items() if t in user), 0)
            return json.dumps({"score": mark, "feedback": "shorter please" if mark < 10 else ""})
        return queue.pop(0) if queue else "final"
    return handle


@pytest.fixture(scope="module")
def server() -> OpenAICompatServer:
    with OpenAICompatServer(handler=scorer({"first": 4, "second": 10}, ["first", "second"]))\
            as s:
        yield s


MALFORMED = [
    (["refine", "Q", "-o", "/proc/x"], "cannot write '/proc/x'"),
    (["refine", "Q", "--max-seconds", "nan"], "--max-seconds must be a finite number"),
    (["refine", "Q", "--max-seconds", "inf"], "--max-seconds must be a finite number"),
    (["refine", "Q", "--llm-timeout", "0"], "--llm-timeout must be positive, got 0"),
    (["batch", "in.jsonl", "-o", "o.jsonl", "--llm-timeout", "nan"],
     "--llm-timeout must be a finite number"),
    (["refine", "Q", "-t", "nan"], "--threshold must be a finite number"),
    (["refine", "Q", "--base-url", "http://[::1"], "base URL 'http://[::1' is malformed"),
    (["refine", "Q", "--base-url", "http://127.0.0.1:99999/v1"], "is malformed"),
    (["refine", "Q", "--base-url", "http://127.0.0.1:abc/v1"], "is malformed"),
    (["refine", "Q", "--base-url", "ftp://x/v1"], "not an http(s) URL"),
    (["refine", "Q", "--price", "cheap"], "--price 'cheap': expected IN:OUT"),
    (["refine", "Q", "--price", "1:-2"], "expected IN:OUT"),
    (["refine", "Q", "--max-cost", "1", "--base-url", "http://127.0.0.1:9/v1"],
     "--max-cost needs the model's price"),
    (["refine", "Q", "--temperature", "9"], "--temperature must be between 0 and 2"),
    (["refine", "Q", "--system", " "], "--system is empty"),
    (["refine", "Q", "--api-key-file", "/nonexistent/key"], "cannot read API key file"),
    (["refine", "-f", "/nonexistent/draft.md"], "cannot read '/nonexistent/draft.md'"),
    (["refine", "Q", "-c", "cmd:no-such-compiler-xyz {file}", "--base-url",
      "http://127.0.0.1:9/v1"], "'no-such-compiler-xyz' is not installed"),
    (["refine", "Q", "-o", "/"], "it is a folder"),
    (["refine", "Q", "-o", "/nonexistent/dir/out.txt"], "does not exist"),
    (["refine", "--max-rounds", "-1", "Q"], "--max-rounds must be at least 0"),
]


@pytest.mark.parametrize(("args", "message"), MALFORMED, ids=[" ".join(a) for a, _ in MALFORMED])
def test_malformed_invocations_give_one_line_and_exit_2(args: list[str], message: str) -> None:
    out = redline(*args)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("redline: error: "), out.stderr
    assert out.stdout == ""


def test_non_utf8_stdin_is_one_line_and_exit_2() -> None:
    out = redline("refine", stdin=b"\xff\xfe bad bytes")
    assert out.returncode == 2
    assert out.stderr == "redline: error: cannot read standard input: not UTF-8 text\n"


def test_a_task_argument_that_is_not_utf8_is_one_line_and_exit_2() -> None:
    # The shell hands Python the bytes; it decodes them with surrogateescape, and the
    # task then cannot be sent (it broke inside the first model call, exit 3).
    for args in ([b"hi \xff there"], ["Q", "--system", b"be \xfe terse"]):
        out = redline("refine", *args, "--base-url", "http://127.0.0.1:9/v1")  # type: ignore[arg-type]
        assert out.returncode == 2, out.stderr
        assert out.stderr.count("\n") == 1 and "is not UTF-8 text (character 4" \
            in out.stderr, out.stderr


def test_a_budget_too_small_for_one_call_is_a_usage_error(server: OpenAICompatServer,
                                                           tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    before = len(server.requests)
    out = redline("refine", "Q", "--max-tokens", "3", "--base-url", server.base_url,
                  "-o", str(target))
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "the budget allows no call" in out.stderr
    assert out.stderr.rstrip().endswith("raise --max-tokens") and not target.exists()
    assert [r for r in server.requests[before:] if "messages" in r] == []


def test_a_server_that_is_down_is_found_before_any_work(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    out = redline("refine", "Q", "--base-url", "http://127.0.0.1:9/v1", "-o", str(target))
    assert out.returncode == 2 and "127.0.0.1:9" in out.stderr
    assert out.stderr.count("\n") == 1 and not target.exists()


def test_output_keeps_the_files_mode_and_new_files_follow_the_umask(
        server: OpenAICompatServer, tmp_path: Path) -> None:
    existing = tmp_path / "essay.md"
    existing.write_text("first draft\n")
    existing.chmod(0o644)
    out = redline("refine", "-f", str(existing), "--base-url", server.base_url,
                  "-o", str(existing), "-q")
    assert out.returncode in (0, 1), out.stderr
    assert stat.S_IMODE(existing.stat().st_mode) == 0o644
    fresh = tmp_path / "new.txt"
    umask = os.umask(0o027)
    try:
        out = redline("refine", "Q", "--base-url", server.base_url, "-o", str(fresh), "-q")
    finally:
        os.umask(umask)
    assert out.returncode in (0, 1), out.stderr
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o640


def test_output_writes_through_symlinks_fifos_and_dev_stdout(
        server: OpenAICompatServer, tmp_path: Path) -> None:
    real = tmp_path / "real.txt"
    real.write_text("old\n")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    out = redline("refine", "Q", "--base-url", server.base_url, "-o", str(link), "-q")
    assert out.returncode in (0, 1), out.stderr
    assert link.is_symlink() and real.read_text().strip() in ("first", "second", "final")

    out = redline("refine", "Q", "--base-url", server.base_url, "-o", "/dev/stdout", "-q")
    assert out.returncode in (0, 1), out.stderr
    assert out.stdout.strip() in ("first", "second", "final")
    assert os.path.islink("/dev/stdout")  # written through, not replaced by a file

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE, text=True)
    out = redline("refine", "Q", "--base-url", server.base_url, "-o", str(fifo), "-q")
    got = reader.communicate(timeout=60)[0]
    assert out.returncode in (0, 1), out.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode) and got.strip() in ("first", "second", "final")


def test_without_a_terminal_the_stop_reason_goes_to_stderr(server: OpenAICompatServer) -> None:
    out = redline("refine", "Q", "--base-url", server.base_url, "-t", "1", "--max-rounds", "0")
    assert out.returncode == 1
    assert out.stderr.startswith("redline: stopped: sampled:")
    assert out.stderr.count("\n") == 1
    quiet = redline("refine", "Q", "--base-url", server.base_url, "-t", "1", "--max-rounds",
                    "0", "-q")
    assert quiet.returncode == 1 and quiet.stderr == ""


def test_json_is_a_versioned_self_describing_document(server: OpenAICompatServer) -> None:
    out = redline("refine", "Q", "--base-url", server.base_url, "--json", "-q",
                  "--system", "Be brief.", "--seed", "7", "--price", "0.15:0.6",
                  "--max-cost", "1")
    assert out.returncode in (0, 1), out.stderr
    doc = json.loads(out.stdout)
    assert doc["schema_version"] == 1 and doc["redline_version"]
    assert doc["text"] == doc["best"]["candidate"]["text"]
    assert doc["settings"]["model"]["base_url"] == server.base_url
    assert doc["settings"]["critics"] == ["judge"] and doc["settings"]["seed"] == 7
    assert doc["settings"]["budget"]["max_cost_usd"] == 1.0
    assert doc["task"]["system"] == "Be brief."
    assert all(s["candidate"]["id"] for r in doc["rounds"] for s in r["scored"])
    assert doc["usage"]["cost_usd"] > 0  # the price was applied


def test_the_api_key_on_the_command_line_is_warned_about_and_a_key_file_is_not(
        server: OpenAICompatServer, tmp_path: Path) -> None:
    out = redline("refine", "Q", "--base-url", server.base_url, "--api-key", "sk-test")
    assert "--api-key on the command line is visible" in out.stderr
    key = tmp_path / "key"
    key.write_text("sk-from-file\n")
    out = redline("refine", "Q", "--base-url", server.base_url, "--api-key-file", str(key))
    assert out.returncode in (0, 1) and "visible" not in out.stderr
    out = redline("refine", "Q", "--base-url", server.base_url,
                  env={**ENV, "OPENAI_API_KEY": "sk-env"})
    assert "visible" not in out.stderr


def test_a_broken_judge_still_writes_the_draft_and_exits_3(tmp_path: Path) -> None:
    with OpenAICompatServer(handler=lambda r: "not a verdict, ever") as s:
        out = redline("refine", "Q", "--base-url", s.base_url, "--json")
    assert out.returncode == 3, out.stderr
    doc = json.loads(out.stdout)
    assert doc["stop_reason"] == "error" and "no usable verdict" in doc["error"]
    assert doc["text"] == "not a verdict, ever" and doc["best"]["unscored"] is True
    assert "Traceback" not in out.stderr


def test_sigint_mid_run_writes_the_best_so_far_and_exits_130(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    with OpenAICompatServer(handler=scorer({"first": 4}, ["first"] + [f"r{i}" for i in
                                                                      range(50)], 0.3)) as s:
        proc = subprocess.Popen(
            [sys.executable, "-m", "redline", "refine", "Q", "--base-url", s.base_url,
             "--json", "-o", str(target), "--max-rounds", "50", "-t", "1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=ENV)
        deadline = time.monotonic() + 60
        # Wait until the draft was generated and judged (2 chat requests), then interrupt.
        while sum(r.get("messages") is not None for r in s.requests) < 3:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    doc = json.loads(target.read_text())
    assert doc["stop_reason"] == "interrupted" and doc["text"] == "first"
    assert "redline: stopped: interrupted" in err and "Traceback" not in err
