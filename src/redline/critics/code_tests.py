"""Critics that run Python tests against a candidate's code (Self-Debug's feedback).

The code is taken from the candidate (its ``python`` fenced blocks, or the whole text)
and run in the sandbox as the module ``solution``, then each test runs under its own
timer. Score = the fraction of tests passed, ``passed`` = all passed, feedback = each
failing test with its assertion (and the values it compared) or traceback. Code that
does not compile, crashes on import or does not finish is reported as such, with score 0.
The verdicts are decided in a harness process apart from the candidate's (see
`redline.feedback_sources.python_tests`): a candidate caught tampering with the test
machinery scores 0, its feedback says so and ``evidence["tampering"]`` lists what it did.

Tests come from:

- `PythonTestsCritic`: a tests module (``assert`` statements, pytest-style ``test_*``
  functions and ``Test*`` classes, or a HumanEval ``check(candidate)``) given to the
  critic, else each task's ``metadata["tests"]`` (a string or a list of strings).
- `DoctestCritic`: the examples in the task's prompt: its ``>>>`` examples (HumanEval
  prompts carry them in the function's docstring), else lines that show a call of the
  task's function and its result in prose (``f(2) == 4``, ``f(2) ➞ 4``, ``f(2) => 4``,
  ``f(2) returns 4``: see `prose_examples`), and examples that name the arguments
  (``Input: x = 2`` / ``Output: 4``, ``For x = 2 the output should be 4``: see
  `argument_examples`).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from redline._files import read_config_text
from redline.critics.base import Critic
from redline.errors import ConfigError, CriticError
from redline.feedback_sources.code import code_blocks, extract_python
from redline.feedback_sources.python_tests import TestReport, TestSuite, feedback, run_tests
from redline.feedback_sources.sandbox import Sandbox, default_sandbox
from redline.types import Candidate, Critique, Task

__all__ = ["DoctestCritic", "PythonTestsCritic", "argument_examples", "doctest_critic",
           "entry_point", "examples_text", "has_examples", "prose_examples", "pytest_critic",
           "report_critique", "task_has_examples"]

_EXAMPLE = re.compile(r"^\s*>>> ", re.MULTILINE)
_DEF = re.compile(r"^\s*(?:async\s+)?def\s+([A-Za-z_]\w*)\s*\(", re.MULTILINE)


class PythonTestsCritic(Critic):
    """Runs Python tests against the candidate's code in the sandbox.

    Args:
        tests: a tests module's source; None reads each task's ``metadata["tests"]``.
        name: the critic's name.
        sandbox: where the code runs; default: the sandbox all critics share.
        timeout: wall-clock seconds for the code and all its tests.
        test_timeout: seconds for each test (and for importing the code).
        gate: make a failing test a hard failure of the panel.
        max_feedback_chars: the feedback's length limit.

    Raises:
        ConfigError: the tests do not parse.
    """

    deterministic = True

    def __init__(self, tests: str | None = None, *, name: str = "pytest",
                 sandbox: Sandbox | None = None, timeout: float = 20.0,
                 test_timeout: float = 3.0, gate: bool = False,
                 max_feedback_chars: int = 3000) -> None:
        self.tests = tests
        self.name = name
        self.sandbox = sandbox
        self.timeout = timeout
        self.test_timeout = test_timeout
        self.gate = gate
        self.max_feedback_chars = max_feedback_chars
        if tests is not None:
            try:
                ast.parse(tests)
            except SyntaxError as exc:
                raise ConfigError(f"critic {name!r}: the tests do not parse: {exc.msg} "
                                  f"(line {exc.lineno})") from exc

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> PythonTestsCritic:
        """A critic whose tests are read from a Python file."""
        return cls(read_config_text(path, "tests file"), **kwargs)

    def suite_for(self, task: Task) -> TestSuite:
        """The tests this task's candidates are judged by."""
        tests = self.tests if self.tests is not None else task.metadata.get("tests", "")
        if isinstance(tests, list | tuple):
            tests = "\n".join(str(t) for t in tests)
        if not isinstance(tests, str):
            raise CriticError(f"critic {self.name!r}: task {task.id!r} has metadata['tests'] "
                              f"of type {type(tests).__name__}; give a string or a list of "
                              "strings", critic=self.name)
        try:
            return TestSuite.from_source(tests, entry_point=entry_point(task))
        except SyntaxError as exc:
            raise CriticError(f"critic {self.name!r}: the tests of task {task.id!r} do not "
                              f"parse: {exc.msg} (line {exc.lineno})",
                              critic=self.name) from exc
        except ValueError as exc:
            raise CriticError(f"critic {self.name!r}, task {task.id!r}: {exc}; set "
                              "metadata['entry_point']", critic=self.name) from exc

    async def critique(self, task: Task, candidate: Candidate) -> Critique:
        suite = self.suite_for(task)
        report = await run_tests(self.sandbox or default_sandbox(),
                                 extract_python(candidate.text), suite,
                                 timeout=self.timeout, test_timeout=self.test_timeout)
        # Examples doctest could not read were skipped: the evidence says which.
        skipped = {"unreadable_examples": list(suite.unreadable)} if suite.unreadable else None
        return report_critique(self.name, report, max_feedback_chars=self.max_feedback_chars,
                               evidence=skipped)


class DoctestCritic(PythonTestsCritic):
    """Runs the examples of the task's prompt against the candidate's code: its ``>>>``
    examples, else its prose examples of the task's function (`prose_examples`).

    Takes the arguments of `PythonTestsCritic` but ``tests``.
    """

    def __init__(self, *, name: str = "doctest", **kwargs: Any) -> None:
        super().__init__(None, name=name, **kwargs)

    def suite_for(self, task: Task) -> TestSuite:
        """The examples in the task's prompt, one test each (from its fenced Python
        blocks when it has some: "Complete this function: ```python ...```"): its
        ``>>>`` examples, else its prose examples of the task's function and the
        examples that name its arguments, each run as ``assert f(...) == result``.
        When the prompt has none, the examples in the given draft (``redline refine -f
        code.py``), read once from the original so that a revision cannot rewrite its
        own tests."""
        function = entry_point(task)
        text = ""
        for given in (task.prompt, task.draft):
            if given is None:
                continue
            text = examples_text(given)
            if has_examples(text):
                break
            prose = (prose_examples(text, function) + argument_examples(text, function)
                     if function else [])
            if prose:
                return TestSuite.from_source("\n".join(prose), entry_point=function)
        try:  # a malformed example is skipped (`TestSuite.unreadable`) while others read
            return TestSuite.from_doctests(text)
        except ValueError as exc:  # there are examples, and none can be read
            raise CriticError(f"critic {self.name!r}: the examples in task {task.id!r} "
                              f"cannot be read: {exc}", critic=self.name) from exc


def examples_text(text: str) -> str:
    """Where a text's ``>>>`` examples are: its fenced Python blocks, else the text."""
    blocks = [b.code for b in code_blocks(text)
              if b.language in ("", "python", "py", "python3", "pycon")]
    return "\n".join(blocks) if blocks else text


def has_examples(text: str) -> bool:
    """Whether `text` holds at least one ``>>>`` example."""
    return _EXAMPLE.search(text) is not None


def task_has_examples(task: Task) -> bool:
    """Whether `DoctestCritic` finds examples for `task`: ``>>>`` examples, prose
    examples of its function or examples that name its arguments, in its prompt or in
    the draft it gives."""
    function = entry_point(task)
    texts = [examples_text(t) for t in (task.prompt, task.draft) if t is not None]
    return any(has_examples(t) or bool(function and (prose_examples(t, function)
                                                     or argument_examples(t, function)))
               for t in texts)


# What joins a call to its result in prose, longest first: "f(2) ==> 4", "f(2) -> 4",
# "f(2) ➞ 4", "f(2) returns 4", "f(2) should return 4", "f(2) # => 4", "f(2) = 4".
_JOINS = re.compile(r"\s*#?\s*(?:==>|=>|->|➞|→|==|=|(?:should\s+|will\s+)?returns?\b)\s*",
                    re.IGNORECASE)
# What may come before the call on its line: a bullet, "for", "e.g.", "Example:".
_LEAD = re.compile(r"\s*(?:[-*•#]+\s*|\d+[.)]\s+|for\s+|e\.g\.,?\s*|(?:for\s+)?"
                   r"examples?\s*:\s*)*", re.IGNORECASE)
_JSON_WORDS = {"true": True, "false": False, "null": None}
# What may follow an example's result: punctuation, a parenthesis or a comment.
_AFTER_RESULT = re.compile(r"[.,;:!]|#|\(|//|--")
_MAX_EXAMPLE_CHARS = 2000


def prose_examples(text: str, function: str) -> list[str]:
    """The examples in `text` that show a call of `function` and its result in prose, as
    ``assert`` statements: ``f(2) == 4``, ``f(2) ==> 4``, ``f(2) => 4``, ``f(2) -> 4``,
    ``f(2) ➞ 4``, ``f(2) = 4``, ``f(2) returns 4``, ``f(2) should return 4``.

    An example counts only when the whole line is one: the call starts it (after a
    bullet, "for", "e.g." or "Example:"), every argument and the result are Python
    literals (``true``/``false``/``null`` read as JSON), and what follows the result is
    nothing, punctuation or a comment. So ``f(n) = f(n - 1) + 1`` (a definition) and
    ``f(3) -> 3 - 1 = 2`` (a working) are not examples, and ``f(x) ➞ 'No' (why)`` is.
    Examples that span lines are not read.
    """
    found: list[str] = []
    call_start = re.compile(rf"(?<![\w.]){re.escape(function)}\s*\(")
    for line in text.splitlines():
        if len(line) > _MAX_EXAMPLE_CHARS:  # no example; and parsing is quadratic
            continue
        lead = _LEAD.match(line)
        start = lead.end() if lead else 0
        if not call_start.match(line, start):
            continue
        example = _prose_example(line[start:], function)
        if example is not None and example not in found:
            found.append(example)
    return found


def _prose_example(line: str, function: str) -> str | None:
    """``assert CALL == RESULT`` from a line that starts with a call of `function`."""
    for close in (i for i, ch in enumerate(line) if ch == ")"):
        try:
            call = ast.parse(line[:close + 1].strip(), mode="eval").body
        except SyntaxError:
            continue
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                and call.func.id == function and _literal_args(call)):
            return None
        join = _JOINS.match(line, close + 1)
        if join is None:
            return None
        result = _leading_literal(line[join.end():])
        return None if result is None else f"assert {ast.unparse(call)} == {result}"
    return None


def _literal_args(call: ast.Call) -> bool:
    try:
        for node in [*call.args, *(k.value for k in call.keywords)]:
            ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return all(k.arg is not None for k in call.keywords) and not any(
        isinstance(a, ast.Starred) for a in call.args)


def _leading_literal(rest: str) -> str | None:
    """The source of the literal `rest` starts with, when nothing but punctuation, a
    parenthesis or a comment follows it; else None."""
    rest = rest.strip()
    ends = [len(rest)] + [i for i in range(len(rest) - 1, 0, -1)
                          if _AFTER_RESULT.match(rest, i) or rest[i].isspace()]
    for end in ends:
        tail = rest[end:].strip()
        if tail and not _AFTER_RESULT.match(tail):
            continue
        piece = rest[:end].strip().rstrip(".,;:")
        if not piece:
            continue
        if piece.lower() in _JSON_WORDS:
            return repr(_JSON_WORDS[piece.lower()])
        try:
            node = ast.parse(piece, mode="eval").body
            ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
        return ast.unparse(node)
    return None


# "For lst = [1, 2] the output should be 3", "For s = 'ab', c = 'a', the result is 'b'".
_FOR_EXAMPLE = re.compile(r"\s*(?:[-*•]\s*)?for\s+(?P<args>.+?)\s*,?\s+the\s+(?:output|result|"
                          r"answer)\s+(?:should\s+be|will\s+be|would\s+be|is)\s+(?P<result>.+)",
                          re.IGNORECASE)
_INPUT = re.compile(r"\s*(?:[-*•]\s*)?input\s*:\s*(?P<args>\S.*)", re.IGNORECASE)
_OUTPUT = re.compile(r"\s*(?:[-*•]\s*)?output\s*:\s*(?P<result>\S.*)", re.IGNORECASE)


def argument_examples(text: str, function: str) -> list[str]:
    """The examples in `text` that give `function`'s arguments by value or by name and
    the result, as ``assert`` statements: an ``Input: arr = [3, 1], k = 1`` line
    followed by an ``Output: [3]`` line (the next line that is not blank), and
    ``For lst = [1, 2] the output should be 3`` (also "the result should be", "will
    be", "is").

    Arguments and result must be Python literals (``true``/``false``/``null`` read as
    JSON for the result), as in `prose_examples`. Arguments given by name must be the
    first parameters of `function`'s ``def`` in `text`, in order, and are passed by
    position, so a right answer that renames its parameters still passes; with no such
    ``def`` in `text`, only examples with unnamed arguments (``Input: [1, 2]``) are
    read. Inputs that span lines are not read.
    """
    params = _parameters(text, function)
    found: list[str] = []
    lines = text.splitlines()
    pairs: list[tuple[str, str]] = []
    for number, line in enumerate(lines):
        if len(line) > _MAX_EXAMPLE_CHARS:  # no example; and parsing is quadratic
            continue
        if (example := _FOR_EXAMPLE.fullmatch(line)) is not None:
            pairs.append((example["args"], example["result"]))
        elif (given := _INPUT.fullmatch(line)) is not None:
            after = next((lines[i] for i in range(number + 1, len(lines))
                          if lines[i].strip()), "")
            output = _OUTPUT.fullmatch(after) if len(after) <= _MAX_EXAMPLE_CHARS else None
            if output is not None:
                pairs.append((given["args"], output["result"]))
    for args, result in pairs:
        statement = _argument_example(args, result, function, params)
        if statement is not None and statement not in found:
            found.append(statement)
    return found


def _argument_example(args: str, result: str, function: str,
                      params: list[str] | None) -> str | None:
    try:
        call = ast.parse(f"_({args.strip().rstrip(',')})", mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    if not isinstance(call, ast.Call) or not _literal_args(call) or (call.args
                                                                    and call.keywords):
        return None
    if call.keywords:
        names = [k.arg for k in call.keywords]
        if params is None or names != params[:len(names)]:
            return None
        values = [k.value for k in call.keywords]
    else:
        values = call.args
        if not values or (params is not None and len(values) > len(params)):
            return None
    literal = _leading_literal(result)
    if literal is None:
        return None
    return f"assert {function}({', '.join(ast.unparse(v) for v in values)}) == {literal}"


def _parameters(text: str, function: str) -> list[str] | None:
    """The positional parameters of `function`'s ``def`` in `text`, else None."""
    lines = text.splitlines()
    header = re.compile(rf"\s*(?:async\s+)?def\s+{re.escape(function)}\s*\(")
    for first, line in enumerate(lines):
        if not header.match(line):
            continue
        indent = len(line) - len(line.lstrip())
        for last in range(first, min(first + 20, len(lines))):
            source = "\n".join(x[indent:] for x in lines[first:last + 1]) + "\n    pass"
            try:
                tree = ast.parse(source)
            except (SyntaxError, ValueError, MemoryError, RecursionError):
                continue
            node = tree.body[0]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return [a.arg for a in (*node.args.posonlyargs, *node.args.args)]
        return None
    return None


def entry_point(task: Task) -> str | None:
    """The function a task asks for: ``metadata["entry_point"]``, else the last
    function its prompt defines (as in a HumanEval prompt), else the last its draft
    defines (a task that gives code to fix), else None."""
    given = task.metadata.get("entry_point")
    if isinstance(given, str) and given:
        return given
    names = _DEF.findall(task.prompt) or _DEF.findall(task.draft or "")
    return names[-1] if names else None


def report_critique(name: str, report: TestReport, *, max_feedback_chars: int = 3000,
                    score: float | None = None, raw: float | None = None,
                    evidence: dict[str, Any] | None = None) -> Critique:
    """The critique of a test report: pass fraction, all-passed verdict, failures.

    Args:
        name: the critic's name.
        report: the tests' outcomes.
        max_feedback_chars: the feedback's length limit.
        score: a score to use instead of the pass fraction.
        raw: the raw value; default: the number of tests passed.
        evidence: more evidence to record.
    """
    total, passed = report.total, report.passed
    if report.error or report.tampering:
        fraction, verdict = 0.0, False
    elif total == 0:
        fraction, verdict = 1.0, None  # nothing to check, and the code loads
    else:
        fraction, verdict = passed / total, passed == total
    failing = [o.name for o in report.counted if not o.passed]
    text = feedback(report, max_chars=max_feedback_chars)
    if report.tampering:
        score = 0.0  # whatever the tests said: the run cannot be trusted
        text = ("Tampering detected: the code interfered with the tests ("
                + "; ".join(report.tampering) + "). Solve the task; do not touch the "
                "test machinery.\n" + text).strip()
    return Critique(
        critic=name, score=fraction if score is None else score, passed=verdict,
        feedback=text,
        raw=float(passed) if raw is None else raw,
        evidence={"tests": total, "passed": passed, "failed": failing,
                  "error": report.error_kind, "timed_out": report.run.timed_out,
                  "limit": report.run.limit, "seconds": round(report.run.seconds, 3),
                  "isolation": report.run.isolation.model_dump(),
                  **({"tampering": list(report.tampering)} if report.tampering else {}),
                  **({"note": "no tests found"} if total == 0 and not report.error else {}),
                  **(evidence or {})})


def pytest_critic(arg: str | None) -> PythonTestsCritic:
    """Python tests run in the sandbox: score = fraction passed, failures as feedback.

    Argument: a Python tests file: ``assert`` statements, pytest-style ``test_*``
    functions (``parametrize`` works; fixtures do not), or a HumanEval-style
    ``check(candidate)`` (the function checked is the task's ``metadata["entry_point"]``
    or the last function its prompt defines). The candidate's code is importable as
    ``solution`` and its names are visible to the tests. Without a file, each task's
    ``metadata["tests"]`` is used.

    Examples:
        --critic pytest:tests/test_solution.py
        --critic pytest
    """
    return PythonTestsCritic.from_file(arg) if arg else PythonTestsCritic()


def doctest_critic(arg: str | None) -> DoctestCritic:
    """The task's examples run against the answer's code in the sandbox.

    Argument: none. The examples are read from each task's prompt (HumanEval prompts
    carry them in the docstring), else from the draft given with -f: ``>>>`` examples,
    else prose ones of the task's function (``f(2) == 4``, ``f(2) ➞ 4``, ``f(2) returns
    4``); a task without examples is only checked to load.

    Examples:
        --critic doctest
    """
    if arg:
        raise ConfigError(f"critic 'doctest' takes no argument (got {arg!r}); the examples "
                          "come from the task's prompt")
    return DoctestCritic()
