"""Every run ends with an answer: broken critics and models, gates of every return type,
"best" among failing candidates, the time budget, interrupts, preflight."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import answers, score_table

import redline
from redline import Budget, Critique, StopReason, critic
from redline.critics import Critic, LLMJudge, Panel
from redline.errors import ConfigError, CriticError, LLMError
from redline.testing import ScriptedChat
from redline.types import Candidate, Task

# --- a broken critic or model never loses the run ---------------------------------------


async def test_a_judge_whose_model_returns_garbage_keeps_the_draft() -> None:
    model = ScriptedChat(handler=lambda m: "the draft" if "grade" not in
                         m[0]["content"] else "I like turtles")
    result = await redline.arefine("Q", model=model, critics=[LLMJudge()])
    assert result.stop_reason is StopReason.error
    assert result.error and "no usable verdict" in result.error
    assert result.text == "the draft"
    assert result.best is not None and result.best.unscored
    assert result.best.critiques == []
    assert result.usage.llm_calls == 3  # the draft and the judge's two tries, all counted


async def test_a_critic_that_breaks_after_a_good_round_returns_the_best_so_far() -> None:
    calls = {"n": 0}

    @critic
    def flaky(text: str) -> float:
        calls["n"] += 1
        if text == "second":
            raise ZeroDivisionError("boom")
        return 0.5

    result = await redline.arefine("Q", model=answers("first", "second"), critics=[flaky])
    assert result.stop_reason is StopReason.error
    assert result.error == "critique failed: critic 'flaky' failed: ZeroDivisionError: boom"
    assert result.text == "first" and not result.best.unscored
    assert result.best.score == 0.5


async def test_the_model_failing_mid_run_returns_the_best_so_far() -> None:
    model = ScriptedChat(["draft", LLMError("server exploded")])
    result = await redline.arefine("Q", model=model, critics=[score_table(draft=0.3)])
    assert result.stop_reason is StopReason.error
    assert result.error == "revise failed: server exploded"
    assert result.text == "draft"


async def test_a_model_that_fails_the_first_call_returns_no_answer_but_a_result() -> None:
    model = ScriptedChat([LLMError("down")])
    result = await redline.arefine("Q", model=model, critics=[lambda t: 1.0])
    assert result.stop_reason is StopReason.error and result.best is None
    assert result.text is None and result.error == "generate failed: down"


async def test_on_error_raise_keeps_the_old_behaviour() -> None:
    @critic
    def broken(text: str) -> float:
        raise ZeroDivisionError("boom")

    with pytest.raises(CriticError, match="critic 'broken' failed: ZeroDivisionError: boom"):
        await redline.arefine("Q", model=answers("a"), critics=[broken], on_error="raise")


async def test_configuration_errors_still_raise() -> None:
    with pytest.raises(ConfigError, match="RefineConfig: on_error: Input should be 'result'"):
        await redline.arefine("Q", model=answers("a"), critics=[lambda t: 1.0],
                              on_error="ignore")  # type: ignore[arg-type]


# --- what "a gate failed" means, for every return type -----------------------------------


@pytest.mark.parametrize("returns", ["float", "pair", "bool", "critique"])
async def test_a_gate_fails_below_its_pass_mark_whatever_it_returns(returns: str) -> None:
    def verdict(ok: bool):  # noqa: ANN202
        score = 1.0 if ok else 0.0
        return {"float": score, "pair": (score, "" if ok else "remove the TODO"),
                "bool": ok, "critique": Critique(critic="no_todo", score=score)}[returns]

    @critic(gate=True)
    def no_todo(text: str):  # noqa: ANN202
        "The answer must not contain TODO."
        return verdict("TODO" not in text)

    result = await redline.arefine("Q", model=answers("x TODO", "done"), critics=[no_todo],
                                   revise_when="on_failure")
    first = result.rounds[0].scored[0]
    assert first.critiques[0].passed is False and first.failed and not first.gates_passed
    # on_failure revised it (before: stopped as "verified" at score 0.0).
    assert result.stop_reason is StopReason.threshold and result.text == "done"


async def test_a_pass_mark_makes_a_soft_critic_give_a_verdict() -> None:
    @critic(pass_mark=0.5)
    def quality(text: str) -> float:
        return {"meh": 0.4, "good": 0.6}[text]

    result = await redline.arefine("Q", model=answers("meh", "good"), critics=[quality],
                                   revise_when="on_failure", threshold=0.95)
    assert [s.critiques[0].passed for r in result.rounds for s in r.scored] == [False, True]
    assert result.stop_reason is StopReason.verified and result.text == "good"


def test_a_pass_mark_outside_the_unit_interval_is_refused() -> None:
    with pytest.raises(ConfigError, match="pass_mark 2 is outside"):
        critic(pass_mark=2)(lambda t: 1.0)


# --- best and converged while every candidate fails a gate -------------------------------


def _word_limit(limit: int):  # noqa: ANN202
    @critic(gate=True, name="limit")
    def within(text: str) -> tuple[float, str]:
        n = len(text.split())
        return min(1.0, limit / n), f"{n} words: cut to {limit}" if n > limit else ""
    return within


async def test_best_prefers_the_candidate_closest_to_passing_its_gate() -> None:
    long, shorter = "w " * 208, "w " * 108
    result = await redline.arefine(
        "Q", model=answers(long, shorter), critics=[_word_limit(25), lambda t: 0.8],
        budget=Budget(max_rounds=1))
    assert [s.score for r in result.rounds for s in r.scored] == [0.0, 0.0]
    assert result.text == shorter.strip()
    assert result.best.gate_score == pytest.approx(25 / 108)


async def test_converged_does_not_fire_while_the_gate_score_improves() -> None:
    texts = ["w " * n for n in (200, 150, 100, 60, 30)]
    result = await redline.arefine(
        "Q", model=answers(*texts), critics=[_word_limit(25)],
        budget=Budget(max_rounds=4), patience=1)
    # Every revision is shorter: no "converged" while the gate's score still rises.
    assert result.stop_reason is StopReason.budget
    assert len(scored := [s for r in result.rounds for s in r.scored]) == 5
    assert result.text == texts[-1].strip() and scored[-1].gate_score == pytest.approx(25 / 30)


async def test_converged_fires_when_the_gate_score_stops_improving() -> None:
    texts = ["w " * 200, "w " * 150, "w " * 150 + "x"]
    result = await redline.arefine(
        "Q", model=answers(*texts), critics=[_word_limit(25)],
        budget=Budget(max_rounds=5), patience=1)
    assert result.stop_reason is StopReason.converged


# --- repeated critics are numbered everywhere --------------------------------------------


class _Fixed(Critic):
    name = "fixed"

    def __init__(self, score: float) -> None:
        self.score = score

    async def critique(self, task: Task, candidate: Candidate) -> Critique:
        return Critique(critic="fixed", score=self.score)  # names itself, as plugins do


async def test_the_same_critic_twice_gets_numbered_names_in_the_trace() -> None:
    result = await redline.arefine("Q", model=answers("a"), critics=[_Fixed(1.0), _Fixed(0.9)],
                                   threshold=0.9)
    names = [c.critic for c in result.best.critiques]
    assert names == ["fixed", "fixed-2"]
    assert [c.score for c in result.best.critiques] == [1.0, 0.9]
    assert Panel([_Fixed(1.0), _Fixed(0.5), _Fixed(0.1)]).names == ["fixed", "fixed-2", "fixed-3"]


# --- the time budget ---------------------------------------------------------------------


async def test_usage_seconds_never_exceeds_max_seconds() -> None:
    over = []
    count = iter(range(10**6))
    for i in range(10):
        model = ScriptedChat(handler=lambda m: f"answer {next(count)}",
                             delay=0.005 + 0.02 * (i % 5))
        result = await redline.arefine(
            "Q", model=model, critics=[lambda t: 0.1], patience=10**6,
            budget=Budget(max_rounds=10**6, max_seconds=0.5))
        assert result.stop_reason is StopReason.budget and result.budget_limit == "max_seconds"
        over.append(result.usage.seconds - 0.5)
    assert max(over) <= 0, over


async def test_a_blocking_sync_critic_cannot_hold_the_run_past_its_time() -> None:
    @critic
    def slow(text: str) -> float:
        time.sleep(0.6)
        return 1.0

    result = await redline.arefine("Q", model=answers("a"), critics=[slow],
                                   budget=Budget(max_seconds=0.2))
    # The sync critic ran in a worker thread, so the time limit could act while it ran.
    assert result.stop_reason is StopReason.budget and result.budget_limit == "max_seconds"
    assert result.usage.seconds < 0.6
    assert result.best is not None and result.best.unscored and result.text == "a"


# --- interrupts --------------------------------------------------------------------------


async def test_progress_carries_the_result_so_far_for_an_interrupt() -> None:
    seen: list[redline.Progress] = []
    model = ScriptedChat(handler=lambda m: "answer", delay=0.05)
    run = asyncio.ensure_future(redline.arefine(
        "Q", model=model, critics=[lambda t: 0.5], patience=99,
        budget=Budget(max_rounds=99), on_progress=seen.append))
    while not any(p.node == "critique" for p in seen):
        await asyncio.sleep(0.01)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    from redline.workflows import interrupted_result

    kept = interrupted_result(seen[-1], Task(prompt="Q"), 0.9)
    assert kept.stop_reason is StopReason.interrupted and kept.text == "answer"
    assert kept.best.score == 0.5


# --- preflight ---------------------------------------------------------------------------


class _NeedsTool(Critic):
    name = "needs-tool"

    async def preflight(self) -> None:
        raise ConfigError("critic 'needs-tool': tool 'frobnicate' is not installed")

    async def critique(self, task: Task, candidate: Candidate) -> Critique:
        raise AssertionError("never reached")


async def test_preflight_stops_before_any_token_is_spent() -> None:
    model = answers("never")
    with pytest.raises(ConfigError, match="'frobnicate' is not installed"):
        await redline.arefine("Q", model=model, critics=[_NeedsTool()])
    assert model.calls == []


async def test_a_missing_command_is_found_by_preflight() -> None:
    from redline.critics import CommandCritic

    model = answers("never")
    with pytest.raises(ConfigError, match="command 'no-such-compiler-xyz' is not installed"):
        await redline.arefine("Q", model=model,
                              critics=[CommandCritic("no-such-compiler-xyz {file}")])
    assert model.calls == []


async def test_a_server_that_is_down_is_found_by_preflight() -> None:
    import socket

    from redline.llm import OpenAIChat

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    model = OpenAIChat("m", base_url=f"http://127.0.0.1:{port}/v1", max_attempts=1)
    started = time.monotonic()
    with pytest.raises(ConfigError, match=f"127.0.0.1:{port}"):
        await redline.arefine("Q", model=model, critics=[lambda t: 1.0])
    assert time.monotonic() - started < 5


# --- reviser scaffolding -----------------------------------------------------------------


async def test_the_revisers_markers_do_not_leak_into_the_answer() -> None:
    model = answers("draft", "Improved answer:\n<<<ANSWER\nbetter\nANSWER>>>")
    result = await redline.arefine("Q", model=model,
                                   critics=[score_table(draft=0.2, better=1.0)])
    assert result.text == "better" and result.stop_reason is StopReason.threshold


# --- the JSON document -------------------------------------------------------------------


async def test_the_result_document_is_versioned_and_reads_back() -> None:
    result = await redline.arefine("Q", model=answers("draft", "better"),
                                   critics=[score_table(draft=0.2, better=1.0)])
    doc = result.document({"model": {"name": "scripted"}})
    assert doc["schema_version"] == redline.types.RESULT_SCHEMA_VERSION
    assert doc["redline_version"] == redline.__version__ and doc["text"] == "better"
    revision = doc["rounds"][1]["scored"][0]["candidate"]
    assert revision["id"] == result.best.candidate.id
    assert revision["parent"] == doc["rounds"][0]["scored"][0]["candidate"]["id"]
    assert redline.RefineResult.from_document(doc) == result
    with pytest.raises(ValueError, match="schema version"):
        redline.RefineResult.from_document({**doc, "schema_version": 99})


# --- the library meets users where they are ----------------------------------------------


def test_refine_without_a_model_uses_the_configured_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from redline.testing import OpenAICompatServer

    with OpenAICompatServer(["the answer"]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        monkeypatch.delenv("REDLINE_MODEL", raising=False)
        result = redline.refine("Q", critics=[lambda t: 1.0])
        assert result.text == "the answer"
        # A model string resolves too (the same server, named explicitly).
        again = redline.refine("Q", model="vllm:test-model", critics=[lambda t: 1.0])
        assert again.text.startswith("echo:")
