"""Results files for `redline report` and `redline show`, made by real runs (the refine
graph on a scripted model), and how `redline.report.load_results` reads them.

The builders here are shared with tests/test_report.py and tests/test_show.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import answers, score_table

import redline
from redline import Budget, Candidate, Critique, StopReason, Task
from redline.critics.base import Critic
from redline.errors import ConfigError
from redline.llm import Message
from redline.prompts import render
from redline.report import load_results
from redline.testing import ScriptedChat
from redline.types import RefineResult
from redline.workflows import BatchOutput, RunSpec
from redline.workflows.batch import result_line
from redline.workflows.presets import reflexion, self_debug

PAYLOAD = ('</script><script>document.title="pwned"</script>'
           '<img src=x onerror="document.body.setAttribute(\'data-pwned\',\'1\')">')
"""Text that would run if the report wrote results as HTML."""

SPEC = RunSpec(critics=["judge"], budget=Budget(max_rounds=3)).model_dump(mode="json")


class Check(Critic):
    """Passes the texts in `good`; otherwise fails with feedback and evidence."""

    def __init__(self, *good: str, name: str = "tests") -> None:
        self.good = set(good)
        self.name = name

    async def critique(self, task: Task, candidate: Candidate) -> Critique:
        ok = candidate.text in self.good
        evidence: dict[str, Any] = {} if ok else {
            "failing": [{"test": "assert add(1, 2) == 3", "error": "AssertionError"}]}
        return Critique(critic=self.name, score=1.0 if ok else 0.2, passed=ok,
                        feedback="" if ok else f"test failed for {candidate.text[:20]!r}",
                        evidence=evidence)


def routed(routes: dict[str, list[str]], default: list[str]) -> ScriptedChat:
    """Answers a call by its system prompt (a prompt name), else from `default`."""
    systems = {render(name): queue for name, queue in routes.items()}

    def handler(messages: list[Message]) -> str:
        return systems.get(messages[0]["content"], default).pop(0)

    return ScriptedChat(handler=handler)


async def improves() -> RefineResult:
    """Draft 0.4, one revision to 0.95: threshold."""
    table = score_table(**{"The draft answer.\nline two": 0.4,
                           "The better answer.\nline two\nline three": 0.95})
    return await redline.arefine(
        Task(id="improves", prompt="Write it."),
        model=answers("The draft answer.\nline two", "The better answer.\nline two\nline three"),
        critics=[table], threshold=0.9)


async def reflects() -> RefineResult:
    """Reflexion: three failed attempts with a reflection each, the fourth passes."""
    model = routed({"reflect_system": ["lesson one", "lesson two", "lesson three"]},
                   ["try1", "try2", "try3", "try4"])
    return await redline.arefine(Task(id="reflects", prompt="Solve it."),
                                 reflexion(model, Check("try4"), memory=2,
                                           budget=Budget(max_rounds=3)))


async def debugs() -> RefineResult:
    """Self-Debug: the reviser explains the failing test, then fixes the code."""
    buggy = "```python\ndef add(a, b):\n    return a - b\n```"
    fixed = "```python\ndef add(a, b):\n    return a + b\n```"
    model = routed({"selfdebug_system": ["Line 2 subtracts b; add(1, 2) is -1.", fixed]},
                   [buggy])
    return await redline.arefine(Task(id="debugs", prompt="Write add(a, b)."),
                                 self_debug(model, Check(fixed)))


async def hostile() -> RefineResult:
    """Every text of the run carries `PAYLOAD`: id, prompt, candidates, feedback,
    evidence. Stops below the threshold (max_rounds)."""
    draft, revised = f"draft {PAYLOAD}", f"revised {PAYLOAD} [bold]markup[/bold]"

    @redline.critic
    async def nasty(task: Task, candidate: Candidate) -> Critique:
        return Critique(critic="nasty", score=0.3 if candidate.text == draft else 0.5,
                        feedback=f"fix {PAYLOAD}", evidence={"hit": PAYLOAD})

    return await redline.arefine(Task(id=f"hostile{PAYLOAD}", prompt=f"Do {PAYLOAD}"),
                                 model=answers(draft, revised), critics=[nasty],
                                 budget=Budget(max_rounds=1), threshold=0.9)


async def breaks() -> RefineResult:
    """A critic that raises: stop_reason error, the draft kept unscored."""
    def broken(text: str) -> float:
        raise ZeroDivisionError("boom")

    return await redline.arefine(Task(id="breaks", prompt="Q"), model=answers("a"),
                                 critics=[broken])


async def all_runs() -> list[RefineResult]:
    return [await improves(), await reflects(), await debugs(), await hostile(),
            await breaks()]


def write_batch(path: Path, results: list[RefineResult]) -> Path:
    """A batch output as `redline batch` writes it."""
    output = BatchOutput(path, SPEC)
    output.start()
    for result in results:
        output.write(result_line(result, SPEC))
    return path


def write_single(path: Path, result: RefineResult) -> Path:
    """A `redline refine --json` file (indented, as the command writes it)."""
    path.write_text(json.dumps(result.document(SPEC), indent=2, ensure_ascii=False) + "\n")
    return path


def write_compare(path: Path, runs: dict[str, list[tuple[RefineResult, bool, bool | None]]]
                  ) -> Path:
    """A `redline compare` output: the header, then one line per (method, item) with
    the evaluator's verdicts."""
    header = {"redline_compare": 1, "methods": {m: (None if m == "single" else SPEC)
                                                for m in runs},
              "evaluator": "exact match on the final answer", "budget": {"max_tokens": 4000}}
    lines = [json.dumps(header)]
    for method, results in runs.items():
        for result, correct, draft_correct in results:
            lines.append(json.dumps({"method": method, "id": result.task.id, "correct": correct,
                                     "draft_correct": draft_correct,
                                     **result.document(SPEC)}))
    path.write_text("\n".join(lines) + "\n")
    return path


async def compare_runs() -> dict[str, list[tuple[RefineResult, bool, bool | None]]]:
    """Two methods on items "improves" and "reflects": self-refine solves both (one a
    flip from a wrong draft), single solves one."""
    return {"single": [(await improves(), False, False), (await reflects(), True, True)],
            "self-refine": [(await improves(), True, False), (await reflects(), True, True)]}


# --- reading -------------------------------------------------------------------------

async def test_a_batch_output_is_read_with_its_spec_and_every_item(tmp_path: Path) -> None:
    runs = await all_runs()
    results = load_results(write_batch(tmp_path / "out.jsonl", runs))
    assert results.kind == "batch" and results.spec == SPEC
    assert [e.id for e in results.entries] == [r.task.id for r in runs]
    assert [e.result for e in results.entries] == runs
    assert results.entries[-1].result.stop_reason is StopReason.error


async def test_a_json_result_and_a_compare_output_are_read(tmp_path: Path) -> None:
    run = await improves()
    single = load_results(write_single(tmp_path / "r.json", run))
    assert single.kind == "result" and single.spec == SPEC
    assert [(e.id, e.result) for e in single.entries] == [("improves", run)]

    compare = load_results(write_compare(tmp_path / "c.jsonl", await compare_runs()))
    assert compare.kind == "compare" and compare.method_names == ["single", "self-refine"]
    assert compare.methods == {"single": None, "self-refine": SPEC}
    assert compare.evaluator == "exact match on the final answer"
    assert [(e.method, e.id, e.correct, e.draft_correct) for e in compare.entries] == [
        ("single", "improves", False, False), ("single", "reflects", True, True),
        ("self-refine", "improves", True, False), ("self-refine", "reflects", True, True)]


async def test_a_compare_header_is_read_with_its_settings_under_spec(tmp_path: Path) -> None:
    # The shape `redline compare` writes: methods, evaluator and max_tokens in "spec".
    run = await improves()
    path = tmp_path / "c.jsonl"
    header = {"redline_compare": 1, "spec": {"methods": {"single": SPEC}, "evaluator": "exact",
                                             "max_tokens": 6000}}
    line = {"method": "single", "id": "improves", "correct": True, "draft_correct": None,
            **run.document(SPEC)}
    path.write_text(json.dumps(header) + "\n" + json.dumps(line) + "\n")
    results = load_results(path)
    assert (results.methods, results.evaluator, results.budget) == (
        {"single": SPEC}, "exact", {"max_tokens": 6000})
    assert [(e.method, e.correct, e.draft_correct) for e in results.entries] == [
        ("single", True, None)]


async def test_reading_is_lenient_with_unknown_keys_and_a_torn_last_line(
        tmp_path: Path) -> None:
    run = await improves()
    document = {"id": "x", "new_field": 1, **run.document(SPEC)}
    path = tmp_path / "out.jsonl"
    path.write_text(json.dumps({"redline_batch": 1, "spec": SPEC}) + "\n"
                    + json.dumps(document) + "\n" + '{"id": "y", "sche')
    results = load_results(path)
    assert [e.id for e in results.entries] == ["x"]
    assert results.notes == ["line 3 is not JSON and was skipped (a last line torn by a "
                             "crash)"]


@pytest.mark.parametrize(("text", "message"), [
    ("", "is empty"),
    ('{"a": 1}\n{"b": 2}\n', "not a redline results file"),
    ('{"redline_batch": 1, "spec": {}}\nnot json\n{"id": "a"}\n', "line 2: not JSON"),
    ('{"redline_batch": 1, "spec": {}}\n{"id": "a", "schema_version": 1}\n',
     "line 2: not a redline result (task: Field required)"),
    ('{"redline_compare": 1}\n{"id": "a", "schema_version": 1}\n',
     "line 2: a compare line needs a 'method'"),
    ('{"schema_version": 99}', "schema_version=99"),
])
def test_what_is_not_a_results_file_is_refused_naming_the_line(
        tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_results(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_results(tmp_path / "missing.jsonl")
