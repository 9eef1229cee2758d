"""`redline refine` and `redline critics` through click's runner and as a subprocess,
against a real OpenAI-compatible server on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from redline.cli import cli
from redline.testing import OpenAICompatServer

MODEL_ENV = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "REDLINE_MODEL", "REDLINE_MODEL_PATH")


def grader(answer_scores: dict[str, int], answers: list[str]):
    """A server script: judge requests get the mark of the answer they grade."""
    queue = list(answers)

    def handle(request: dict) -> str:
        # Judge calls are the ones asking for a verdict schema (not by prompt wording).
        if request.get("response_format"):
            user = request["messages"][1]["content"]
            for text, mark in answer_scores.items():
                if f"\n{text}\n" in user:
                    return json.dumps({"score": mark, "feedback": f"not {text}" if mark < 10
                                       else ""})
            return '{"score": 0, "feedback": "unknown"}'
        return queue.pop(0)
    return handle


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in MODEL_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[OpenAICompatServer]:
    with OpenAICompatServer(handler=grader({"first": 4, "second": 10}, ["first", "second"])) as s:
        yield s


def run(args: list[str], stdin: str | None = None):
    return CliRunner().invoke(cli, args, input=stdin, catch_exceptions=False)


def test_refine_prints_the_best_answer_and_exits_0(server: OpenAICompatServer) -> None:
    out = run(["refine", "Say something", "--base-url", server.base_url])
    assert out.exit_code == 0, out.output
    assert out.stdout == "second\n"


def test_json_output_is_the_whole_result(server: OpenAICompatServer) -> None:
    out = run(["refine", "Say something", "--base-url", server.base_url, "--json"])
    data = json.loads(out.stdout)
    assert data["stop_reason"] == "threshold"
    assert [r["scored"][0]["candidate"]["text"] for r in data["rounds"]] == ["first", "second"]
    assert data["rounds"][0]["scored"][0]["critiques"][0]["feedback"] == "not first"
    assert data["usage"]["llm_calls"] == 4
    assert set(data) >= {"task", "best", "final", "rounds", "stop_reason", "usage", "threshold"}


def test_below_threshold_exits_1_and_still_writes(tmp_path: Path) -> None:
    with OpenAICompatServer(handler=grader({"a": 3, "b": 5}, ["a", "b"])) as s:
        target = tmp_path / "out.txt"
        out = run(["refine", "Q", "--base-url", s.base_url, "--max-rounds", "1",
                   "-o", str(target)])
    assert out.exit_code == 1
    assert target.read_text() == "b\n"
    assert out.stdout == ""


def test_task_from_stdin(server: OpenAICompatServer) -> None:
    out = run(["refine", "--base-url", server.base_url], stdin="Say something\n")
    assert out.exit_code == 0 and out.stdout == "second\n"
    assert server.requests[0]["messages"][1]["content"] == "Say something"


def test_draft_file_with_task(tmp_path: Path) -> None:
    draft = tmp_path / "draft.txt"
    draft.write_text("first")
    with OpenAICompatServer(handler=grader({"first": 4, "second": 10}, ["second"])) as s:
        out = run(["refine", "-f", str(draft), "--task", "Make it better", "--base-url",
                   s.base_url, "--json"])
        data = json.loads(out.stdout)
        assert data["rounds"][0]["scored"][0]["candidate"]["origin"] == "given"
        assert data["task"]["prompt"] == "Make it better"
        # No generation call: the judge graded the given draft first.
        assert s.requests[0].get("response_format")  # a verdict was asked for


def test_a_byte_order_mark_is_not_part_of_a_draft_file(tmp_path: Path) -> None:
    draft = tmp_path / "draft.txt"
    draft.write_bytes(b"\xef\xbb\xbffirst")  # UTF-8 as Windows editors save it
    with OpenAICompatServer(handler=grader({"first": 4, "second": 10}, ["second"])) as s:
        out = run(["refine", "-f", str(draft), "--task", "Make it better", "--base-url",
                   s.base_url, "--json"])
    data = json.loads(out.stdout)
    assert data["rounds"][0]["scored"][0]["candidate"]["text"] == "first"


def test_output_file_is_replaced_atomically(tmp_path: Path, server: OpenAICompatServer) -> None:
    target = tmp_path / "answer.md"
    target.write_text("old content")
    out = run(["refine", "Q", "--base-url", server.base_url, "-o", str(target)])
    assert out.exit_code == 0
    assert target.read_text() == "second\n"
    assert [p.name for p in tmp_path.iterdir()] == ["answer.md"]


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (["refine", ""], None, "the task is empty"),
    (["refine"], "   \n", "the task is empty"),
    (["refine", "Q", "-c", "nonexistent"], None, "unknown critic 'nonexistent'"),
    (["refine", "-f", "/no/such/file.txt"], None, "cannot read '/no/such/file.txt'"),
    (["refine", "Q", "--base-url", "not a url"], None, "not a url"),
    (["refine", "Q", "-t", "1.5"], None, "threshold 1.5 is outside [0, 1]"),
    (["refine", "Q", "-t", "-0.1"], None, "outside [0, 1]"),
    (["refine", "Q", "--max-rounds", "-1"], None, "--max-rounds must be at least 0"),
    (["refine", "Q", "-o", "/no/such/dir/out.txt"], None, "does not exist"),
    (["refine", "Q", "-c", "judge:/no/rubric.txt"], None, "cannot read rubric file"),
    (["refine", "Q", "-c", ":x"], None, "has no name"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], stdin: str | None,
                                          message: str) -> None:
    out = run([*args], stdin=stdin)
    assert out.exit_code == 2, out.output
    assert message in out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("redline: error: ")
    assert out.stdout == ""


def test_unreachable_server_is_a_configuration_error() -> None:
    out = run(["refine", "Q", "--base-url", "http://127.0.0.1:9/v1"])
    assert out.exit_code == 2
    assert "127.0.0.1:9" in out.stderr and "Traceback" not in out.stderr


def test_a_judge_that_never_answers_json_exits_3(tmp_path: Path) -> None:
    with OpenAICompatServer(handler=lambda r: "no json here") as s:
        target = tmp_path / "out.txt"
        out = run(["refine", "Q", "--base-url", s.base_url, "-o", str(target)])
    # The run broke, but the draft it had made is still written (exit 3, not lost).
    assert out.exit_code == 3
    assert "no usable verdict" in out.stderr and "Traceback" not in out.stderr
    assert target.read_text() == "no json here\n"


def test_version_and_help() -> None:
    assert run(["--version"]).stdout.startswith("redline, version ")
    help_text = run(["refine", "--help"]).stdout
    for flag in ("--critic", "--threshold", "--max-rounds", "--max-tokens", "--max-seconds",
                 "--revise", "--model", "--base-url", "--api-key", "--json", "Exit codes"):
        assert flag in help_text


def test_critics_list_and_show() -> None:
    listing = run(["critics", "list"]).stdout
    assert "judge" in listing and "redline" in listing
    shown = run(["critics", "show", "judge"])
    assert shown.exit_code == 0 and "--critic judge:rubric.txt" in shown.stdout
    missing = run(["critics", "show", "nope"])
    assert missing.exit_code == 2 and "unknown critic 'nope'" in missing.stderr


def test_real_subprocess_exit_codes_stdin_and_json(server: OpenAICompatServer,
                                                   tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in MODEL_ENV}
    target = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "redline", "refine", "--base-url", server.base_url, "--json",
         "-o", str(target)], input="Say something", capture_output=True, text=True, env=env,
        timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(target.read_text())["best"]["candidate"]["text"] == "second"
    # Not a terminal: no progress, one line on why the run stopped.
    assert proc.stderr == ("redline: stopped: threshold: score 1.000 >= threshold 0.9; "
                           "best score 1.00 (threshold 0.9)\n")
    bad = subprocess.run([sys.executable, "-m", "redline", "refine", "Q", "-t", "2"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr == "redline: error: threshold 2 is outside [0, 1]\n"


def test_the_same_critic_twice_gets_numbered_names(tmp_path: Path) -> None:
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Be brief.")
    with OpenAICompatServer(handler=grader({"first": 10}, ["first"])) as s:
        out = run(["refine", "Q", "--base-url", s.base_url, "-c", "judge",
                   "-c", f"judge:{rubric}", "--json"])
    assert out.exit_code == 0, out.output
    critiques = json.loads(out.stdout)["best"]["critiques"]
    assert [c["critic"] for c in critiques] == ["judge", "judge-2"]


def test_progress_lines_on_a_terminal(server: OpenAICompatServer) -> None:
    """The progress printer, given a terminal console, reports scores and the stop."""
    import io

    from rich.console import Console

    import redline
    from redline.cli._progress import ProgressPrinter
    from redline.llm import OpenAIChat

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=200)
    printer = ProgressPrinter(console, threshold=0.9, model="m")
    with printer:
        redline.refine("Say something", model=OpenAIChat("m", base_url=server.base_url),
                       on_progress=printer)
    lines = buffer.getvalue().splitlines()
    assert lines[0].startswith("round 0  judge 0.40  → 0.40")
    assert "best 0.40/0.9" in lines[0] and "2 calls" in lines[0]
    assert lines[1].startswith("round 1  judge 1.00  → 1.00")
    assert lines[2] == "stopped: threshold (score 1.000 >= threshold 0.9)"


def test_a_rejected_key_is_a_configuration_error() -> None:
    from redline.testing import Fail

    with OpenAICompatServer([Fail(401)]) as s:
        out = run(["refine", "Q", "--base-url", s.base_url, "--api-key", "wrong"])
    assert out.exit_code == 2
    assert "HTTP 401" in out.stderr and "OPENAI_API_KEY" in out.stderr


def test_the_cli_starts_without_loading_langgraph() -> None:
    """`redline --help`, `--version` and `critics list` need no LangGraph: it loads when
    a run starts."""
    code = ("import sys; from redline.cli import cli; "
            "print([m for m in ('langgraph', 'torch', 'openai') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
