"""The interpreter critic (CRITIC's Python verifier), on the real sandbox."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

import redline
from redline import StopReason, Task
from redline.cli import cli
from redline.critics import InterpreterCritic
from redline.errors import ConfigError
from redline.llm import Message
from redline.plugins import build_critic
from redline.prompts import render
from redline.testing import OpenAICompatServer, ScriptedChat, acheck_critic
from redline.types import Candidate

QUESTION = ("Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning "
            "and bakes muffins for her friends every day with four. She sells the remainder "
            "at the farmers' market daily for $2 per fresh duck egg. How much in dollars "
            "does she make every day at the farmers' market?")
TASK = Task(prompt=QUESTION, id="ducks")
PROGRAM = "eggs = 16\nleft = eggs - 3 - 4\nprint(left * 2)"
REPLY = f"Here is the program:\n```python\n{PROGRAM}\n```"
RIGHT = "She sells 16 - 3 - 4 = 9 eggs for $2 each: 9 * 2 = $18 a day.\n#### 18"
WRONG = "She sells 16 - 3 = 13 eggs for $2 each, so 13 * 2 = 26. The answer is $26."


async def test_a_right_answer_passes_and_a_wrong_one_gets_the_program_and_its_output() -> None:
    model = ScriptedChat([REPLY])
    critic = InterpreterCritic(model)
    right = await critic.critique(TASK, Candidate(text=RIGHT))
    assert (right.score, right.passed, right.feedback) == (1.0, True, "")
    assert right.evidence["answer"] == "18" and right.evidence["expected"] == "18"
    assert right.evidence["program"].strip() == PROGRAM and right.evidence["stdout"] == "18"
    assert (right.evidence["exit_code"], right.evidence["timed_out"]) == (0, False)

    wrong = await critic.critique(TASK, Candidate(text=WRONG))
    assert (wrong.score, wrong.passed) == (0.0, False)
    assert "final answer is $26" in wrong.feedback and "computes 18" in wrong.feedback
    assert PROGRAM in wrong.feedback and "Its output:\n```\n18\n```" in wrong.feedback
    assert wrong.evidence["answer"] == "$26"
    assert len(model.calls) == 1  # one program per task, for every candidate


async def test_the_program_is_written_from_the_fenced_question_alone() -> None:
    model = ScriptedChat([REPLY])
    critic = InterpreterCritic(model)
    await critic.critique_many(TASK, [Candidate(text=WRONG), Candidate(text=RIGHT)])
    assert len(model.calls) == 1  # judged concurrently, still one program
    system, user = model.calls[0]["messages"]
    assert system["content"] == render("interpreter_system")
    opening = user["content"].split("\n")[user["content"].split("\n").index(QUESTION) - 1]
    assert opening.startswith("<<<QUESTION-")
    assert opening.replace("<<<", "") + ">>>" in user["content"]  # the closing marker
    assert "13 eggs" not in user["content"] and "9 eggs" not in user["content"]
    assert model.calls[0]["response_format"] is None  # code, not JSON


async def test_float_output_and_units_still_agree() -> None:
    critic = InterpreterCritic(ScriptedChat(["```python\nprint(0.1 * 3 * 60)\n```"]))
    task = Task(prompt="0.1 of an hour, three times: how many minutes?", id="float")
    critique = await critic.critique(task, Candidate(text="That is 18 minutes in all."))
    assert critique.passed is True and critique.evidence["stdout"] == "18.000000000000004"


@pytest.mark.parametrize(("program", "reason"), [
    ("while True:\n    pass\nprint(18)", "did not finish within 1 s"),
    ("answer = 16 - 3 - 4\nprint(end='')", "printed nothing"),
    ("print(18 // 0)", "ZeroDivisionError: integer division or modulo by zero"),
])
async def test_a_failing_program_gives_no_verdict(program: str, reason: str) -> None:
    critic = InterpreterCritic(ScriptedChat([f"```python\n{program}\n```"]), timeout=1.0)
    started = time.perf_counter()
    for text in (RIGHT, WRONG):  # neither rewarded nor punished
        critique = await critic.critique(TASK, Candidate(text=text))
        assert (critique.score, critique.passed) == (0.5, None)
        assert reason in critique.evidence["reason"] and reason in critique.feedback
        assert "could not be checked" in critique.feedback
        assert critique.evidence["expected"] is None
    assert critique.evidence["timed_out"] is ("while True" in program)
    assert time.perf_counter() - started < 8  # the loop is cut at the timeout, once


async def test_no_usable_program_after_a_reask_gives_no_verdict() -> None:
    model = ScriptedChat(["The answer is 18.", "x = 18"])  # prose, then code printing nothing
    critique = await InterpreterCritic(model).critique(TASK, Candidate(text=RIGHT))
    assert (critique.score, critique.passed) == (0.5, None)
    assert "no usable program" in critique.evidence["reason"]
    assert len(model.calls) == 2
    assert "the program prints nothing" not in model.calls[1]["messages"][-1]["content"]
    assert "does not parse" in model.calls[1]["messages"][-1]["content"]


async def test_an_answer_stating_nothing_gives_no_verdict() -> None:
    prose = ("I would need to think about this more carefully.\n"
             "There are several steps involved and I am not certain about them.")
    critique = await InterpreterCritic(ScriptedChat([REPLY])).critique(
        TASK, Candidate(text=prose))
    assert (critique.score, critique.passed) == (0.5, None)
    assert critique.evidence["reason"] == "the answer states no final answer"
    assert "The answer is X" in critique.feedback and critique.evidence["expected"] == "18"


async def test_the_critic_keeps_the_contract_and_needs_a_model() -> None:
    await acheck_critic(InterpreterCritic(ScriptedChat([REPLY])),
                        [(TASK, RIGHT), (TASK, WRONG)], concurrency=4)
    with pytest.raises(ConfigError, match="critic 'interpreter' has no model"):
        await InterpreterCritic().critique(TASK, Candidate(text=RIGHT))


def test_the_plugin_factory_reads_the_timeout() -> None:
    critic = build_critic("interpreter")
    assert isinstance(critic, InterpreterCritic) and critic.timeout == 10.0
    assert build_critic("interpreter:2.5").timeout == 2.5
    with pytest.raises(ConfigError, match="the program's timeout in seconds, got 'fast'"):
        build_critic("interpreter:fast")
    with pytest.raises(ConfigError, match="timeout must be > 0"):
        build_critic("interpreter:0")


def program_or_draft(drafts: list[str]):
    """The run's model: the program when the interpreter asks, else the next draft."""
    def handler(messages: list[Message]) -> str:
        if messages[0]["content"] == render("interpreter_system"):
            return REPLY
        return drafts.pop(0)
    return handler


async def test_refine_revises_a_wrong_answer_to_the_right_one() -> None:
    model = ScriptedChat(handler=program_or_draft([WRONG, RIGHT]))
    result = await redline.arefine(TASK, model=model, critics=[InterpreterCritic()],
                                   threshold=1.0)
    assert result.stop_reason is StopReason.threshold and result.text == RIGHT
    assert [(r.index, s.candidate.text, s.score) for r in result.rounds for s in r.scored] \
        == [(0, WRONG, 0.0), (1, RIGHT, 1.0)]
    revise_prompt = model.calls[2]["messages"][-1]["content"]
    assert "computes 18" in revise_prompt and PROGRAM in revise_prompt
    assert result.usage.llm_calls == 3  # draft, program (once), revision


def test_the_cli_critic_interpreter() -> None:
    def handle(request: dict) -> str:
        return program_or_draft(drafts)(request["messages"])

    drafts = [WRONG, RIGHT]
    with OpenAICompatServer(handler=handle) as server:
        out = CliRunner().invoke(cli, ["refine", QUESTION, "--base-url", server.base_url,
                                       "--critic", "interpreter", "--threshold", "1",
                                       "--json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["stop_reason"] == "threshold" and data["best"]["candidate"]["text"] == RIGHT
    first = data["rounds"][0]["scored"][0]["critiques"][0]
    assert (first["critic"], first["passed"], first["evidence"]["expected"]) == \
        ("interpreter", False, "18")


def test_per_task_state_is_kept_for_the_most_recent_tasks_only() -> None:
    from redline.critics._per_task import PerTask

    made: list[int] = []
    states = PerTask(lambda: made.append(1) or len(made), size=2)
    assert [states.get("a"), states.get("b"), states.get("a")] == [1, 2, 1]
    assert states.get("c") == 3  # "b" was the least recently used: dropped
    assert states.get("a") == 1 and states.get("b") == 4
