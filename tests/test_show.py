"""`redline show`: one run's trajectory in the terminal, from a --json result, a batch
output (by id) or a compare output (by id, one method or all), through click's CliRunner."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_report_data import (
    PAYLOAD,
    all_runs,
    compare_runs,
    improves,
    write_batch,
    write_compare,
    write_single,
)

from redline.cli import cli
from redline.types import RefineResult


@pytest.fixture(scope="module")
def runs() -> list[RefineResult]:
    return asyncio.run(all_runs())


@pytest.fixture(scope="module")
def batch(runs: list[RefineResult], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_batch(tmp_path_factory.mktemp("show") / "out.jsonl", runs)


def show(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["show", *args])
    return result.exit_code, result.output


def test_a_json_result_shows_rounds_scores_stop_and_the_last_revision(tmp_path: Path) -> None:
    run = asyncio.run(improves())
    code, out = show(str(write_single(tmp_path / "run.json", run)))
    assert code == 0, out
    draft, better = (s.candidate.id for r in run.rounds for s in r.scored)
    lines = out.splitlines()
    assert lines[0].startswith("item improves ─")
    assert "stopped: threshold (score 0.950 >= threshold 0.9)" in lines
    assert "score: draft 0.40 → best 0.95 (threshold 0.9)" in lines
    rounds = [line.split() for line in lines if line.strip()[:1].isdigit()]
    assert rounds == [["0", draft, "draft", "0.40", "table", "0.40", "26"],
                      ["1", better, "rewrite", "0.95", "table", "0.95", "80", "best,", "final"]]
    assert f"revision in round 1: {draft} → {better} (rewrite)" in lines
    diff = lines[lines.index("diff:") + 1:]
    assert diff == ["@@ -1,2 +1,3 @@", "-The draft answer.", "+The better answer.",
                    " line two", "+line three"]


def test_a_batch_item_shows_its_feedback_reflections_and_memory(batch: Path) -> None:
    code, out = show(str(batch), "reflects")
    assert code == 0, out
    lines = out.splitlines()
    assert [line for line in lines if line.startswith("reflection")] == [
        "reflection after round 0: lesson one", "reflection after round 1: lesson two",
        "reflection after round 2: lesson three"]
    assert lines[lines.index("memory at the end:") + 1:][:2] == ["  - lesson two",
                                                                 "  - lesson three"]
    # Only the last revision by default: the feedback on try3 caused try4.
    assert [line for line in lines if line.startswith("revision in")] == [
        line for line in lines if "(rewrite)" in line][-1:]
    feedback = lines[lines.index("feedback that caused it:") + 1]
    assert feedback == "  tests: test failed for 'try3'"
    assert lines[-2:] == ["-try3", "+try4"]
    code, every = show(str(batch), "reflects", "--all-rounds")
    assert code == 0 and every.count("revision in round") == 3
    assert "  tests: test failed for 'try1'" in every.splitlines()


def test_self_debug_shows_the_explanation_and_errors_show_the_error(batch: Path) -> None:
    code, out = show(str(batch), "debugs")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[lines.index("reviser's explanation:") + 1] == (
        "Line 2 subtracts b; add(1, 2) is -1.")
    assert "-    return a - b" in lines and "+    return a + b" in lines
    code, broken = show(str(batch), "breaks")
    assert code == 0, broken
    assert "error: critique failed: critic 'broken' failed: ZeroDivisionError: boom" in broken
    assert "no revision: the draft was kept" in broken


def test_text_from_results_is_printed_as_is_never_as_markup(batch: Path) -> None:
    code, out = show(str(batch), f"hostile{PAYLOAD}")
    assert code == 0, out
    assert f"+revised {PAYLOAD} [bold]markup[/bold]" in out.replace("\n", "")
    assert f"  nasty: fix {PAYLOAD}" in out.replace("\n", "")


def test_a_compare_item_shows_one_method_or_all(tmp_path: Path) -> None:
    source = str(write_compare(tmp_path / "c.jsonl", asyncio.run(compare_runs())))
    code, out = show(source, "improves", "--method", "self-refine")
    assert code == 0, out
    assert out.splitlines()[0].startswith("item improves · method self-refine ─")
    assert "score: draft 0.40 → best 0.95 (threshold 0.9) · correct: yes (draft: no)" in out
    code, both = show(source, "improves")
    assert code == 0
    assert [line.split(" ─")[0] for line in both.splitlines() if line.startswith("item ")] == [
        "item improves · method single", "item improves · method self-refine"]


@pytest.mark.parametrize(("args", "message"), [
    ([], "holds 5 items: give the ID of one ('improves', 'reflects', 'debugs', "),
    (["nope"], "no item 'nope' in"),
    (["improves", "--method", "x"], "--method is for a compare output"),
])
def test_a_bad_selection_is_one_line_and_exit_2(batch: Path, args: list[str],
                                               message: str) -> None:
    code, out = show(str(batch), *args)
    assert code == 2
    assert out.startswith("redline: error: ") and message in out and out.count("\n") == 1


def test_an_unknown_method_is_named_with_the_known_ones(tmp_path: Path) -> None:
    source = str(write_compare(tmp_path / "c.jsonl", asyncio.run(compare_runs())))
    code, out = show(source, "improves", "--method", "reflexion")
    assert code == 2
    assert "no method 'reflexion'" in out and "(methods: single, self-refine)" in out
