"""The refine loop's logic with a scripted model (`Runner` walks the graph's nodes;
tests/test_steps_parity.py holds that walk to LangGraph's own run of them)."""

from __future__ import annotations

import asyncio

import pytest
from conftest import answers, score_table

import redline
from redline import Budget, Critique, StopReason, Task, critic
from redline.errors import CriticError
from redline.llm import Price
from redline.testing import ScriptedChat


def trajectory(result: redline.RefineResult) -> list[tuple[int, str, float]]:
    return [(r.index, s.candidate.text, s.score) for r in result.rounds for s in r.scored]


async def test_threshold_stop_after_one_revision() -> None:
    model = answers("draft answer", "better answer")
    result = await redline.arefine(
        "Write it.", model=model, critics=[score_table(**{"draft answer": 0.4,
                                                           "better answer": 0.95})],
        threshold=0.9)
    assert result.stop_reason is StopReason.threshold
    assert trajectory(result) == [(0, "draft answer", 0.4), (1, "better answer", 0.95)]
    assert result.text == "better answer"
    assert result.best.candidate.origin == "rewrite"
    assert result.best.candidate.parent == result.rounds[0].scored[0].candidate.id
    assert result.usage.llm_calls == 2 == len(model.calls)
    # The reviser saw the critic's feedback-free verdict and the draft.
    assert "draft answer" in model.calls[1]["messages"][-1]["content"]


async def test_draft_already_good_stops_without_revising() -> None:
    model = answers("perfect")
    result = await redline.arefine("Q", model=model, critics=[lambda text: 1.0])
    assert result.stop_reason is StopReason.threshold
    assert len(result.rounds) == 1 and len(model.calls) == 1


async def test_max_rounds_stops_with_budget_reason() -> None:
    model = answers("a", "b", "c", "d")
    result = await redline.arefine(
        "Q", model=model, critics=[score_table(a=0.1, b=0.2, c=0.3, d=0.4)],
        budget=Budget(max_rounds=2), patience=5)
    assert result.stop_reason is StopReason.budget
    assert result.budget_limit == "max_rounds"
    assert [t for _, t, _ in trajectory(result)] == ["a", "b", "c"]
    assert result.text == "c"


async def test_max_llm_calls_is_never_exceeded() -> None:
    model = answers("a", "b", "c", "d", "e")
    result = await redline.arefine(
        "Q", model=model, critics=[score_table(a=0.1, b=0.2, c=0.3, d=0.4, e=0.5)],
        budget=Budget(max_rounds=10, max_llm_calls=3), patience=10)
    assert result.stop_reason is StopReason.budget
    assert result.budget_limit == "max_llm_calls"
    assert result.usage.llm_calls == 3 == len(model.calls)
    assert result.text == "c"
    assert "3 of 3" in result.stop_detail


async def test_max_tokens_clamps_calls_and_is_never_exceeded() -> None:
    long = " ".join(["word"] * 40)
    model = ScriptedChat([long, long, long, long])
    result = await redline.arefine(
        "Say it", model=model, critics=[lambda text: min(0.8, len(text) / 1000)],
        budget=Budget(max_rounds=5, max_tokens=150), patience=10)
    assert result.stop_reason is StopReason.budget
    assert result.budget_limit == "max_tokens"
    assert result.usage.total_tokens <= 150
    # The last call was clamped to what was left rather than refused outright.
    assert any(c["max_tokens"] < 1024 for c in model.calls)


async def test_max_cost_is_never_exceeded() -> None:
    price = Price(input_per_mtok=1_000_000, output_per_mtok=1_000_000)  # $1 per token
    model = ScriptedChat(["one two three"] * 10, price=price)
    result = await redline.arefine(
        "Q", model=model, critics=[lambda text: 0.5], budget=Budget(max_rounds=10,
                                                                    max_cost_usd=60),
        patience=20, revise_from="last")
    assert result.stop_reason is StopReason.budget
    assert result.budget_limit == "max_cost_usd"
    assert 0 < result.usage.cost_usd <= 60


async def test_max_seconds_stops_the_run() -> None:
    count = iter(range(1000))
    model = ScriptedChat(handler=lambda m: f"answer {next(count)}", delay=0.3)
    result = await redline.arefine(
        "Q", model=model, critics=[lambda text: 0.5], budget=Budget(max_rounds=50,
                                                                    max_seconds=1.0),
        patience=100)
    assert result.stop_reason is StopReason.budget
    assert result.budget_limit == "max_seconds"
    assert result.best is not None


async def test_critic_llm_calls_count_against_the_budget() -> None:
    model = answers("a", "b", "c", judge=['{"score": 3, "feedback": "more"}'] * 5)
    result = await redline.arefine("Q", model=model, budget=Budget(max_llm_calls=3,
                                                                   max_rounds=9))
    assert result.usage.llm_calls == 3 == len(model.calls)
    assert result.budget_limit == "max_llm_calls"
    judge_usage = result.rounds[0].scored[0].critiques[0].usage
    assert judge_usage.llm_calls == 1 and judge_usage.input_tokens > 0


async def test_converges_when_scores_stop_improving() -> None:
    model = answers("a", "b", "c", "d")
    result = await redline.arefine(
        "Q", model=model, critics=[score_table(a=0.5, b=0.5, c=0.4, d=0.9)], patience=2)
    assert result.stop_reason is StopReason.converged
    assert [t for _, t, _ in trajectory(result)] == ["a", "b", "c"]
    assert "2 rounds" in result.stop_detail


async def test_converges_when_reviser_repeats_a_candidate() -> None:
    model = answers("same", "same")
    result = await redline.arefine("Q", model=model, critics=[lambda t: 0.5], patience=5)
    assert result.stop_reason is StopReason.converged
    assert "round 0" in result.stop_detail
    assert len(model.calls) == 2


async def test_best_so_far_is_kept_when_a_revision_is_worse() -> None:
    model = answers("good", "worse", "worst")
    result = await redline.arefine(
        "Q", model=model, critics=[score_table(good=0.7, worse=0.3, worst=0.2)],
        budget=Budget(max_rounds=2), patience=5)
    assert result.text == "good"
    assert result.final.candidate.text == "worst"
    # Each revision started from the best-so-far, not from the last candidate.
    assert all("good" in c["messages"][-1]["content"] for c in model.calls[1:])


async def test_gate_failure_caps_score_and_blocks_threshold() -> None:
    @critic(gate=True)
    def has_number(text: str) -> bool:
        "The answer must contain a number."
        return any(ch.isdigit() for ch in text)

    model = answers("no digits", "42 digits")
    result = await redline.arefine("Q", model=model, critics=[has_number, lambda t: 0.95])
    first, second = result.rounds[0].scored[0], result.rounds[1].scored[0]
    assert (first.score, first.gates_passed) == (0.0, False)
    assert "must contain a number" in model.calls[1]["messages"][-1]["content"]
    assert (second.score, second.gates_passed) == (0.95, True)
    assert result.stop_reason is StopReason.threshold


async def test_on_failure_skips_revision_when_gates_pass() -> None:
    @critic(gate=True)
    def compiles(text: str) -> bool:
        return True

    model = answers("fine")
    result = await redline.arefine("Q", model=model, critics=[compiles, lambda t: 0.5],
                                   revise_when="on_failure")
    assert result.stop_reason is StopReason.verified
    assert len(model.calls) == 1


async def test_on_failure_revises_when_a_verifier_fails() -> None:
    @critic(gate=True)
    def compiles(text: str) -> bool:
        return text == "fixed"

    model = answers("broken", "fixed")
    result = await redline.arefine("Q", model=model, critics=[compiles, lambda t: 0.5],
                                   revise_when="on_failure")
    assert [t for _, t, _ in trajectory(result)] == ["broken", "fixed"]
    assert result.stop_reason is StopReason.verified


async def test_edit_mode_applies_search_replace_blocks() -> None:
    draft = "line one\nline two has a bug\nline three"
    edit = "<<<<<<< SEARCH\nline two has a bug\n=======\nline two is fixed\n>>>>>>> REPLACE"
    model = answers(draft, edit)
    result = await redline.arefine(
        "Q", model=model, critics=[lambda t: 1.0 if "fixed" in t else 0.2], revise="edit")
    assert result.text == "line one\nline two is fixed\nline three"
    assert result.best.candidate.origin == "edit"
    assert len(model.calls) == 2


async def test_edit_mode_falls_back_to_rewrite_when_a_block_does_not_apply() -> None:
    bad_edit = "<<<<<<< SEARCH\nnot in the answer\n=======\nx\n>>>>>>> REPLACE"
    model = answers("draft", bad_edit, "rewritten answer")
    result = await redline.arefine(
        "Q", model=model, critics=[score_table(draft=0.1, **{"rewritten answer": 1.0})],
        revise="edit")
    assert result.text == "rewritten answer"
    assert result.best.candidate.origin == "edit-fallback"
    assert "search/replace" in model.calls[1]["messages"][-1]["content"]
    assert "Write the improved answer in full" in model.calls[2]["messages"][-1]["content"]
    assert result.best.candidate.usage.llm_calls == 2


async def test_a_critic_that_raises_gives_a_clear_error() -> None:
    def broken(text: str) -> float:
        raise ZeroDivisionError("boom")

    with pytest.raises(CriticError, match=r"critic 'broken' failed: ZeroDivisionError: boom"):
        await redline.arefine("Q", model=answers("a"), critics=[broken], on_error="raise")
    result = await redline.arefine("Q", model=answers("a"), critics=[broken])
    assert result.error == "critique failed: critic 'broken' failed: ZeroDivisionError: boom"


async def test_a_score_outside_the_unit_interval_is_a_critic_error() -> None:
    with pytest.raises(CriticError, match=r"critic 'table' returned score 1.5 outside \[0, 1\]"):
        await redline.arefine("Q", model=answers("a"), critics=[score_table(a=1.5)],
                              on_error="raise")


async def test_n_drafts_in_parallel_and_the_best_wins() -> None:
    model = answers("x", "y", "z")
    result = await redline.arefine("Q", model=model, n=3,
                                   critics=[score_table(x=0.2, y=0.8, z=0.4)],
                                   budget=Budget(max_rounds=0))
    assert sorted(s.candidate.text for s in result.rounds[0].scored) == ["x", "y", "z"]
    assert result.text == "y"
    assert result.stop_reason is StopReason.sampled and result.budget_limit is None
    assert all(c["temperature"] > 0 for c in model.calls)


async def test_a_given_draft_is_improved_without_generating() -> None:
    model = answers("improved")
    result = await redline.arefine(Task(prompt="Fix typos", draft="teh draft"), model=model,
                                   critics=[score_table(**{"teh draft": 0.2, "improved": 1.0})])
    assert result.rounds[0].scored[0].candidate.origin == "given"
    assert result.text == "improved" and len(model.calls) == 1


async def test_critiques_are_cached_by_content() -> None:
    seen: list[str] = []

    def counting(text: str) -> float:
        seen.append(text)
        return 0.5

    model = answers("same", "same")
    await redline.arefine("Q", model=model, critics=[counting], patience=5)
    assert seen == ["same"]


async def test_progress_is_reported_for_every_step() -> None:
    events: list[redline.Progress] = []
    model = answers("a", "b")
    await redline.arefine("Q", model=model, critics=[score_table(a=0.2, b=1.0)],
                          on_progress=events.append)
    assert [e.node for e in events] == ["generate", "critique", "decide", "revise",
                                        "critique", "decide", "finalize"]
    scored = [e for e in events if e.node == "critique"]
    assert [[s.candidate.text for s in e.scored] for e in scored] == [["a"], ["b"]]
    assert events[-1].stop_reason is StopReason.threshold
    assert events[-1].best_score == 1.0


async def test_result_round_trips_through_json() -> None:
    model = answers("a", "b", judge=['{"score": 4, "feedback": "add detail"}',
                                     '{"score": 10, "feedback": ""}'])
    result = await redline.arefine("Q", model=model)
    again = redline.RefineResult.model_validate_json(result.model_dump_json())
    assert again == result
    assert again.rounds[0].scored[0].critiques[0].feedback == "add detail"


def test_sync_refine_refuses_inside_a_running_loop() -> None:
    async def inside() -> None:
        redline.refine("Q", model=answers("a"), critics=[lambda t: 1.0])

    with pytest.raises(redline.ConfigError, match="use `await redline.arefine"):
        asyncio.run(inside())


def test_sync_refine_runs() -> None:
    result = redline.refine("Q", model=answers("a"), critics=[lambda t: 1.0])
    assert result.text == "a"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"threshold": 1.5}, "RefineConfig: threshold: Input should be less than or equal to 1"),
    ({"n": 0}, "RefineConfig: n: Input should be greater than or equal to 1"),
    ({"revise": "patch"}, "RefineConfig: revise: Input should be 'rewrite' or 'edit'"),
    ({"patience": 0}, "RefineConfig: patience: Input should be greater than or equal to 1"),
    ({"thresold": 0.5}, "RefineConfig: thresold: Extra inputs are not permitted"),
])
async def test_bad_configuration_is_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(redline.ConfigError, match=message):
        await redline.arefine("Q", model=answers("a"), **kwargs)


def test_empty_task_is_rejected() -> None:
    with pytest.raises(ValueError, match="task prompt is empty"):
        Task(prompt="   ")


async def test_critic_returning_critique_keeps_its_evidence() -> None:
    @critic
    async def detailed(task: Task, candidate: redline.Candidate) -> Critique:
        return Critique(critic="detailed", score=1.0, evidence={"len": len(candidate.text)},
                        raw=7.0)

    result = await redline.arefine("Q", model=answers("abc"), critics=[detailed])
    critique = result.best.critiques[0]
    assert critique.evidence == {"len": 3} and critique.raw == 7.0


async def test_max_seconds_covers_slow_tool_critics() -> None:
    async def slow_tool(text: str) -> float:
        await asyncio.sleep(5)
        return 1.0

    result = await redline.arefine("Q", model=answers("a"), critics=[slow_tool],
                                   budget=Budget(max_seconds=0.3))
    assert result.stop_reason is StopReason.budget
    assert result.budget_limit == "max_seconds"
    # The only candidate could not be scored in time: it is returned, marked unscored.
    assert result.best is not None and result.best.unscored and result.text == "a"
