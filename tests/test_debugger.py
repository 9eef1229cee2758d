"""Self-Debug's reviser and the remedy for revisions that repeat their parent: real
runs of the loop with a scripted model and the real sandboxed tests critic."""

from __future__ import annotations

import json
from typing import Any

import pytest

import redline
from redline import Budget, Critique, RefineResult, StopReason, Task, critic
from redline.agents import DebugReviser, Reviser, render_failures
from redline.critics import PythonTestsCritic
from redline.errors import ConfigError
from redline.prompts import render
from redline.testing import ScriptedChat
from redline.types import Candidate, ScoredCandidate

TESTS = """\
from solution import add

assert add(2, 3) == 5
assert add(0, 0) == 0
"""
TASK = Task(prompt="Write add(a, b) returning the sum of a and b.", id="add")
BUGGY = "Here you go:\n```python\ndef add(a, b):\n    return a - b\n```"
GOOD = "```python\ndef add(a, b):\n    return a + b\n```"
EXPLANATION = ("Line 1 defines add. Line 2 returns a - b. For add(2, 3) the code returns "
               "2 - 3 = -1, but the test expects 5: line 2 subtracts instead of adding.")


@critic
def praise(text: str) -> tuple[float, str]:
    """A critic that is satisfied, and says so: the debugger must not read it."""
    return 1.0, "Clear names, well done."


def trajectory(result: RefineResult) -> list[tuple[int, str, float]]:
    return [(r.index, s.candidate.text, s.score) for r in result.rounds for s in r.scored]


def user(call: dict) -> str:
    return call["messages"][-1]["content"]


async def run(model: ScriptedChat, reviser: Reviser, **fields: Any) -> RefineResult:
    fields.setdefault("critics", [PythonTestsCritic(TESTS)])
    return await redline.arefine(TASK, model=model, reviser=reviser, threshold=1.0,
                                 **fields)


# --- Self-Debug: explain, then fix ----------------------------------------------------

async def test_explains_the_failing_test_then_fixes_the_code() -> None:
    model = ScriptedChat([BUGGY, EXPLANATION, GOOD])
    result = await run(model, DebugReviser(model),
                       critics=[PythonTestsCritic(TESTS), praise])
    assert result.stop_reason is StopReason.threshold
    assert trajectory(result) == [(0, BUGGY, 0.75), (1, GOOD, 1.0)]
    assert result.text == GOOD

    draft, explain, fix = model.calls
    # The explanation is asked for with the code and the failing test's output, alone.
    system = render("selfdebug_system")
    assert explain["messages"][0] == {"role": "system", "content": system}
    asked = user(explain)
    assert "```python\ndef add(a, b):\n    return a - b\n```" in asked
    assert "Here you go" not in asked  # the code, not the reply around it
    assert "assert add(2, 3) == 5" in asked and "where add(2, 3) = -1" in asked
    assert "Do not write a corrected program" in asked
    assert "Clear names" not in asked  # nothing from the critic that was satisfied
    # The fix is asked for with the failing test and that explanation.
    asked = user(fix)
    assert fix["messages"][0]["content"] == system
    assert "assert add(2, 3) == 5" in asked and "where add(2, 3) = -1" in asked
    assert f"with a trace of a failed test:\n{EXPLANATION}\n" in asked
    assert "return a - b" in asked and "Clear names" not in asked
    assert "single ```python code block" in asked

    revision = result.rounds[1].scored[0].candidate
    assert revision.explanation == EXPLANATION  # in the trace
    draft_id = result.rounds[0].scored[0].candidate.id
    assert (revision.origin, revision.parent) == ("rewrite", draft_id)
    assert revision.usage.llm_calls == 2  # the explanation and the fix
    assert revision.usage.output_tokens == len(EXPLANATION.split()) + len(GOOD.split())
    assert result.usage.llm_calls == 3 == len(model.calls)


async def test_simple_feedback_asks_once_with_the_failing_tests() -> None:
    model = ScriptedChat([BUGGY, GOOD])
    result = await run(model, DebugReviser(model, explain=False))
    assert result.stop_reason is StopReason.threshold
    assert trajectory(result) == [(0, BUGGY, 0.5), (1, GOOD, 1.0)]
    assert len(model.calls) == 2
    asked = user(model.calls[1])
    assert "where add(2, 3) = -1" in asked and "return a - b" in asked
    assert "explanation" not in asked.lower()
    assert result.rounds[1].scored[0].candidate.explanation is None


async def test_a_draft_that_passes_its_tests_is_not_debugged() -> None:
    @critic
    def brevity(text: str) -> tuple[float, str]:
        return 0.5, "Could be shorter."

    model = ScriptedChat([GOOD])
    result = await run(model, DebugReviser(model), revise_when="on_failure",
                       critics=[PythonTestsCritic(TESTS), brevity])
    assert result.stop_reason is StopReason.verified
    assert trajectory(result) == [(0, GOOD, 0.75)]
    assert len(model.calls) == 1


async def test_the_explanation_survives_the_result_document() -> None:
    model = ScriptedChat([BUGGY, EXPLANATION, GOOD])
    result = await run(model, DebugReviser(model))
    document = json.loads(json.dumps(result.document()))
    back = RefineResult.from_document(document)
    assert back.document() == document
    assert back.rounds[1].scored[0].candidate.explanation == EXPLANATION
    assert back.rounds[0].scored[0].candidate.explanation is None


async def test_a_budget_that_refuses_the_fix_keeps_the_draft() -> None:
    model = ScriptedChat([BUGGY, EXPLANATION, GOOD])
    result = await run(model, DebugReviser(model), budget=Budget(max_llm_calls=2))
    assert result.stop_reason is StopReason.budget
    assert result.budget_limit == "max_llm_calls"
    assert trajectory(result) == [(0, BUGGY, 0.5)]
    assert result.usage.llm_calls == 2  # the explanation was paid for


# --- a revision that repeats its parent ---------------------------------------------------

async def test_resample_asks_again_when_the_revision_repeats_the_code() -> None:
    # The same code in a reply worded differently: the tests would fail the same way.
    same_code = "```python\ndef add(a, b):\n    return a - b\n```"
    model = ScriptedChat([BUGGY, EXPLANATION, same_code, GOOD])
    reviser = DebugReviser(model, on_repeat="resample", repeat_temperature=0.8)
    result = await run(model, reviser)
    assert result.stop_reason is StopReason.threshold
    assert trajectory(result) == [(0, BUGGY, 0.5), (1, GOOD, 1.0)]

    fix, retry = model.calls[2], model.calls[3]
    assert (fix["temperature"], retry["temperature"]) == (0.3, 0.8)
    # The retry continues the fix's conversation: the repeated reply, then the note.
    assert retry["messages"][:-1] == [*fix["messages"],
                                      {"role": "assistant", "content": same_code}]
    note = user(retry)
    assert note.startswith("Your last reply repeated the answer unchanged")
    assert "where add(2, 3) = -1" in note
    revision = result.rounds[1].scored[0].candidate
    assert revision.usage.llm_calls == 3 and revision.explanation == EXPLANATION
    assert result.usage.llm_calls == 4 == len(model.calls)


async def test_keep_stops_converged_when_the_revision_repeats() -> None:
    model = ScriptedChat([BUGGY, EXPLANATION, BUGGY])
    result = await run(model, DebugReviser(model), patience=5)
    assert result.stop_reason is StopReason.converged
    assert "round 0" in result.stop_detail
    assert trajectory(result) == [(0, BUGGY, 0.5), (1, BUGGY, 0.5)]
    assert len(model.calls) == 3


async def test_the_plain_reviser_resamples_a_repeat_too() -> None:
    model = ScriptedChat([BUGGY, BUGGY + "\n", GOOD])  # a repeat up to whitespace
    result = await run(model, Reviser(model, on_repeat="resample"))
    assert result.stop_reason is StopReason.threshold
    assert trajectory(result) == [(0, BUGGY, 0.5), (1, GOOD, 1.0)]
    assert [c["temperature"] for c in model.calls[1:]] == [0.3, 0.9]
    assert user(model.calls[2]).startswith("Your last reply repeated the answer unchanged")
    assert result.rounds[1].scored[0].candidate.usage.llm_calls == 2


async def test_a_retry_that_repeats_again_ends_the_run_converged() -> None:
    model = ScriptedChat([BUGGY, BUGGY, BUGGY])
    result = await run(model, Reviser(model, on_repeat="resample"), patience=5)
    assert result.stop_reason is StopReason.converged
    assert trajectory(result) == [(0, BUGGY, 0.5), (1, BUGGY, 0.5)]
    assert len(model.calls) == 3  # asked once more, not again and again


async def test_the_plain_reviser_keeps_a_repeat_by_default() -> None:
    model = ScriptedChat([BUGGY, BUGGY])
    result = await run(model, Reviser(model), patience=5)
    assert result.stop_reason is StopReason.converged
    assert len(model.calls) == 2


def test_what_counts_as_a_repeat() -> None:
    reviser, debugger = Reviser(ScriptedChat()), DebugReviser(ScriptedChat())
    code = Candidate(text="def f(xs):\n    for x in xs:\n        return x\n    return None\n")
    assert reviser.repeats(code, code.text + "\n\n")
    assert reviser.repeats(code, code.text.replace("\n", "  \n"))
    # Indentation is meaning: moving a return out of the loop is a fix.
    fixed = code.text.replace("        return x", "    return x")
    assert not reviser.repeats(code, fixed) and not debugger.repeats(code, fixed)
    # Only the debugger compares the code inside a reply worded differently.
    reworded = f"Fixed:\n```python\n{code.text}```"
    assert debugger.repeats(code, reworded) and not reviser.repeats(code, reworded)


def test_the_debugger_takes_a_docstring_or_comment_only_change_for_a_repeat() -> None:
    # Seen on HumanEval with a 0.5B coder: asked to fix a failing doctest, the model
    # rewrote the docstring's expected value and left the code as it was.
    debugger = DebugReviser(ScriptedChat())
    parent = Candidate(text='''```python
def largest_divisor(n: int) -> int:
    """The largest divisor of n below n.
    >>> largest_divisor(15)
    5
    """
    for i in range(2, n):
        if n % i == 0:
            return i
```''')
    docstring_only = parent.text.replace("    5\n", "    3\n")
    commented = parent.text.replace("for i in range(2, n):",
                                    "for i in range(2, n):  # smallest first")
    for same in (docstring_only, commented):
        assert debugger.repeats(parent, same), same
    assert debugger.repeats(parent, parent.text.replace("range(2, n)", "range(2,n)"))
    # Any change to the code itself is a revision, however small.
    for changed in (parent.text.replace("range(2, n)", "range(n - 1, 0, -1)"),
                    parent.text.replace("def largest", "import math\n\ndef largest"),
                    parent.text.replace("            return i", "            return n // i")):
        assert not debugger.repeats(parent, changed), changed
    # Code that does not parse is compared line by line only.
    broken = Candidate(text="def f(:\n    return 1\n")
    assert not debugger.repeats(broken, "def f(:\n    return 2\n")


async def test_a_docstring_only_fix_is_sampled_again() -> None:
    docstring_only = BUGGY.replace("def add(a, b):\n", 'def add(a, b):\n    """a - b"""\n')
    assert docstring_only != BUGGY
    model = ScriptedChat([BUGGY, docstring_only, GOOD])
    result = await run(model, DebugReviser(model, explain=False, on_repeat="resample"))
    assert result.stop_reason is StopReason.threshold
    assert trajectory(result) == [(0, BUGGY, 0.5), (1, GOOD, 1.0)]
    assert user(model.calls[2]).startswith("Your last reply repeated the answer unchanged")


# --- feedback, prompts and configuration --------------------------------------------------

def test_render_failures_shows_only_what_failed() -> None:
    scored = ScoredCandidate(
        candidate=Candidate(text="x"), score=0.3, gates_passed=True, failed=True,
        critiques=[
            Critique(critic="pytest", score=0.5, passed=False,
                     feedback="1 of 2 tests failed:\n- assert f(1) == 2"),
            Critique(critic="style", score=1.0, passed=True, feedback="Nice."),
            Critique(critic="judge", score=1.0, feedback="Perfect."),
            Critique(critic="lint", score=0.0, passed=False, evidence={"failed": ["E501"]}),
            Critique(critic="length", score=0.6, feedback=" Too long. "),
            Critique(critic="silent", score=0.4)])
    assert render_failures(scored) == ("[pytest] 1 of 2 tests failed:\n- assert f(1) == 2"
                                       "\n\n[lint] failed: E501\n\n[length] Too long.")
    assert render_failures(scored.model_copy(update={"critiques": scored.critiques[1:3]})) \
        == ""


def test_messages_show_the_fix_prompt_without_an_explanation() -> None:
    scored = ScoredCandidate(
        candidate=Candidate(text=BUGGY), score=0.5, gates_passed=True, failed=True,
        critiques=[Critique(critic="pytest", score=0.5, passed=False, feedback="it fails")])
    debugger = DebugReviser(ScriptedChat())
    fix = debugger.messages(TASK, scored, ["add, do not subtract"], "rewrite")[1]["content"]
    assert "[pytest] it fails\n\nLessons from earlier attempts:\n- add, do not subtract" in fix
    assert "explanation" not in fix.lower()
    with_it = debugger.messages(TASK, scored, [], explanation="line 2 subtracts")[1]["content"]
    assert "with a trace of a failed test:\nline 2 subtracts\n" in with_it
    assert "[pytest] it fails" in debugger.explain_messages(TASK, scored)[1]["content"]


def test_bad_arguments_are_refused_in_one_line() -> None:
    model = ScriptedChat()
    with pytest.raises(ConfigError, match="mode must be 'rewrite', got 'edit'"):
        DebugReviser(model, mode="edit")
    with pytest.raises(ConfigError, match="on_repeat must be 'keep' or 'resample', got 'x'"):
        Reviser(model, on_repeat="x")  # type: ignore[arg-type]
    for bad in (-0.1, 3, "hot", True):
        with pytest.raises(ConfigError, match="repeat_temperature must be a number in"):
            DebugReviser(model, repeat_temperature=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"uses \$memory, which is not filled here"):
        DebugReviser(model, explain_prompt="Explain $answer given $memory")
    with pytest.raises(ConfigError, match=r"uses \$explanation"):
        Reviser(model, repeat_prompt="Again, see $explanation")
    with pytest.raises(ConfigError, match=r"uses \$explanation"):
        DebugReviser(model, repeat_prompt="Again, see $explanation")
    assert DebugReviser(model, prompt="Fix $answer ($explanation)").prompt.startswith("Fix")
