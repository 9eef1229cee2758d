"""The Python tests, doctest and generated-tests critics, on the real sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

import redline
from redline import StopReason, Task
from redline.critics.code_tests import DoctestCritic, PythonTestsCritic, entry_point
from redline.critics.generated_tests import GeneratedTestsCritic, parse_tests
from redline.errors import ConfigError, CriticError
from redline.feedback_sources._code import extract_python
from redline.llm import Message
from redline.plugins import build_critic
from redline.prompts import render
from redline.testing import ScriptedChat, acheck_critic
from redline.types import Candidate

ADD_TESTS = """\
from solution import add

assert add(2, 3) == 5
assert add(-1, 1) == 0

def test_large():
    assert add(10**6, 1) == 10**6 + 1

class TestAdd:
    def test_zero(self):
        assert add(0, 0) == 0
"""
GOOD = "```python\ndef add(a, b):\n    return a + b\n```"
BUGGY = "Here you go:\n```python\ndef add(a, b):\n    return a - b\n```"
TASK = Task(prompt="Write add(a, b) returning the sum of a and b.", id="add")

HUMANEVAL_PROMPT = '''from typing import List


def below_zero(operations: List[int]) -> bool:
    """ Given deposits and withdrawals starting from zero, say whether the balance
    ever falls below zero.
    >>> below_zero([1, 2, 3])
    False
    >>> below_zero([1, 2, -4, 5])
    True
    """
'''
HUMANEVAL_TEST = '''

METADATA = {'author': 'jt', 'dataset': 'test'}


def check(candidate):
    assert candidate([]) == False
    assert candidate([1, 2, -3, 1, 2, -3]) == False
    assert candidate([1, 2, -4, 5, 6]) == True
'''
BELOW_ZERO_WRONG = ("def below_zero(operations):\n"
                    "    return sum(operations) < 0\n")
BELOW_ZERO_RIGHT = ("def below_zero(operations):\n"
                    "    balance = 0\n"
                    "    for op in operations:\n"
                    "        balance += op\n"
                    "        if balance < 0:\n"
                    "            return True\n"
                    "    return False\n")


async def test_all_tests_pass() -> None:
    critique = await PythonTestsCritic(ADD_TESTS).critique(TASK, Candidate(text=GOOD))
    assert (critique.score, critique.passed, critique.feedback) == (1.0, True, "")
    assert critique.evidence["tests"] == 4 and critique.evidence["failed"] == []
    assert critique.raw == 4.0


async def test_failing_tests_are_named_with_the_values_compared() -> None:
    critique = await PythonTestsCritic(ADD_TESTS).critique(TASK, Candidate(text=BUGGY))
    assert critique.score == 0.25 and critique.passed is False
    assert critique.evidence["failed"] == ["assert add(2, 3) == 5", "assert add(-1, 1) == 0",
                                           "test_large"]
    assert critique.feedback.startswith("3 of 4 tests failed:\n"
                                        "- assert add(2, 3) == 5\n"
                                        "    AssertionError\n"
                                        "    where add(2, 3) = -1\n")
    assert 'File "tests.py", line 7, in test_large' in critique.feedback


async def test_syntax_error_is_reported_as_such() -> None:
    critique = await PythonTestsCritic(ADD_TESTS).critique(
        TASK, Candidate(text="def add(a, b:\n    return a + b\n"))
    assert (critique.score, critique.passed) == (0.0, False)
    assert critique.evidence["error"] == "syntax"
    assert critique.feedback.startswith("The code does not compile, so no test ran:\n"
                                        'File "solution.py", line 1')


async def test_timeouts_are_reported_as_such() -> None:
    looping = "def add(a, b):\n    while a > 100:\n        pass\n    return a + b\n"
    critic = PythonTestsCritic(ADD_TESTS, test_timeout=0.5)
    critique = await critic.critique(TASK, Candidate(text=looping))
    assert critique.score == 0.75
    assert "- test_large\n    timed out after 0.5 s" in critique.feedback
    hung = await critic.critique(TASK, Candidate(text="while True:\n    pass\n"))
    assert hung.evidence["error"] == "timeout" and hung.score == 0.0
    assert hung.feedback.startswith("Running the code did not finish, so no test ran")


async def test_whole_run_time_limit_reports_unfinished_tests() -> None:
    slow = "import time\ndef add(a, b):\n    time.sleep(0.4)\n    return a + b\n"
    critique = await PythonTestsCritic(ADD_TESTS, timeout=1.0).critique(
        TASK, Candidate(text=slow))
    assert critique.passed is False and critique.evidence["timed_out"]
    assert "the run was stopped after 1 s (time limit)" in critique.feedback
    assert "did not run (the run was stopped" in critique.feedback


async def test_tests_from_metadata_and_humaneval_check() -> None:
    task = Task(prompt=HUMANEVAL_PROMPT, metadata={"tests": HUMANEVAL_TEST})
    assert entry_point(task) == "below_zero"
    critic = PythonTestsCritic()
    wrong = await critic.critique(task, Candidate(text=BELOW_ZERO_WRONG))
    assert wrong.score == pytest.approx(2 / 3)
    assert wrong.feedback == (
        "1 of 3 tests failed:\n"
        "- assert below_zero([1, 2, -4, 5, 6]) == True\n"
        "    AssertionError\n"
        "    where below_zero([1, 2, -4, 5, 6]) = False")
    right = await critic.critique(task, Candidate(text=BELOW_ZERO_RIGHT))
    assert right.passed is True
    listed = Task(prompt="add", metadata={"tests": ["assert add(1, 1) == 2",
                                                    "assert add(1, 2) == 3"]})
    assert (await critic.critique(listed, Candidate(text=GOOD))).evidence["tests"] == 2


async def test_doctest_critic_runs_the_prompt_examples() -> None:
    task = Task(prompt=HUMANEVAL_PROMPT)
    critic = DoctestCritic()
    wrong = await critic.critique(task, Candidate(text=f"```python\n{BELOW_ZERO_WRONG}```"))
    assert wrong.score == 0.5 and wrong.passed is False
    assert wrong.feedback == ("1 of 2 tests failed:\n"
                              "- >>> below_zero([1, 2, -4, 5])\n"
                              "    Failed example:\n"
                              "        below_zero([1, 2, -4, 5])\n"
                              "    Expected:\n"
                              "        True\n"
                              "    Got:\n"
                              "        False")
    right = await critic.critique(task, Candidate(text=BELOW_ZERO_RIGHT))
    assert (right.score, right.passed) == (1.0, True)


async def test_doctests_from_a_prompt_that_is_not_python() -> None:
    prompt = ("Finish this function:\n\ndef double(x):\n    \"\"\"Twice x.\n"
              "    >>> double(2)\n    4\n    \"\"\"\n    ...and explain it")
    critic = DoctestCritic()
    right = await critic.critique(Task(prompt=prompt), Candidate(text="def double(x):\n"
                                                                      "    return 2 * x\n"))
    assert (right.score, right.evidence["tests"]) == (1.0, 1)


async def test_doctests_from_a_prompt_with_a_fenced_stub() -> None:
    prompt = f"Complete this function:\n```python\n{HUMANEVAL_PROMPT}```\nKeep it short."
    critic = DoctestCritic()
    suite = critic.suite_for(Task(prompt=prompt))
    assert suite.names == [">>> below_zero([1, 2, 3])", ">>> below_zero([1, 2, -4, 5])"]
    right = await critic.critique(Task(prompt=prompt), Candidate(text=BELOW_ZERO_RIGHT))
    assert (right.score, right.passed) == (1.0, True)
    wrong = await critic.critique(Task(prompt=prompt), Candidate(text=BELOW_ZERO_WRONG))
    assert wrong.score == 0.5


# HumanEval/51's stub: "\n" in a docstring that is not raw puts a real line break in an
# example, which doctest cannot read ("inconsistent leading whitespace").
NEWLINE_STUB = ('''def strip_x(text):
    """Remove every "x".
    >>> strip_x('')
    ''
    >>> strip_x("ax\nb")
    'a\nb'
    >>> strip_x('xxa')
    'a'
    """
''')


async def test_an_unreadable_example_is_skipped_and_the_others_run() -> None:
    task = Task(prompt=f"Complete this function:\n```python\n{NEWLINE_STUB}```")
    critic = DoctestCritic()
    suite = critic.suite_for(task)
    assert suite.names == [">>> strip_x('')", ">>> strip_x('xxa')"]
    assert len(suite.unreadable) == 1 and suite.unreadable[0].startswith(
        '>>> strip_x("ax (line 5 has inconsistent leading whitespace')
    right = await critic.critique(task, Candidate(
        text="def strip_x(text):\n    return text.replace('x', '')\n"))
    assert (right.score, right.passed, right.evidence["tests"]) == (1.0, True, 2)
    assert right.evidence["unreadable_examples"] == list(suite.unreadable)
    wrong = await critic.critique(task, Candidate(text="def strip_x(text):\n    return text\n"))
    assert wrong.passed is False and wrong.score == 0.5
    # Examples none of which can be read: an error that names the problem.
    only_bad = Task(prompt='def f(s):\n    """\n    >>> f("a\\nb")\n    \'a\\nb\'\n    """\n')
    with pytest.raises(CriticError, match="cannot be read: .*inconsistent leading"):
        await critic.critique(only_bad, Candidate(text="def f(s):\n    return s\n"))


# Examples written in prose, as half of HumanEval's prompts give them (no ">>>").
PROSE_STUB = '''def pick(xs, k):
    """Return the k largest of xs, largest first, or "none" when xs is empty.

    Examples:
    pick([3, 1, 2], 2) == [3, 2]
    * pick([5], 1) ➞ [5]
    for pick([], 3) => "none"
    pick([1, 1], 1) should return [1].
    pick([7, 8], 1) -> [8] (the largest)
    pick(xs, 0) == []
    pick([1, 2], 1) -> 3 - 1 = 2
    pick(n) = pick(n - 1) + 1
    """
'''


def test_prose_examples_are_read_as_assertions() -> None:
    from redline.critics.code_tests import prose_examples
    assert prose_examples(PROSE_STUB, "pick") == [
        "assert pick([3, 1, 2], 2) == [3, 2]", "assert pick([5], 1) == [5]",
        "assert pick([], 3) == 'none'", "assert pick([1, 1], 1) == [1]",
        "assert pick([7, 8], 1) == [8]"]
    # JSON's words read as Python's; a result cut off by its prose is no example.
    assert prose_examples("is_odd(3) => true\nis_odd(2) = false.\nis_odd(1) ==> True if",
                          "is_odd") == ["assert is_odd(3) == True", "assert is_odd(2) == False"]
    # Another function's calls, the def line and calls inside code are not examples.
    assert prose_examples(PROSE_STUB, "other") == []
    assert prose_examples("def f(x) -> int:\n    return g(f(1) == 2)\n", "f") == []
    assert prose_examples("x.f(1) == 2\nnot_f(1) == 2\n", "f") == []
    # A line too long to be an example is not parsed (parsing one is quadratic).
    assert prose_examples(f"f([{'1, ' * 1000}1]) == 2", "f") == []


async def test_doctest_critic_runs_prose_examples_in_the_sandbox() -> None:
    task = Task(prompt=f"Complete this function:\n```python\n{PROSE_STUB}```")
    critic = DoctestCritic()
    assert len(critic.suite_for(task)) == 5
    right = ("def pick(xs, k):\n    if not xs:\n        return 'none'\n"
             "    return sorted(xs, reverse=True)[:k]\n")
    passed = await critic.critique(task, Candidate(text=right))
    assert (passed.score, passed.passed, passed.evidence["tests"]) == (1.0, True, 5)
    unsorted = await critic.critique(task, Candidate(
        text="def pick(xs, k):\n    return xs[:k] if xs else 'none'\n"))
    assert unsorted.passed is False and unsorted.score == 3 / 5
    assert "assert pick([3, 1, 2], 2) == [3, 2]" in unsorted.feedback
    # ">>>" examples win: prose lines beside them are not run twice.
    both = Task(prompt=PROSE_STUB.replace("    Examples:", "    >>> pick([2], 1)\n    [2]"))
    assert critic.suite_for(both).names == [">>> pick([2], 1)"]
    # The draft given to improve carries the examples when the prompt has none.
    fix = Task(prompt="Fix this function.", draft=PROSE_STUB + "    return xs\n")
    assert len(critic.suite_for(fix)) == 5


# Examples that name the arguments (LeetCode-style "Input:/Output:", "For x = ...").
ARGUMENT_STUB = '''def top(arr, k):
    """Return the k largest numbers of arr, sorted.

    Example 1:
        Input: arr = [-3, -4, 5], k = 3
        Output: [-4, -3, 5]

    Example 2:
        Input: [4, -4, 4], 2

        Output: [4, 4]  # both fours
    For arr = [1, 9, 2], k = 1 the output should be [9].
    For arr = [], k = 0, the result is [].
    Input: k = 1, arr = [2]
    Output: [2]
    Input: arr = [2], n = 1
    Output: [2]
    Input: an array and k
    Output: a list
    Input:
        arr = [5], k = 1
    Output: [5]
    Input: arr = [3], k = 1
    For arr = [7], k = 1 the output should be the largest.
    """
'''


def test_argument_examples_are_read_as_assertions() -> None:
    from redline.critics.code_tests import argument_examples
    # Named arguments are passed by position; the others (names out of order or not
    # the def's, prose, an input over two lines, an input with no output, a result in
    # words) are not examples.
    assert argument_examples(ARGUMENT_STUB, "top") == [
        "assert top([-3, -4, 5], 3) == [-4, -3, 5]", "assert top([4, -4, 4], 2) == [4, 4]",
        "assert top([1, 9, 2], 1) == [9]", "assert top([], 0) == []"]
    # With no def to name the parameters, only unnamed arguments are read.
    no_def = ARGUMENT_STUB.split('"""', 1)[1]
    assert argument_examples(no_def, "top") == ["assert top([4, -4, 4], 2) == [4, 4]"]
    # More unnamed arguments than the def takes: not an example of it.
    assert argument_examples("def f(x):\n    pass\nInput: 1, 2\nOutput: 3\n", "f") == []
    assert argument_examples(f"def f(x):\n    pass\nInput: [{'1, ' * 1000}1]\nOutput: 2",
                             "f") == []


async def test_doctest_critic_runs_argument_examples_in_the_sandbox() -> None:
    task = Task(prompt=f"Complete this function:\n```python\n{ARGUMENT_STUB}```")
    critic = DoctestCritic()
    assert len(critic.suite_for(task)) == 4
    # A right answer passes, whatever it names its parameters.
    right = "def top(numbers, n):\n    return sorted(sorted(numbers)[::-1][:n])\n"
    passed = await critic.critique(task, Candidate(text=right))
    assert (passed.score, passed.passed, passed.evidence["tests"]) == (1.0, True, 4)
    unsorted = await critic.critique(task, Candidate(
        text="def top(arr, k):\n    return sorted(arr, reverse=True)[:k]\n"))
    assert unsorted.passed is False and unsorted.score == 3 / 4
    assert "assert top([-3, -4, 5], 3) == [-4, -3, 5]" in unsorted.feedback
    from redline.critics.code_tests import task_has_examples
    assert task_has_examples(task)
    assert not task_has_examples(Task(prompt="def top(arr, k):\n    Input: arr\n"))


async def test_candidate_objects_and_exceptions_cross_as_data() -> None:
    code = ("class Stack:\n    def __init__(self):\n        self.items = []\n"
            "    def push(self, x):\n        self.items.append(x)\n"
            "    def pop(self):\n        if not self.items:\n"
            "            raise IndexError('empty')\n        return self.items.pop()\n"
            "def pairs(n):\n    return [(i, {i: {i}}) for i in range(n)]\n"
            "def gen(n):\n    yield from range(n)\n")
    tests = ("import pytest\nfrom solution import Stack, pairs, gen\n"
             "def test_stack():\n    s = Stack()\n    s.push(3)\n    assert s.pop() == 3\n"
             "    with pytest.raises(IndexError, match='empty'):\n        s.pop()\n"
             "assert pairs(2) == [(0, {0: {0}}), (1, {1: {1}})]\n"
             "assert list(gen(3)) == [0, 1, 2] and sum(gen(4)) == 6\n")
    critique = await PythonTestsCritic(tests).critique(TASK, Candidate(text=code))
    assert (critique.score, critique.passed) == (1.0, True), critique.feedback


async def test_no_tests_only_checks_that_the_code_loads() -> None:
    task = Task(prompt="Write something.")
    loads = await DoctestCritic().critique(task, Candidate(text=GOOD))
    assert (loads.score, loads.passed) == (1.0, None)
    assert loads.evidence["note"] == "no tests found"
    crashes = await DoctestCritic().critique(task, Candidate(text="import nonexistent_mod\n"))
    assert (crashes.score, crashes.passed) == (0.0, False)
    assert "ModuleNotFoundError" in crashes.feedback


async def test_factories_and_bad_tests(tmp_path: Path) -> None:
    tests = tmp_path / "test_add.py"
    tests.write_text(ADD_TESTS)
    critic = build_critic(f"pytest:{tests}")
    assert isinstance(critic, PythonTestsCritic) and critic.name == "pytest"
    assert (await critic.critique(TASK, Candidate(text=GOOD))).passed is True
    assert isinstance(build_critic("doctest"), DoctestCritic)
    with pytest.raises(ConfigError, match="takes no argument"):
        build_critic("doctest:x")
    with pytest.raises(ConfigError, match="cannot read tests file"):
        build_critic(f"pytest:{tmp_path / 'missing.py'}")
    with pytest.raises(ConfigError, match="do not parse"):
        PythonTestsCritic("assert (")
    with pytest.raises(CriticError, match="no entry point"):
        await PythonTestsCritic().critique(Task(prompt="x", metadata={"tests": HUMANEVAL_TEST}),
                                           Candidate(text=GOOD))


async def test_tests_critic_keeps_the_critic_contract() -> None:
    task = Task(prompt="add", metadata={"tests": ADD_TESTS})
    await acheck_critic(PythonTestsCritic(), [(task, GOOD), (task, BUGGY)], concurrency=8)


def test_extract_python_prefers_code_that_parses() -> None:
    text = "```python\ndef f():\n    return 1\n```\nThen:\n```python\n>>> f()\n1\n```"
    assert extract_python(text) == "def f():\n    return 1\n"
    assert extract_python("def f(): pass") == "def f(): pass\n"


# Generated tests --------------------------------------------------------------------

GENERATED = """Sure! Here is a solution and some tests:
```python
def add(a, b):
    return a + b

assert add(1, 1) == 2
assert add(2, 3) == 5
assert add(0, 0) == 1
print("done")
```"""


def test_parse_tests_keeps_only_tests() -> None:
    assert parse_tests(GENERATED, 5) == ("assert add(1, 1) == 2\nassert add(2, 3) == 5\n"
                                         "assert add(0, 0) == 1\n")
    assert parse_tests(GENERATED, 1) == "assert add(1, 1) == 2\n"
    broken = "```python\nassert add(1, 2) == 3\nassert add(\nimport math\n```"
    assert parse_tests(broken, 5) == "assert add(1, 2) == 3\n"
    assert parse_tests("I cannot write tests.", 5) == ""


def writer(*replies: str) -> ScriptedChat:
    return ScriptedChat(list(replies))


async def test_generated_tests_come_from_the_task_alone_and_are_kept_per_task() -> None:
    model = writer(GENERATED)
    critic = GeneratedTestsCritic(model, k=3, agreement=False)
    first = await critic.critique(TASK, Candidate(text=BUGGY))
    assert first.evidence["generated"] == ["assert add(1, 1) == 2", "assert add(2, 3) == 5",
                                           "assert add(0, 0) == 1"]
    assert first.score == 0.0 and first.passed is False
    await critic.critique(TASK, Candidate(text=GOOD))
    assert len(model.calls) == 1  # the same tests for every candidate of the task
    prompt = "\n".join(m["content"] for m in model.calls[0]["messages"])
    assert TASK.prompt in prompt and "the function the task asks for" in prompt
    assert "return a - b" not in prompt and "return a + b" not in prompt


async def test_tests_every_candidate_fails_are_suspect_and_not_counted() -> None:
    critic = GeneratedTestsCritic(writer(GENERATED), k=3)
    good, also_good = Candidate(text=GOOD), Candidate(text="def add(a, b):\n    return b + a\n")
    alone = await critic.critique(TASK, good)
    assert alone.score == pytest.approx(2 / 3) and alone.evidence["suspect"] == []
    again = await critic.critique(TASK, also_good)  # two candidates fail add(0, 0) == 1
    assert (again.score, again.passed) == (1.0, True)
    assert again.evidence["suspect"] == ["assert add(0, 0) == 1"]
    assert again.evidence["tests"] == 2 and again.feedback == ""


async def test_dual_agreement_ranks_the_consensus_first() -> None:
    critic = GeneratedTestsCritic(writer(GENERATED), k=3)
    plain = Candidate(text=GOOD)
    swapped = Candidate(text="def add(a, b):\n    return b + a\n")
    odd = Candidate(text="def add(a, b):\n    return a + b if a or b else 1\n")
    broken = Candidate(text="def add(a, b:\n")
    critiques = await critic.critique_many(TASK, [plain, swapped, odd, broken])
    # plain and swapped pass the same 2 tests (2 x 2 = 4); odd passes all 3 alone (1 x 3).
    assert [c.score for c in critiques] == [1.0, 1.0, 0.75, 0.0]
    assert [c.raw for c in critiques] == [4.0, 4.0, 3.0, 0.0]
    assert [c.passed for c in critiques] == [False, False, True, False]
    assert critiques[0].evidence["agreement"] == {"consensus": 2, "tests_passed": 2,
                                                  "candidates": 4}
    assert critiques[0].evidence["suspect"] == []  # odd passes add(0, 0) == 1


async def test_unusable_tests_are_asked_again_then_an_error() -> None:
    model = writer("no tests here", GENERATED)
    critic = GeneratedTestsCritic(model, k=2)
    assert (await critic.critique(TASK, Candidate(text=GOOD))).evidence["tests"] == 2
    assert len(model.calls) == 2 and "no usable assert" in \
        model.calls[1]["messages"][-1]["content"]
    failing = GeneratedTestsCritic(writer("nothing", "still nothing"), name="g")
    with pytest.raises(CriticError, match="wrote no usable tests"):
        await failing.critique(Task(prompt="x"), Candidate(text=GOOD))
    with pytest.raises(ConfigError, match="has no model"):
        await GeneratedTestsCritic().critique(TASK, Candidate(text=GOOD))
    assert build_critic("gentests:7").k == 7
    with pytest.raises(ConfigError, match="number of tests"):
        build_critic("gentests:many")


# The refine loop --------------------------------------------------------------------

async def test_refine_fixes_a_buggy_function_with_the_tests_critic() -> None:
    model = ScriptedChat([BUGGY, GOOD])
    task = Task(prompt=TASK.prompt, metadata={"tests": ADD_TESTS})
    result = await redline.arefine(task, model=model, critics=[PythonTestsCritic()],
                                   threshold=1.0)
    assert result.stop_reason is StopReason.threshold
    assert [(r.index, s.candidate.text, s.score) for r in result.rounds for s in r.scored] \
        == [(0, BUGGY, 0.25), (1, GOOD, 1.0)]
    revise_prompt = model.calls[1]["messages"][-1]["content"]
    assert "where add(2, 3) = -1" in revise_prompt and "return a - b" in revise_prompt
    assert result.text == GOOD


async def test_refine_with_generated_tests_uses_the_run_model() -> None:
    drafts = [BUGGY, GOOD]

    def handler(messages: list[Message]) -> str:
        if messages[0]["content"] == render("gentests_system"):
            return "```python\nassert add(1, 1) == 2\nassert add(2, 5) == 7\n```"
        return drafts.pop(0)

    model = ScriptedChat(handler=handler)
    result = await redline.arefine(TASK.model_copy(update={"id": "gen"}), model=model,
                                   critics=[GeneratedTestsCritic()], threshold=1.0)
    assert result.stop_reason is StopReason.threshold and result.text == GOOD
    assert [s.score for r in result.rounds for s in r.scored] == [0.0, 1.0]
    assert result.usage.llm_calls == 3  # draft, tests (once), revision
