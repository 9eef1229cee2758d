"""Python tests run against a candidate's code in the sandbox.

A `TestSuite` is a plan: the steps of a test module (setup statements, top-level
``assert`` statements, ``test_*`` functions and ``Test*`` classes, the body of a
HumanEval-style ``check(candidate)``) or doctest examples. `run_tests` runs them and
returns a `TestReport` naming every test's outcome.

Verdicts are decided outside the candidate's process. `run_tests` starts two
sandboxes at once, joined by two pipes that this process makes: the *server*
(``_pytests_server.py``) loads the candidate's code and answers requests; the
*harness* (``_pytests_child.py``) runs the tests, each under its own timer, with the
candidate's names bound to plain values or to references whose calls are requests to
the server (``_wire.py``: values cross as data; an object that is not plain data
comes back as a reference that equals nothing but itself). The harness alone holds
the fd of the results file. So whatever the candidate does in its process — patching
anything there, printing or writing fake results, exiting early — the only thing it
can change is the data its functions return, and the harness compares that itself.
What looks like tampering (builtins or the server replaced, malformed or unasked-for
replies, fake result records, the process ending itself mid-test) is reported in
`TestReport.tampering`, and a critique scores such a candidate 0.
"""

from __future__ import annotations

import ast
import doctest
import functools
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from redline.feedback_sources.sandbox import Sandbox, SandboxJob, SandboxResult

__all__ = ["TestOutcome", "TestReport", "TestSuite", "feedback", "run_tests"]

_HERE = Path(__file__).parent
_WIRE = (_HERE / "_wire.py").read_text(encoding="utf-8")
_HARNESS = _WIRE + "\n" + (_HERE / "_pytests_child.py").read_text(encoding="utf-8")
_SERVER = _WIRE + "\n" + (_HERE / "_pytests_server.py").read_text(encoding="utf-8")
_RESULTS = ".redline-results.jsonl"
_START = 10.0
"""Seconds the harness waits for the server's interpreter to start (beyond the load)."""
_GONE = "the code's process ended while being tested"
"""What the harness says of a test when the code's process is gone (_pytests_child.py)."""
_FAKE_RECORD = re.compile(r'"(?:ok|event|passed)"\s*:\s*(?:true|"done"|"load")')


@dataclass(frozen=True)
class TestSuite:
    """What to run: a tests module's source and the steps planned from it."""

    __test__ = False  # not a pytest test class

    source: str
    steps: tuple[dict[str, Any], ...]
    entry_point: str | None = None
    unreadable: tuple[str, ...] = ()
    """Examples `from_doctests` skipped because doctest cannot read them (why, each)."""

    @property
    def names(self) -> list[str]:
        """The tests' names, in order (setup steps excluded)."""
        return [s["name"] for s in self.steps if s["kind"] not in ("setup", "check-setup")]

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_source(cls, source: str, *, entry_point: str | None = None) -> TestSuite:
        """Plan a tests module (pytest-style, bare asserts, or ``check(candidate)``).

        Raises:
            SyntaxError: the tests do not parse.
            ValueError: they define ``check(candidate)`` but no entry point is known.
        """
        tree = ast.parse(source, "tests.py")
        first: list[dict[str, Any]] = []
        later: list[dict[str, Any]] = []
        names: set[str] = set()

        def name_of(node: ast.AST) -> str:
            text = ast.unparse(node).splitlines()[0]
            text = text if len(text) <= 150 else text[:147] + "..."
            if text in names:
                text = f"{text} (line {getattr(node, 'lineno', 0)})"
            names.add(text)
            return text

        for i, node in enumerate(tree.body):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) \
                    and node.name.startswith("test"):
                first.append({"kind": "setup", "index": i, "name": f"setup: def {node.name}"})
                later.append({"kind": "function", "index": i, "name": node.name})
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                first.append({"kind": "setup", "index": i, "name": f"setup: class {node.name}"})
                later += [{"kind": "method", "index": i, "name": f"{node.name}.{m.name}"}
                          for m in node.body if isinstance(m, ast.FunctionDef)
                          and m.name.startswith("test")]
            elif isinstance(node, ast.FunctionDef) and node.name == "check" \
                    and _has_assert(node.body):
                if entry_point is None:
                    raise ValueError("the tests define check(candidate) but no entry point "
                                     "(the function to check) is known")
                for j, stmt in enumerate(node.body):
                    text = re.sub(r"\bcandidate\b", entry_point, name_of(stmt))
                    kind = "check" if _has_assert([stmt]) else "check-setup"
                    later.append({"kind": kind, "index": i, "sub": j,
                                  "name": text if kind == "check" else f"setup: {text}"})
            elif _has_assert([node]):
                first.append({"kind": "statement", "index": i, "name": name_of(node)})
            else:
                first.append({"kind": "setup", "index": i,
                              "name": f"setup: {name_of(node)}"})
        return cls(source=source, steps=tuple(first + later), entry_point=entry_point)

    @classmethod
    def from_doctests(cls, text: str) -> TestSuite:
        """The ``>>>`` examples in `text`, one test each.

        When `text` is Python (a HumanEval prompt: a signature and a docstring), the
        examples are read from its docstrings, as doctest does; otherwise from the text.

        An example doctest cannot read (an expected output less indented than its
        ``>>>``, as when a docstring that is not raw writes ``"a\\nb"``) is skipped and
        named in `unreadable`, so one bad example does not hide the others.

        Raises:
            ValueError: there are examples and none can be read (doctest's message).
        """
        steps: list[dict[str, Any]] = []
        found, unreadable = _examples(text)
        for example in found:
            name = ">>> " + example.source.strip().splitlines()[0]
            steps.append({"kind": "doctest", "name": name, "source": example.source,
                          "want": example.want, "exc_msg": example.exc_msg,
                          "lineno": example.lineno})
        names = [s["name"] for s in steps]
        for i, step in enumerate(steps):  # names must be unique
            if names.count(step["name"]) > 1:
                step["name"] += f" (example {i + 1})"
        return cls(source="", steps=tuple(steps), unreadable=tuple(unreadable))


def _examples(text: str) -> tuple[list[doctest.Example], list[str]]:
    """The examples in `text` and why each unreadable one was skipped."""
    unreadable: list[str] = []
    try:
        tree = ast.parse(text)
    except SyntaxError:  # not Python: take the text as it is, minus docstring quotes
        examples = _readable_examples(text, unreadable)
        for example in examples:  # the expected output ends where a docstring does
            lines = example.want.splitlines(keepends=True)
            ends = [i for i, ln in enumerate(lines) if ln.lstrip().startswith(('"""', "'''"))]
            example.want = "".join(lines[:ends[0]] if ends else lines)
    else:
        docs = [ast.get_docstring(node) for node in ast.walk(tree)
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef
                              | ast.AsyncFunctionDef)]
        examples = [e for doc in docs if doc for e in _readable_examples(doc, unreadable)]
    if unreadable and not examples:
        raise ValueError(unreadable[0])
    return examples, unreadable


def _line_in(offset: int, match: re.Match[str]) -> str:
    """doctest's "line N of the docstring" of a piece that starts at line `offset`."""
    return f"line {offset + int(match.group(1))}"


def _readable_examples(text: str, unreadable: list[str]) -> list[doctest.Example]:
    """doctest's examples of `text`; when one is malformed, each example is read on its
    own (from its ``>>>`` line to the next) and the malformed ones are skipped, their
    reasons added to `unreadable`."""
    parser = doctest.DocTestParser()
    try:
        return parser.get_examples(text)
    except ValueError:
        pass
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.lstrip().startswith(">>>")]
    examples: list[doctest.Example] = []
    for start, end in zip(starts, [*starts[1:], len(lines)], strict=True):
        try:
            found = parser.get_examples("".join(lines[start:end]))
        except ValueError as exc:
            where = re.sub(r"line (\d+) of the docstring for <string>",
                           functools.partial(_line_in, start), str(exc))
            unreadable.append(f"{lines[start].strip()[:80]} ({where})")
            continue
        for example in found:
            example.lineno += start
        examples.extend(found)
    return examples


@dataclass(frozen=True)
class TestOutcome:
    """One test's outcome."""

    __test__ = False

    name: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class TestReport:
    """What running a suite against some code gave."""

    __test__ = False

    outcomes: tuple[TestOutcome, ...]
    """Every test's outcome (failed setup steps included, as failures)."""
    run: SandboxResult
    """The sandbox run."""
    error: str | None = None
    """Why no test could run (the code does not compile, crashed or hung on import)."""
    error_kind: Literal["syntax", "error", "timeout"] | None = None
    """``syntax``, ``error`` (an exception or a limit) or ``timeout``."""
    suspects: frozenset[str] = field(default_factory=frozenset)
    """Tests to leave out of the score and the feedback (generated tests thought wrong)."""
    tampering: tuple[str, ...] = ()
    """What the candidate did to the test machinery, when it tried (scores 0)."""
    harness: SandboxResult | None = None
    """The harness's sandbox run (`run` is the candidate's)."""

    @property
    def counted(self) -> list[TestOutcome]:
        """The outcomes that count (suspects left out)."""
        return [o for o in self.outcomes if o.name not in self.suspects]

    @property
    def total(self) -> int:
        """Tests counted."""
        return len(self.counted)

    @property
    def passed(self) -> int:
        """Tests counted that passed."""
        return sum(o.passed for o in self.counted)


async def run_tests(sandbox: Sandbox, code: str, suite: TestSuite, *, timeout: float,
                    test_timeout: float) -> TestReport:
    """Run `suite` against `code` (the module ``solution``): two sandboxes, see above."""
    requests, replies = os.pipe(), os.pipe()
    with tempfile.TemporaryFile() as results:
        fds = [requests[1], replies[0], os.dup(results.fileno())]
        plan = {"tests_source": suite.source, "steps": list(suite.steps),
                "entry_point": suite.entry_point, "test_timeout": test_timeout,
                "start_timeout": _START, "fds": fds}
        server: dict[str, Any] = {"fds": [requests[0], replies[1]],
                                  "test_timeout": test_timeout}
        jobs = [SandboxJob(_HARNESS, {"tests.py": suite.source, "plan.json": json.dumps(plan)},
                           pass_fds=fds),
                SandboxJob(_SERVER, {"solution.py": code, "server.json": json.dumps(server)},
                           collect=[_RESULTS], pass_fds=server["fds"])]
        harness, run = await sandbox.run_group(jobs, timeout=timeout)
        results.seek(0)
        records = _records(results.read().decode("utf-8", errors="replace"))
    tampering = _tampering(records, run)
    timed_out = run.timed_out or harness.timed_out
    load = next((r for r in records if r.get("event") == "load"), None)
    outcomes = [TestOutcome(str(r["name"]), r.get("ok") is True, str(r.get("detail", "")))
                for r in records if "name" in r]
    if run.timed_out:  # the time limit ended the code's process, not the code itself
        outcomes = _timed_out(outcomes, _stopped(run, timeout))
    if load is None or not load["ok"]:
        kind: Literal["syntax", "error", "timeout"] = \
            load["kind"] if load else ("timeout" if timed_out else "error")
        detail = load["detail"] if load and not _gone(records) else _stopped(run, timeout)
        failed = tuple(TestOutcome(n, False, "did not run") for n in suite.names)
        return TestReport(failed, run, error=detail, error_kind=kind, tampering=tampering,
                          harness=harness)
    if not any(r.get("event") == "done" for r in records):
        reported = {o.name.split("[")[0] for o in outcomes} | {o.name for o in outcomes}
        missing = [n for n in suite.names if n not in reported]
        reason = _stopped(harness if harness.timed_out else run, timeout)
        outcomes += [TestOutcome(n, False, reason if i == 0 else f"did not run ({reason})")
                     for i, n in enumerate(missing)]
    return TestReport(tuple(outcomes), run, tampering=tampering, harness=harness)


def _timed_out(outcomes: list[TestOutcome], reason: str) -> list[TestOutcome]:
    """Outcomes that blame the end of the code's process, blaming the time limit."""
    gone = f"did not run: {_GONE}"
    fixed, first = [], True
    for outcome in outcomes:
        if not outcome.passed and outcome.detail == gone:
            outcome = TestOutcome(outcome.name, False,
                                  reason if first else f"did not run ({reason})")
            first = False
        fixed.append(outcome)
    return fixed


def _gone(records: list[dict[str, Any]]) -> bool:
    return any(r.get("event") == "gone" for r in records)


def _tampering(records: list[dict[str, Any]], run: SandboxResult) -> tuple[str, ...]:
    """What the candidate's process did to the machinery, from both sides' evidence."""
    found = [str(r.get("detail", "")) for r in records if r.get("event") == "tamper"]
    if _gone(records) and run.exit_code >= 0 and not run.timed_out and run.limit is None:
        found.append(f"the code ended its own process (exit status {run.exit_code}) "
                     "while being tested")
    if _RESULTS in run.files:
        found.append(f"the code wrote a results file ({_RESULTS})")
    if _FAKE_RECORD.search(run.stdout) or _FAKE_RECORD.search(run.stderr):
        found.append("the code printed what look like test results")
    return tuple(dict.fromkeys(found))


def _records(text: str) -> list[dict[str, Any]]:
    """The harness's JSON lines; a line cut short (a killed run) or mangled is skipped."""
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _stopped(run: SandboxResult, timeout: float) -> str:
    """Why a sandbox run ended before the harness finished."""
    if run.timed_out:
        return f"the run was stopped after {timeout:g} s (time limit)"
    why = {"memory": "ran out of memory (address-space limit)",
           "cpu": "used up its CPU time", "file_size": "wrote more than the file-size limit",
           "processes": "started too many processes"}.get(run.limit or "", "")
    tail = "\n".join(run.stderr.strip().splitlines()[-6:])
    head = f"the process {why}" if why else f"the process exited with status {run.exit_code}"
    return f"{head}\n{tail}".strip()


def feedback(report: TestReport, *, max_chars: int = 3000) -> str:
    """What the reviser should read: the error, or each failing test and why, trimmed."""
    if report.error_kind == "syntax":
        return f"The code does not compile, so no test ran:\n{report.error}"
    if report.error_kind == "timeout":
        return f"Running the code did not finish, so no test ran:\n{report.error}"
    if report.error:
        return f"Running the code failed before any test ran:\n{report.error}"
    failing = [o for o in report.counted if not o.passed]
    if not failing:
        return ""
    parts = [f"{len(failing)} of {report.total} tests failed:"]
    used = len(parts[0])
    for i, outcome in enumerate(failing):
        detail = outcome.detail if len(outcome.detail) <= 800 else \
            "..." + outcome.detail[-800:]
        entry = f"- {outcome.name}" + (
            "\n" + "\n".join("    " + ln for ln in detail.splitlines()) if detail else "")
        if used + len(entry) > max_chars and i:
            parts.append(f"... and {len(failing) - i} more failing tests.")
            break
        parts.append(entry)
        used += len(entry)
    return "\n".join(parts)


def _has_assert(nodes: list[ast.stmt]) -> bool:
    """True when the statements hold an ``assert`` outside nested functions and classes."""
    todo: list[ast.AST] = list(nodes)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Assert):
            return True
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
                          | ast.Lambda):
            todo.extend(ast.iter_child_nodes(node))
    return False
