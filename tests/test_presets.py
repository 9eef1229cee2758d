"""The presets: each method's steps, asserted on the whole trajectory of a real graph run
(scripted models for the loop logic; the real sandbox where the method runs code)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

import redline
from redline import Task
from redline.critics.base import Critic
from redline.errors import ConfigError, LLMError
from redline.llm import Message
from redline.prompts import render
from redline.testing import ScriptedChat
from redline.types import Budget, Candidate, Critique, StopReason
from redline.workflows import RunSpec, build_refine_graph
from redline.workflows.presets import (
    PRESETS,
    best_of_n,
    critic,
    reflexion,
    resample,
    self_debug,
    self_refine,
)

SNAPSHOT = Path(__file__).parent / "snapshots" / "refine_graph_reflect.mmd"


class Check(Critic):
    """A critic with a verdict: passes the texts in `good`, says what failed otherwise."""

    def __init__(self, *good: str, name: str = "check") -> None:
        self.good = set(good)
        self.name = name
        self.seen: list[str] = []

    async def critique(self, task: Task, candidate: Candidate) -> Critique:
        self.seen.append(candidate.text)
        ok = candidate.text in self.good
        return Critique(critic=self.name, score=1.0 if ok else 0.0, passed=ok,
                        feedback="" if ok else f"{candidate.text!r} is wrong")


def routed(routes: dict[str, list[str]], default: list[str]) -> ScriptedChat:
    """A scripted model answering calls by their system prompt (a prompt name), else
    from `default`."""
    systems = {render(name): queue for name, queue in routes.items()}

    def handler(messages: list[Message]) -> str:
        queue = systems.get(messages[0]["content"], default)
        return queue.pop(0)

    return ScriptedChat(handler=handler)


def calls_with_system(model: ScriptedChat, name: str) -> list[str]:
    """The user prompts of the calls made with system prompt `name`."""
    system = render(name)
    return [c["messages"][-1]["content"] for c in model.calls
            if c["messages"][0]["content"] == system]


def texts(result: redline.RefineResult) -> list[str]:
    return [s.candidate.text for r in result.rounds for s in r.scored]


def test_a_reflector_adds_the_reflect_node_between_decide_and_revise() -> None:
    cfg = reflexion(ScriptedChat([]), Check())
    drawn = build_refine_graph(cfg).get_graph().draw_mermaid()
    if os.environ.get("REDLINE_UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(drawn)
    assert drawn == SNAPSHOT.read_text(), (
        "graph shape changed: rerun with REDLINE_UPDATE_SNAPSHOTS=1")
    assert "decide -.-> reflect" in drawn and "reflect --> revise" in drawn
    assert "decide -.-> revise" not in drawn
    plain = build_refine_graph(ScriptedChat([]), [Check()]).get_graph().draw_mermaid()
    assert "reflect" not in plain


async def test_self_refine_revises_the_last_answer_reading_the_history_of_feedback() -> None:
    marks = {"alpha draft": (4, "add an example"), "beta version": (2, "too long now"),
             "gamma final": (10, "")}

    def judge(messages: list[Message]) -> str:
        user = messages[-1]["content"]
        mark, feedback = next(v for t, v in marks.items() if t in user)
        return json.dumps({"score": mark, "feedback": feedback})

    answers = ["alpha draft", "beta version", "gamma final"]

    def handler(messages: list[Message]) -> str:
        if messages[0]["content"] == render("judge_system"):
            return judge(messages)
        return answers.pop(0)

    model = ScriptedChat(handler=handler)
    result = await redline.arefine("Explain X.", self_refine(model, rubric="Has an example."))
    assert texts(result) == ["alpha draft", "beta version", "gamma final"]
    assert result.stop_reason is StopReason.threshold and result.text == "gamma final"
    revisions = [c["messages"][-1]["content"] for c in model.calls
                 if "Improve your answer" in c["messages"][-1]["content"]]
    assert len(revisions) == 2
    # The second revision edits the *last* answer (beta, worse than alpha) and reads the
    # feedback of both rounds.
    assert "beta version" in revisions[1] and "alpha draft" not in revisions[1]
    assert "add an example" in revisions[1] and "too long now" in revisions[1]
    judged = [c["messages"][-1]["content"] for c in model.calls
              if c["messages"][0]["content"] == render("judge_system")]
    assert all("Has an example." in j for j in judged)
    assert [r.reflection is not None for r in result.rounds] == [True, True, False]


async def test_reflexion_keeps_a_bounded_memory_that_reaches_each_fresh_attempt() -> None:
    model = routed({"reflect_system": ["lesson one", "lesson two", "lesson three"]},
                   ["try1", "try2", "try3", "try4"])
    check = Check("try4")
    result = await redline.arefine("Solve it.", reflexion(model, check, memory=2,
                                                         budget=Budget(max_rounds=3)))
    assert texts(result) == ["try1", "try2", "try3", "try4"]
    assert result.stop_reason is StopReason.threshold
    assert result.memory == ["lesson two", "lesson three"]
    assert [r.reflection for r in result.rounds] == [
        "lesson one", "lesson two", "lesson three", None]
    reflections = calls_with_system(model, "reflect_system")
    assert "try2" in reflections[1] and "'try2' is wrong" in reflections[1]
    assert "lesson one" in reflections[1]  # earlier reflections are shown to the reflector
    attempts = [c["messages"][-1]["content"] for c in model.calls
                if c["messages"][0]["content"] != render("reflect_system")][1:]
    assert "lesson one" in attempts[0]
    assert "lesson one" in attempts[1] and "lesson two" in attempts[1]
    assert "lesson one" not in attempts[2]  # bounded at memory=2
    assert "lesson two" in attempts[2] and "lesson three" in attempts[2]
    # A fresh attempt, not an edit: the previous attempt is not in the prompt.
    assert "try1" not in attempts[0] and "try3" not in attempts[2]


async def test_reflexion_attempts_on_a_given_draft_see_the_draft_not_the_last_attempt(
        ) -> None:
    model = routed({"reflect_system": ["lesson one"]}, ["try1"])
    task = Task(prompt="Fix the spelling.", draft="teh original text")
    result = await redline.arefine(task, reflexion(model, Check("try1")))
    assert texts(result) == ["teh original text", "try1"]
    attempt = model.calls[-1]["messages"][-1]["content"]
    assert "teh original text" in attempt and "lesson one" in attempt


async def test_reflexion_memory_survives_a_checkpoint_resume() -> None:
    saver = InMemorySaver()
    task = Task(prompt="Solve it.", id="reflexion-resume")
    check = Check("try3")
    crashing = routed({"reflect_system": ["lesson one", "lesson two"]},
                      ["try1", "try2", LLMError("server went away")])  # type: ignore[list-item]
    first = await redline.arefine(task, reflexion(crashing, check), checkpointer=saver)
    assert first.stop_reason is StopReason.error
    assert first.memory == ["lesson one", "lesson two"]

    fresh = routed({"reflect_system": []}, ["try3"])
    result = await redline.arefine(task, reflexion(fresh, check), checkpointer=saver)
    assert len(fresh.calls) == 1  # only the failed attempt is made again
    prompt = fresh.calls[0]["messages"][-1]["content"]
    assert "lesson one" in prompt and "lesson two" in prompt
    assert texts(result) == ["try1", "try2", "try3"]
    assert result.stop_reason is StopReason.threshold
    assert result.memory == ["lesson one", "lesson two"]


async def test_critic_does_not_revise_when_the_tools_agree() -> None:
    model = ScriptedChat(["right"])
    tools = [Check("right", name="tool-a"), Check("right", name="tool-b")]
    result = await redline.arefine("Q", critic(model, tools, threshold=1.0))
    assert len(model.calls) == 1 and texts(result) == ["right"]
    assert result.stop_reason in (StopReason.threshold, StopReason.verified)
    assert all(t.seen == ["right"] for t in tools)


async def test_critic_corrects_when_a_tool_flags_a_problem() -> None:
    model = ScriptedChat(["wrong", "right"])
    result = await redline.arefine("Q", critic(model, [Check("right", name="tool")]))
    assert texts(result) == ["wrong", "right"]
    assert "'wrong' is wrong" in model.calls[1]["messages"][-1]["content"]
    assert result.stop_reason is StopReason.threshold


async def test_critic_with_the_interpreter_in_the_real_sandbox() -> None:
    program = "```python\nprint(12 * 7)\n```"
    model = routed({"interpreter_system": [program]},
                   ["The answer is 74.", "12 * 7 = 84. The answer is 84."])
    result = await redline.arefine("A box holds 12 eggs. How many eggs are in 7 boxes?",
                                   critic(model))
    assert texts(result) == ["The answer is 74.", "12 * 7 = 84. The answer is 84."]
    assert result.stop_reason is StopReason.threshold
    first = result.rounds[0].scored[0].critiques[0]
    assert first.critic == "interpreter" and first.passed is False
    assert len(calls_with_system(model, "interpreter_system")) == 1  # one program per task


async def test_self_debug_explains_the_failing_test_then_fixes() -> None:
    buggy = "```python\ndef add(a, b):\n    return a - b\n```"
    fixed = "```python\ndef add(a, b):\n    return a + b\n```"
    explanation = "Line 2 subtracts b; add(1, 2) returns -1, the test expects 3."
    model = routed({"selfdebug_system": [explanation, fixed]}, [buggy])
    result = await redline.arefine("Write add(a, b).",
                                   self_debug(model, tests="assert add(1, 2) == 3\n"))
    assert texts(result) == [buggy, fixed]
    assert result.stop_reason is StopReason.threshold
    fix_prompt = calls_with_system(model, "selfdebug_system")[1]
    assert "add(1, 2)" in fix_prompt and explanation in fix_prompt
    assert result.rounds[1].scored[0].candidate.explanation == explanation


async def test_self_debug_never_revises_a_passing_draft() -> None:
    good = "```python\ndef add(a, b):\n    return a + b\n```"
    model = ScriptedChat([good])
    result = await redline.arefine("Write add(a, b).", self_debug(
        model, tests="assert add(1, 2) == 3\n", threshold=1.0))
    assert len(model.calls) == 1 and result.text == good


def test_self_debug_without_tests_uses_the_tasks_own_else_generated_ones() -> None:
    from redline.critics.task_tests import TaskTestsCritic

    cfg = self_debug(ScriptedChat([]))
    assert [type(c) for c in cfg.panel.critics] == [TaskTestsCritic]
    assert cfg.revise_when == "on_failure"
    source = TaskTestsCritic.source
    assert source(Task(prompt="Q", metadata={"tests": "assert f() == 1"})) == "metadata"
    assert source(Task(prompt='def f():\n    """\n    >>> f()\n    1\n    """')) == "examples"
    assert source(Task(prompt="Fix it", draft='def f():\n    """\n    >>> f()\n    1\n    """'
                       )) == "examples"
    assert source(Task(prompt="Write f.")) == "generated"
    prose = 'def f(s):\n    """Upper-cases s.\n    f("ab") ➞ "AB"\n    """'
    assert source(Task(prompt=prose)) == "examples"
    assert source(Task(prompt=prose.replace('f("ab")', 'f(s)'))) == "generated"


def test_the_tests_critic_is_a_plugin_with_a_checked_argument() -> None:
    from redline.plugins import build_critic

    assert build_critic("tests").generated.k == 5
    assert build_critic("tests:8").generated.k == 8
    with pytest.raises(ConfigError, match="K must be a whole number >= 1, got 'x'"):
        build_critic("tests:x")


async def test_self_debug_fixes_a_given_file_by_its_own_examples() -> None:
    draft = ('def is_even(n):\n    """\n    >>> is_even(4)\n    True\n    """\n'
             "    return n % 2 == 1\n")
    fixed = draft.replace("== 1", "== 0")
    model = routed({"selfdebug_system": ["It returns n % 2 == 1, False for 4.", fixed]}, [])
    result = await redline.arefine(Task(prompt="Fix is_even.", draft=draft),
                                   self_debug(model))
    assert texts(result) == [draft, fixed.strip()]
    assert result.stop_reason is StopReason.threshold
    assert "is_even(4)" in calls_with_system(model, "selfdebug_system")[0]


async def test_self_debug_without_usable_generated_tests_goes_on_without_a_verdict() -> None:
    model = routed({"gentests_system": ['{"tests": []}', '{"tests": []}']},
                   ["```python\ndef f():\n    return 1\n```"])
    result = await redline.arefine("Write f() returning 1.", self_debug(model))
    critique = result.best.critiques[0]
    assert result.stop_reason is not StopReason.error and critique.passed is None
    assert "no tests" in critique.evidence["note"]


async def test_best_of_n_makes_n_drafts_no_revision_and_stops_sampled() -> None:
    model = ScriptedChat(["a", "b", "c", "d"])
    scores = {"a": 0.1, "b": 0.7, "c": 0.3, "d": 0.2}
    result = await redline.arefine("Q", best_of_n(model, lambda t: scores[t], n=4))
    assert sorted(texts(result)) == ["a", "b", "c", "d"] and len(model.calls) == 4
    assert len(result.rounds) == 1 and result.text == "b"
    assert result.stop_reason is StopReason.sampled and result.budget_limit is None


async def test_best_of_n_drafts_greedy_first_and_a_tie_keeps_the_greedy_answer() -> None:
    def draft(messages: list[Message]) -> str:
        return "greedy" if model.calls[-1]["temperature"] == 0.0 else f"sample {len(model.calls)}"

    model = ScriptedChat(handler=draft)
    tie = await redline.arefine("Q", best_of_n(model, lambda t: 0.5, n=4))
    assert sorted(c["temperature"] for c in model.calls) == [0.0, 0.7, 0.7, 0.7]
    assert tie.text == "greedy"  # every draft scored alike: the greedy one is kept
    model = ScriptedChat(handler=draft)
    better = await redline.arefine("Q", best_of_n(
        model, lambda t: 0.8 if t == "sample 3" else 0.5, n=4))
    assert better.text == "sample 3"  # a sample the critic ranks higher replaces it
    model = ScriptedChat(handler=draft)
    await redline.arefine("Q", best_of_n(model, lambda t: 0.5, n=3, greedy_first=False,
                                         temperature=0.9))
    assert [c["temperature"] for c in model.calls] == [0.9, 0.9, 0.9]  # the classic form
    from redline.agents.generator import Generator

    own = Generator(model, temperature=0.4)
    assert best_of_n(model, lambda t: 0.5, generator=own).drafter is own  # used as is
    with pytest.raises(ConfigError, match="greedy_first must be true or false"):
        best_of_n(model, lambda t: 0.5, greedy_first="yes")  # type: ignore[arg-type]


async def test_best_of_n_vote_picks_the_majority_answer() -> None:
    drafts = ["6 * 7 = 42, so the answer is 42.", "The answer is 41.",
              "Answer: 42", "I think it is 41.", "#### 42"]
    scores = {drafts[0]: 0.5, drafts[1]: 0.9, drafts[2]: 0.4, drafts[3]: 0.8,
              drafts[4]: 0.6}
    voted = await redline.arefine("Q", best_of_n(ScriptedChat(drafts), lambda t: scores[t],
                                                 n=5, select="vote"))
    assert voted.text == "#### 42"  # the best-scored of the majority answer
    by_score = await redline.arefine("Q", best_of_n(ScriptedChat(drafts),
                                                    lambda t: scores[t], n=5))
    assert by_score.text == "The answer is 41."


async def test_resample_draws_new_samples_of_the_task_until_one_passes() -> None:
    def draft(messages: list[Message]) -> str:
        return ["wrong", "also wrong", "right", "unused"][len(model.calls) - 1]

    model = ScriptedChat(handler=draft)
    check = Check("right")
    result = await redline.arefine("Write it.", resample(model, check, n=5, seed=7))
    assert texts(result) == ["wrong", "also wrong", "right"] and result.text == "right"
    assert result.stop_reason is StopReason.threshold
    # Each sample is the task asked again: the failed answer and its critique unseen.
    assert all(c["messages"] == model.calls[0]["messages"] for c in model.calls)
    assert not any("wrong" in m["content"] for c in model.calls for m in c["messages"])
    assert [c["temperature"] for c in model.calls] == [0.0, 0.7, 0.7]  # greedy first
    assert [c["seed"] for c in model.calls] == [7, 8, 9]
    assert [r.scored[0].candidate.origin for r in result.rounds] == ["draft"] * 3


async def test_resample_keeps_a_passing_draft_and_stops_at_n_drafts() -> None:
    model = ScriptedChat(["right"])
    passed = await redline.arefine("Write it.", resample(model, Check("right")))
    assert len(model.calls) == 1 and passed.text == "right"  # single-shot's answer, kept
    model = ScriptedChat(["a", "b", "c", "d"])
    scores = {"a": 0.6, "b": 0.4, "c": 0.5}
    failing = await redline.arefine("Q", resample(
        model, lambda t: Critique(critic="f", score=scores[t], passed=False), n=3))
    assert len(model.calls) == 3 and failing.text == "a"  # the best of the n drafts
    assert failing.stop_reason is StopReason.budget and failing.budget_limit == "max_rounds"
    assert failing.stop_detail == ("max_rounds: 2 of 2 new drafts done "
                                    "(3 drafts in all, resample's n)")  # no revision made
    # A sample that repeats an earlier one spends its round; the next round draws again
    # (a repair that repeats itself ends the run, an independent draw does not).
    model = ScriptedChat(["a", "b", "a", "z"])
    repeated = await redline.arefine("Q", resample(model, Check("z"), n=5, seed=3))
    assert len(model.calls) == 4 and repeated.text == "z"
    assert repeated.stop_reason is StopReason.threshold
    assert [c["seed"] for c in model.calls] == [3, 4, 5, 6]
    model = ScriptedChat(["a", "a", "a"])
    stuck = await redline.arefine("Q", resample(model, Check("z"), n=3))
    assert len(model.calls) == 3 and stuck.stop_reason is StopReason.budget


async def test_resample_asks_again_with_the_text_the_task_gave() -> None:
    model = ScriptedChat(["fixed"])
    task = Task(prompt="Fix the function.", draft="def f(): return 0")
    result = await redline.arefine(task, resample(model, Check("fixed"), n=2))
    assert texts(result) == ["def f(): return 0", "fixed"]
    asked = model.calls[0]["messages"][-1]["content"]
    assert asked.startswith("Fix the function.") and "def f(): return 0" in asked


async def test_resample_with_a_reviser_model_samples_on_it() -> None:
    small, large = ScriptedChat(["bad"]), ScriptedChat(["good"])
    result = await redline.arefine("Q", resample(small, Check("good"), reviser_model=large))
    assert result.text == "good" and len(small.calls) == len(large.calls) == 1


async def test_single_is_one_draft_and_nothing_else() -> None:
    from redline.workflows.presets import single

    model = ScriptedChat(["only"])
    result = await redline.arefine("Q", single(model, budget=Budget(max_tokens=500)))
    assert texts(result) == ["only"] and len(model.calls) == 1
    assert model.calls[0]["temperature"] == 0.0
    assert result.stop_reason is StopReason.sampled and result.best.critiques[0].passed is None


@pytest.mark.parametrize(("make", "message"), [
    (lambda m: best_of_n(m, n=3, budget=Budget(max_rounds=2)), "max_rounds=2 does not apply"),
    (lambda m: best_of_n(m, revise_when="on_failure"), "revise_when does not apply"),
    (lambda m: best_of_n(m, n=0), "n must be a whole number >= 1"),
    (lambda m: resample(m, n=0), "n must be a whole number >= 1"),
    (lambda m: resample(m, sample_temperature=0), "sample_temperature must be a number"),
    (lambda m: resample(m, n=4, budget=Budget(max_rounds=5)), "so max_rounds is 3; set n"),
    (lambda m: resample(m, revise_when="always"), "sets revise_when='on_failure' itself"),
    (lambda m: resample(m, revise_from="last"), "'resample' sets revise_from itself"),
    (lambda m: reflexion(m, []), "needs an evaluator"),
    (lambda m: reflexion(m, Check(), revise="edit"), "sets revise='rewrite' itself"),
    (lambda m: critic(m, [Check()], revise_when="always"), "sets revise_when='on_failure'"),
    (lambda m: self_refine(m, memory=0), "memory must be a whole number"),
    (lambda m: self_debug(m, tests="def broken(:\n"), "the tests do not parse"),
])
def test_bad_preset_arguments_raise_one_line(make, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as info:
        make(ScriptedChat([]))
    assert "\n" not in str(info.value)


def test_policy_fields_pass_through_and_presets_are_registered() -> None:
    cfg = reflexion(ScriptedChat([]), Check(), threshold=0.5, seed=3)
    assert cfg.threshold == 0.5 and cfg.seed == 3 and cfg.reflector is not None
    assert set(PRESETS) == {"self-refine", "reflexion", "critic", "self-debug", "best-of-n",
                            "resample", "single"}
    from redline.plugins import load_preset

    assert load_preset("self_debug") is load_preset("Self-Debug") is PRESETS["self-debug"]
    with pytest.raises(ConfigError, match="unknown preset 'nope'.*best-of-n"):
        load_preset("nope")


def test_a_run_spec_with_a_preset_round_trips_through_json() -> None:
    spec = RunSpec(preset="best-of-n", n=3, critics=["judge"], budget=Budget(max_tokens=900),
                   preset_options={})
    again = RunSpec.model_validate_json(spec.model_dump_json())
    model = ScriptedChat([])
    for s in (spec, again):
        cfg = s.build(model=model)
        assert cfg.n == 3 and cfg.budget.max_rounds == 0 and cfg.budget.max_tokens == 900
    dumped = json.loads(again.model_dump_json())
    assert "revise_when" not in dumped and "threshold" not in dumped  # the preset's own
    cfg = RunSpec(preset="critic").build(model=model)
    assert cfg.revise_when == "on_failure" and cfg.panel.critics[0].name == "interpreter"
