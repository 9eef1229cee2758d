"""``redline compare``: methods at a matched budget, a hidden evaluator, flips and fixes,
through the real CLI, a loopback server, the real graph and the real sandbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from redline.cli import cli
from redline.prompts import render
from redline.testing import OpenAICompatServer
from redline.workflows.compare import CompareItem, MethodRow, make_evaluator, wilson

MARKER = "HIDDEN-7f3a"
ITEMS = [
    {"id": "q1", "task": "What is 2 + 3?", "answer": "5"},
    {"id": "q2", "task": "What is 4 * 4?", "answer": "16"},
    {"id": "q3", "task": "Name the capital of France.", "answer": "Paris"},
    {"id": "q4", "task": "Write a Python function add(a, b).",
     "hidden_tests": f"# {MARKER}\nassert add(2, 3) == 5\n", "extra": {"note": MARKER}},
]
DRAFTS = {"2 + 3": "The answer is 5.", "4 * 4": "The answer is 15.",
          "capital of France": "Paris",
          "add(a, b)": "```python\ndef add(a, b):\n    return a + b\n```"}
# Self-Refine's revisions: q1 right → wrong (a flip), q2 wrong → right (a fix).
REVISIONS = {"The answer is 5.": "final: The answer is 6.",
             "The answer is 15.": "final: The answer is 16.",
             "Paris": "The final answer is Paris.",
             DRAFTS["add(a, b)"]: "final:\n" + DRAFTS["add(a, b)"]}


def handler(request: dict[str, Any]) -> str:
    messages = request["messages"]
    system, user = messages[0]["content"], messages[-1]["content"]
    if system == render("judge_system"):
        return json.dumps({"score": 10 if "final" in user else 3, "feedback": "check it"})
    if "Improve your answer" in user:
        return next(v for k, v in REVISIONS.items() if k in user)
    return next(v for k, v in DRAFTS.items() if k in user)


@pytest.fixture(autouse=True)
def _no_model_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "REDLINE_MODEL", "REDLINE_MODEL_PATH"):
        monkeypatch.delenv(name, raising=False)


def data(tmp_path: Path, items: list[dict[str, Any]] = ITEMS) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    return path


def compare(server: OpenAICompatServer, *args: str) -> Any:
    return CliRunner().invoke(cli, ["compare", *args, "--base-url", server.base_url,
                                    "--model", server.model, "-q"])


def test_methods_side_by_side_with_flips_fixes_and_a_hidden_evaluator(tmp_path: Path) -> None:
    out = tmp_path / "cmp.jsonl"
    with OpenAICompatServer(handler=handler) as server:
        result = compare(server, str(data(tmp_path)), "--methods",
                         "single,best-of-n,self-refine", "-n", "3", "--max-tokens", "8000",
                         "-o", str(out), "--table-json")
        prompts = json.dumps(server.requests)
    assert result.exit_code == 0, result.output
    rows = {r["method"]: r for r in json.loads(result.stdout)["methods"]}
    assert (rows["single"]["correct"], rows["single"]["flips"], rows["single"]["fixes"]) == (
        3, 0, 0)
    refine = rows["self-refine"]
    assert (refine["correct"], refine["flips"], refine["fixes"]) == (3, 1, 1)
    assert refine["flip_rate"] == pytest.approx(1 / 3) and refine["fix_rate"] == 1.0
    assert rows["best-of-n"]["correct"] == 3 and rows["best-of-n"]["flips"] == 0
    # The evaluator's fields never reach the loop.
    assert MARKER not in prompts and "hidden_tests" not in prompts
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0]["redline_compare"] == 1 and lines[0]["spec"]["max_tokens"] == 8000
    results = lines[1:]
    assert len(results) == 12 and len({(r["method"], r["id"]) for r in results}) == 12
    for r in results:  # the matched budget: every method stayed inside it on every item
        assert r["usage"]["input_tokens"] + r["usage"]["output_tokens"] <= 8000
    bon = [r for r in results if r["method"] == "best-of-n"]
    assert all(len(r["rounds"]) == 1 and len(r["rounds"][0]["scored"]) == 3 for r in bon)
    flipped = next(r for r in results if r["method"] == "self-refine" and r["id"] == "q1")
    assert flipped["draft_correct"] is True and flipped["correct"] is False


def test_a_compare_resumes_without_running_anything_twice(tmp_path: Path) -> None:
    out = tmp_path / "cmp.jsonl"
    path = data(tmp_path)
    with OpenAICompatServer(handler=handler) as server:
        first = compare(server, str(path), "--methods", "single", "--max-tokens", "500",
                        "-o", str(out))
        assert first.exit_code == 0, first.output
        before = len(server.requests)
        again = compare(server, str(path), "--methods", "single", "--max-tokens", "500",
                        "-o", str(out), "--resume")
        assert again.exit_code == 0 and len(server.requests) == before
        other = compare(server, str(path), "--methods", "single", "--max-tokens", "600",
                        "-o", str(out), "--resume")
    assert other.exit_code == 2 and "other settings" in other.stderr


@pytest.mark.parametrize(("args", "lines", "message"), [
    (["--methods", "single,nope"], None, "unknown preset 'nope'"),
    (["--methods", "single,single"], None, "method 'single' is given twice"),
    (["--methods", "single", "--preset", "critic"], None, "leave out --preset"),
    (["--methods", "single", "--evaluator", "tests"], None, "has no 'hidden_tests'"),
    (["--methods", "single", "--evaluator", "nope"], None, "unknown evaluator 'nope'"),
    (["--methods", "single"], ['{"id": "a", "task": "Q", "answer": "1"}', "not json",
                               '{"id": "a", "task": "R", "answer": "2"}'],
     "2 bad lines: line 2: not JSON"),
    (["--methods", "single"], ['{"id": "a", "task": "Q"}'], "neither 'hidden_tests' nor"),
    (["--methods", "single", "--evaluator", "regex"],
     ['{"id": "a", "task": "Q", "answer": "4"}', '{"id": "b", "task": "R", "answer": "(1"}'],
     "item 'b': 'answer' is not a regular expression"),
    (["--methods", "single", "--evaluator", "numeric"],
     ['{"id": "a", "task": "Q", "answer": "$1,000"}', '{"id": "b", "task": "R", "answer": "x"}'],
     "item 'b': 'answer' 'x' is not a number"),
    (["--methods", "single,,resample"], None, "empty"),
])
def test_bad_datasets_and_methods_exit_2(tmp_path: Path, args: list[str],
                                         lines: list[str] | None, message: str) -> None:
    path = tmp_path / "data.jsonl"
    if lines is None:
        data(tmp_path)
    else:
        path.write_text("\n".join(lines) + "\n")
    with OpenAICompatServer(handler=handler) as server:
        result = compare(server, str(path), *args, "--max-tokens", "500", "-o",
                         str(tmp_path / "o.jsonl"))
        assert not server.requests
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "o.jsonl").exists()


def test_a_method_that_cannot_run_stops_the_compare_before_anything_is_written(
        tmp_path: Path) -> None:
    # single needs no critic and would run; resample gets the -c critic, whose
    # program is missing: found before single spends a token or the output is made.
    out = tmp_path / "o.jsonl"
    with OpenAICompatServer(handler=handler) as server:
        result = compare(server, str(data(tmp_path)), "--methods", "single,resample",
                         "-c", 'cmd:"no-such-linter-4c1 {file}"', "--max-tokens", "2000",
                         "-o", str(out))
        completions = [r for r in server.requests if "messages" in r]
    assert result.exit_code == 2, result.output
    assert "no-such-linter-4c1" in result.stderr and "not installed" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not completions and not out.exists()


@pytest.mark.parametrize(("source", "message"), [
    ("def judge(item, text):\n    return 'yes'\n", "returned str, not a bool"),
    ("def judge(item, text):\n    raise RuntimeError('boom')\n",
     "RuntimeError: boom"),
    ("import sys\nsys.exit(0)\n", "failed to load: SystemExit: 0"),
])
def test_an_evaluator_that_breaks_leaves_no_output(tmp_path: Path, source: str,
                                                   message: str) -> None:
    (tmp_path / "ev.py").write_text(source)
    out = tmp_path / "o.jsonl"
    with OpenAICompatServer(handler=handler) as server:
        result = compare(server, str(data(tmp_path)), "--methods", "single,self-refine",
                         "--max-tokens", "2000", "--evaluator", f"{tmp_path / 'ev.py'}:judge",
                         "-o", str(out))
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not out.exists()  # the fixed evaluator's rerun needs no --resume


def test_an_unreachable_model_leaves_no_output(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    result = CliRunner().invoke(cli, [
        "compare", str(data(tmp_path)), "--methods", "single", "--max-tokens", "500",
        "-o", str(out), "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "-q"])
    assert result.exit_code == 2 and "cannot reach model" in result.stderr
    assert not out.exists()


def test_items_a_budget_left_without_an_answer_are_named(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    with OpenAICompatServer(handler=handler) as server:
        result = compare(server, str(data(tmp_path)), "--methods", "single",
                         "--max-tokens", "20", "-o", str(out))
        completions = [r for r in server.requests if "messages" in r]
    assert result.exit_code == 0, result.output
    assert not completions  # no prompt fits in 20 tokens: no call was made
    assert "single: 4 of 4 items ended with no answer (max_tokens: 0 of 20" in result.stderr
    assert "larger --max-tokens" in result.stderr
    table = CliRunner().invoke(cli, [
        "compare", str(data(tmp_path)), "--methods", "single", "--max-tokens", "20",
        "-o", str(out), "--resume", "--table-json", "--base-url", server.base_url,
        "--model", server.model, "-q"])
    row = json.loads(table.stdout)["methods"][0]
    assert row["unanswered"] == 4 and row["unanswered_detail"].startswith("max_tokens: 0 of 20")


def test_compare_needs_a_matched_budget(tmp_path: Path) -> None:
    with OpenAICompatServer(handler=handler) as server:
        result = compare(server, str(data(tmp_path)), "--methods", "single", "-o",
                         str(tmp_path / "o.jsonl"))
    assert result.exit_code == 2 and "needs --max-tokens" in result.stderr


async def test_evaluators_match_answers_and_run_hidden_tests(tmp_path: Path) -> None:
    item = CompareItem(id="x", task="Q", answer="1,000")
    assert await make_evaluator("numeric")(item, "So the total is 1000.")
    assert not await make_evaluator("numeric")(item, "The answer is 999.")
    assert await make_evaluator("exact")(CompareItem(id="y", task="Q", answer="Paris"),
                                         "The answer is paris.")
    assert await make_evaluator("regex")(CompareItem(id="z", task="Q", answer=r"\bO\(n\)"),
                                         "It runs in O(n) time.")
    code = CompareItem(id="c", task="Write add.", hidden_tests="assert add(1, 2) == 3\n")
    assert await make_evaluator("tests")(code, "def add(a, b):\n    return a + b\n")
    assert not await make_evaluator("tests")(code, "def add(a, b):\n    return a - b\n")
    assert not await make_evaluator("auto")(code, None)  # type: ignore[arg-type]
    # auto: an answer with a currency sign and separators is still a number
    dollars = CompareItem(id="d", task="Q", answer="$1,000")
    assert await make_evaluator("auto")(dollars, "The answer is 1000.0000001")
    custom = tmp_path / "judge.py"
    custom.write_text("def right(item, text):\n    return item['extra']['want'] in text\n")
    judged = make_evaluator(f"{custom}:right")
    assert await judged(CompareItem(id="w", task="Q", extra={"want": "42"}), "it is 42")


def test_rates_and_intervals() -> None:
    row = MethodRow("m")
    for correct, draft in ((True, True), (False, True), (True, False), (False, False)):
        row.add({"correct": correct, "draft_correct": draft,
                 "usage": {"input_tokens": 10, "output_tokens": 5, "llm_calls": 2}})
    assert (row.success, row.flip_rate, row.fix_rate) == (0.5, 0.5, 0.5)
    assert row.per_item(row.tokens) == 15 and row.per_item(row.calls) == 2
    low, high = wilson(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-3) and high == pytest.approx(0.7634, abs=1e-3)


def test_a_reviser_model_goes_to_the_methods_that_revise() -> None:
    from redline.workflows import RunSpec
    from redline.workflows.compare import method_specs

    base = RunSpec(model={"name": "small", "base_url": "http://127.0.0.1:9/v1"},
                   reviser_model={"name": "big", "base_url": "http://127.0.0.1:8/v1"})
    specs = method_specs(["single", "best-of-n", "self-debug", "reflexion", "resample"], base,
                         max_tokens=1000)
    assert {m: s.reviser_model and s.reviser_model.name for m, s in specs.items()} == {
        "single": None, "best-of-n": None, "self-debug": "big", "reflexion": "big",
        "resample": "big"}
    resampled = specs["resample"].build()
    assert resampled.fixer.model.model == "big"  # type: ignore[attr-defined]
    assert resampled.budget.max_tokens == 1000 and resampled.budget.max_rounds == 7
    config = specs["self-debug"].build()
    assert config.fixer.model.model == "big"  # type: ignore[attr-defined]
    assert specs["best-of-n"].build().fixer.model.model == "small"  # type: ignore[attr-defined]
