"""`HumanCritic`: a person's mark through a LangGraph pause (real graph, real checkpointer),
through an ``ask`` callable, and on a real terminal (a pseudo-terminal driving the CLI)."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

import redline
from redline import Task
from redline.critics import HumanCritic, Panel, critic
from redline.critics.human import PAYLOAD_KIND, read_verdict
from redline.errors import ConfigError, CriticError, HumanInputNeeded
from redline.plugins import build_critic, discover
from redline.testing import OpenAICompatServer, ScriptedChat
from redline.types import Candidate, StopReason
from redline.workflows import build_refine_graph

THREAD = {"configurable": {"thread_id": "run-1"}}


def reviser_prompt(model: ScriptedChat) -> str:
    """The last call's messages as one text (the reviser's prompt after a revise)."""
    return "\n".join(m["content"] for m in model.calls[-1]["messages"])


# -- graph mode: the real refine graph, paused and resumed --------------------------------


async def test_pause_shows_the_candidate_resume_feeds_the_reviser_then_threshold() -> None:
    model = ScriptedChat(["draft one", "draft two"])
    graph = build_refine_graph(model, [HumanCritic()], checkpointer=InMemorySaver(),
                               threshold=0.8)
    task = Task(prompt="Write draft two.")

    out = await graph.ainvoke({"task": task}, THREAD)
    (pause,) = out["__interrupt__"]
    assert pause.value == {
        "kind": PAYLOAD_KIND, "critic": "human", "task": "Write draft two.",
        "candidate_id": Candidate(text="draft one").id, "candidate": "draft one",
        "round": 0, "scale": 10, "answer": pause.value["answer"]}
    assert "mark from 0 to 10" in pause.value["answer"]
    assert "result" not in out and len(model.calls) == 1  # only the draft so far

    out = await graph.ainvoke(
        Command(resume={"score": 3, "feedback": "Say 'two', not 'one'."}), THREAD)
    (pause,) = out["__interrupt__"]
    assert (pause.value["candidate"], pause.value["round"]) == ("draft two", 1)
    assert "[human] (score 0.30) Say 'two', not 'one'." in reviser_prompt(model)

    out = await graph.ainvoke(Command(resume=9), THREAD)
    result = out["result"]
    assert "__interrupt__" not in out
    assert result.stop_reason is StopReason.threshold
    assert result.text == "draft two" and result.best.score == pytest.approx(0.9)
    marks = [(s.candidate.text, s.critiques[0].raw, s.critiques[0].score)
             for r in result.rounds for s in r.scored]
    assert marks == [("draft one", 3.0, 0.3), ("draft two", 9.0, 0.9)]
    assert len(model.calls) == 2  # a resume does not draft or revise again


async def test_the_person_composes_in_a_panel_with_other_critics() -> None:
    judged: list[str] = []

    @critic
    def says_two(text: str) -> float:
        judged.append(text)
        return 1.0 if "two" in text else 0.0

    model = ScriptedChat(["draft one"])
    graph = build_refine_graph(
        model, [HumanCritic(name="alice"), says_two, HumanCritic(name="bob", gate=True)],
        checkpointer=InMemorySaver(), threshold=0.5, budget=redline.Budget(max_rounds=0))
    out = await graph.ainvoke({"task": Task(prompt="Q")}, THREAD)
    # One pause at a time, in panel order; the other critics wait for the answers.
    assert [p.value["critic"] for p in out["__interrupt__"]] == ["alice"]
    out = await graph.ainvoke(Command(resume={"score": 8, "feedback": "fine"}), THREAD)
    assert [p.value["critic"] for p in out["__interrupt__"]] == ["bob"]
    out = await graph.ainvoke(Command(resume={"score": 2, "passed": False,
                                              "feedback": "wrong number"}), THREAD)
    best = out["result"].best
    verdicts = {c.critic: (c.score, c.passed, c.feedback) for c in best.critiques}
    assert verdicts == {"alice": (0.8, None, "fine"), "says_two": (0.0, None, ""),
                        "bob": (0.2, False, "wrong number")}
    assert (best.score, best.gates_passed) == (0.0, False)  # bob is a gate and failed
    assert judged and set(judged) == {"draft one"}


async def test_an_invalid_resume_value_asks_again_saying_what_was_wrong() -> None:
    model = ScriptedChat(["draft"])
    graph = build_refine_graph(model, [HumanCritic()], checkpointer=InMemorySaver(),
                               threshold=0.5)
    await graph.ainvoke({"task": Task(prompt="Q")}, THREAD)
    for bad, why in [({"score": 11}, "the score 11 is outside 0-10"),
                     ("seven", "the score 'seven' is not a number"),
                     ({"mark": 7}, "unknown key 'mark'")]:
        out = await graph.ainvoke(Command(resume=bad), THREAD)
        (pause,) = out["__interrupt__"]
        assert why in pause.value["error"] and "send a mark from 0 to 10" in pause.value[
            "error"]
        assert pause.value["candidate"] == "draft" and "result" not in out
    out = await graph.ainvoke(Command(resume={"score": 7, "feedback": "ok"}), THREAD)
    assert out["result"].stop_reason is StopReason.threshold
    assert out["result"].best.critiques[0].raw == 7.0


@pytest.mark.parametrize(("answer", "why"), [
    (True, "the score True is not a number"),
    ("7", "the score '7' is not a number"),
    ({"feedback": "x"}, "no 'score'"),
    ({"score": 5, "comment": "x"}, "unknown key 'comment'"),
    ({"score": -1}, "the score -1 is outside 0-10"),
    (float("nan"), "the score nan is outside 0-10"),
    ({"score": 5, "feedback": 3}, "the feedback is a int, not a string"),
    ({"score": 5, "passed": "yes"}, "'passed' is 'yes', not true or false"),
    (None, "the score None is not a number"),
])
def test_read_verdict_rejects_in_one_line_naming_the_critic(answer: Any, why: str) -> None:
    with pytest.raises(CriticError) as caught:
        read_verdict(answer, critic="editor")
    message = str(caught.value)
    assert "\n" not in message and caught.value.critic == "editor"
    assert message.startswith("critic 'editor': the answer ") and why in message
    assert 'send a mark from 0 to 10, or {"score": <0-10>, "feedback"' in message


def test_read_verdict_scales_the_mark() -> None:
    assert read_verdict(7).model_dump(include={"score", "raw", "passed", "feedback"}) == {
        "score": 0.7, "raw": 7.0, "passed": None, "feedback": ""}
    assert read_verdict({"score": 0.25, "feedback": " tighten ", "passed": True},
                        scale=1).model_dump(include={"score", "raw", "passed", "feedback"}) \
        == {"score": 0.25, "raw": 0.25, "passed": True, "feedback": "tighten"}
    with pytest.raises(CriticError, match="outside 0-1"):
        read_verdict(7, scale=1)


async def test_outside_a_graph_without_ask_says_what_to_do() -> None:
    with pytest.raises(ConfigError, match="critic 'human' has no ask= and is not running "
                                          "in a LangGraph graph"):
        await HumanCritic().critique(Task(prompt="Q"), Candidate(text="a"))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"scale": 0}, "scale 0 must be a positive number"),
    ({"pass_mark": 2}, "pass_mark 2 is outside [0, 1]"),
    ({"ask": "terminal"}, "ask must be a callable"),
])
def test_bad_setup_is_a_config_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        HumanCritic(**kwargs)


# -- arefine: pauses raise HumanInputNeeded, resume= continues --------------------------


async def test_arefine_without_a_checkpointer_refuses_before_any_token() -> None:
    model = ScriptedChat(["never drafted"])
    with pytest.raises(ConfigError, match="critic 'human': a HumanCritic needs a "
                                          "checkpointer in graph mode .* or pass ask="):
        await redline.arefine("Q", model=model, critics=[HumanCritic(), lambda t: 1.0])
    with pytest.raises(ConfigError, match="resume= needs the checkpointer"):
        await redline.arefine("Q", model=model, critics=[lambda t: 1.0], resume=5)
    assert model.calls == []


async def test_arefine_pauses_then_resumes_to_a_result() -> None:
    model = ScriptedChat(["draft one", "draft two"])
    saver = InMemorySaver()
    task = Task(prompt="Write draft two.")
    run = {"model": model, "critics": [HumanCritic()], "threshold": 0.8,
           "checkpointer": saver}

    with pytest.raises(HumanInputNeeded) as paused:
        await redline.arefine(task, **run)
    exc = paused.value
    assert (exc.task, exc.thread_id) == (task, task.id)
    assert exc.payload["candidate"] == "draft one" and exc.interrupt_id
    assert f"run {task.id!r} is paused for human input: critic 'human' waits for a mark " \
           "(0-10) of candidate" in str(exc) and "resume=" in str(exc)

    # Asking again without an answer spends nothing and says the same.
    with pytest.raises(HumanInputNeeded):
        await redline.arefine(task, **run)
    # A bad answer is refused before the run continues; the run stays paused.
    with pytest.raises(CriticError, match="the score 12 is outside 0-10"):
        await redline.arefine(task, **run, resume=12)
    assert len(model.calls) == 1

    with pytest.raises(HumanInputNeeded) as paused:
        await redline.arefine(task, **run, resume={"score": 4, "feedback": "Say two."})
    assert paused.value.payload["candidate"] == "draft two"
    assert "[human] (score 0.40) Say two." in reviser_prompt(model)

    progress: list[str] = []
    result = await redline.arefine(task, **run, resume=10,
                                   on_progress=lambda p: progress.append(p.node))
    assert (result.stop_reason, result.text, result.best.score) == (
        StopReason.threshold, "draft two", 1.0)
    assert [r.scored[0].score for r in result.rounds] == [0.4, 1.0]
    assert progress == ["critique", "decide", "finalize"]
    # Finished: the stored result comes back; an answer now has nothing to resume.
    assert await redline.arefine(task, **run) == result
    with pytest.raises(ConfigError, match="is not paused for human input"):
        await redline.arefine(task, **run, resume=10)


# -- direct mode: ask= -------------------------------------------------------------------


async def test_a_sync_ask_runs_in_a_worker_thread() -> None:
    seen: list[tuple[str, str, bool]] = []

    def ask(task: Task, candidate: Candidate) -> dict:
        seen.append((task.prompt, candidate.text,
                     threading.current_thread() is threading.main_thread()))
        return {"score": 10 if "two" in candidate.text else 2, "feedback": "Say two."}

    model = ScriptedChat(["draft one", "draft two"])
    result = await redline.arefine("Q", model=model, critics=[HumanCritic(ask=ask)])
    assert seen == [("Q", "draft one", False), ("Q", "draft two", False)]
    assert "[human] (score 0.20) Say two." in reviser_prompt(model)
    assert (result.stop_reason, result.text) == (StopReason.threshold, "draft two")


async def test_an_async_ask_and_a_bare_mark() -> None:
    marks = iter([5, 9.5])

    async def ask(task: Task, candidate: Candidate) -> float:
        await asyncio.sleep(0)
        return next(marks)

    result = await redline.arefine("Q", model=ScriptedChat(["a", "b"]),
                                   critics=[HumanCritic(ask=ask), lambda t: 1.0])
    assert [r.scored[0].score for r in result.rounds] == [0.75, 0.975]
    assert result.stop_reason is StopReason.threshold


async def test_an_ask_that_returns_nonsense_breaks_the_critic() -> None:
    result = await redline.arefine("Q", model=ScriptedChat(["a"]),
                                   critics=[HumanCritic(ask=lambda t, c: "great")])
    assert result.stop_reason is StopReason.error
    assert "critic 'human': the answer 'great' cannot be used" in result.error
    with pytest.raises(CriticError, match="the score 'great' is not a number"):
        await redline.arefine("Q", model=ScriptedChat(["a"]), on_error="raise",
                              critics=[HumanCritic(ask=lambda t, c: "great")])


async def test_people_answer_one_candidate_at_a_time() -> None:
    active: list[int] = []
    overlap: list[bool] = []

    async def ask(task: Task, candidate: Candidate) -> int:
        active.append(1)
        overlap.append(len(active) > 1)
        await asyncio.sleep(0.01)
        active.pop()
        return 5

    scored, _ = await Panel([HumanCritic(ask=ask)]).evaluate(
        Task(prompt="Q"), [Candidate(text=t) for t in ("a", "b", "c")])
    assert [s.score for s in scored] == [0.5, 0.5, 0.5] and overlap == [False] * 3


# -- the CLI: --critic human on a terminal -------------------------------------------------

MODEL_ENV = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "REDLINE_MODEL", "REDLINE_MODEL_PATH")
ENV = {k: v for k, v in os.environ.items() if k not in MODEL_ENV} | {"COLUMNS": "400"}


def test_the_plugin_is_registered_and_takes_no_argument() -> None:
    plugins, _ = discover()
    assert plugins["human"].description() == (
        "A person at the terminal marks each candidate 0-10 and says what to change.")
    made = build_critic("human")
    assert isinstance(made, HumanCritic) and not made.pauses
    with pytest.raises(ConfigError, match="critic 'human' takes no argument"):
        build_critic("human:5")


class Pty:
    """A child process whose stdin and stderr are a pseudo-terminal we type into."""

    def __init__(self, args: list[str]) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen([sys.executable, "-m", "redline", *args], stdin=slave,
                                     stdout=subprocess.PIPE, stderr=slave, env=ENV,
                                     start_new_session=True)
        os.close(slave)
        self.seen = ""

    def expect(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} on the terminal; it shows:\n{self.seen[-2000:]}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # the child closed the terminal
                    chunk = b""
                assert chunk, f"terminal closed before {text!r}:\n{self.seen[-2000:]}"
                self.seen += chunk.decode("utf-8", "replace")
        self.seen = self.seen[self.seen.index(text) + len(text):]

    def drain(self, seconds: float) -> str:
        """What the terminal shows over the next `seconds` (added to what is unread)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                self.seen += os.read(self.master, 4096).decode("utf-8", "replace")
        return self.seen

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)


def drafts_then_revisions(*replies: str) -> Any:
    queue = list(replies)
    return lambda request: queue.pop(0)


def test_cli_asks_on_the_terminal_and_the_feedback_reaches_the_reviser() -> None:
    with OpenAICompatServer(handler=drafts_then_revisions("first", "second")) as server:
        term = Pty(["refine", "Say something", "--critic", "human", "--base-url",
                    server.base_url, "--max-rounds", "2"])
        try:
            term.expect("Say something")
            term.expect("first")
            term.expect("mark 0-10: ")
            # The progress spinner is stopped while the person answers: nothing redraws
            # the prompt's line.
            shown = term.drain(0.6)
            assert "\x1b[2K" not in shown and "critiquing" not in shown, shown
            term.type("great")  # not a mark: asked again
            term.expect("'great' is not a mark: type a number from 0 to 10")
            term.expect("mark 0-10: ")
            term.type("11")
            term.expect("mark 0-10: ")
            term.type("4")
            term.expect("feedback (one line, Enter for none): ")
            term.type("Say second instead.")
            term.expect("second")
            term.expect("mark 0-10: ")
            term.type("10")
            term.expect("feedback (one line, Enter for none): ")
            term.type("")
            stdout, _ = term.proc.communicate(timeout=60)
        finally:
            term.close()
        assert term.proc.returncode == 0, term.seen
        assert stdout == b"second\n"
        draft, revise = server.requests
        assert "Say second instead." in revise["messages"][-1]["content"]
        assert "[human] (score 0.40)" in revise["messages"][-1]["content"]


def test_cli_end_of_input_at_the_prompt_stops_the_run_clearly() -> None:
    with OpenAICompatServer(handler=drafts_then_revisions("first")) as server:
        term = Pty(["refine", "Say something", "--critic", "human", "--base-url",
                    server.base_url])
        try:
            term.expect("mark 0-10: ")
            os.write(term.master, b"\x04")  # Ctrl-D at an empty line: end of input
            stdout, _ = term.proc.communicate(timeout=60)
            term.expect("the terminal closed (end of input) before the person answered")
        finally:
            term.close()
        assert term.proc.returncode == 3  # a critic broke: the best so far is written
        assert stdout == b"first\n"


def test_cli_ctrl_c_at_the_prompt_does_not_wait_for_the_person() -> None:
    with OpenAICompatServer(handler=drafts_then_revisions("first")) as server:
        term = Pty(["refine", "Say something", "--critic", "human", "--base-url",
                    server.base_url])
        try:
            term.expect("mark 0-10: ")
            term.proc.send_signal(signal.SIGINT)
            term.proc.communicate(timeout=30)  # no answer typed: must not hang
        finally:
            term.close()
        assert term.proc.returncode == 130


def test_cli_without_a_terminal_exits_2_before_any_token() -> None:
    with OpenAICompatServer(handler=drafts_then_revisions("first")) as server:
        # A new session has no controlling terminal: no /dev/tty either.
        proc = subprocess.run([sys.executable, "-m", "redline", "refine", "Say something",
                               "--critic", "human", "--base-url", server.base_url],
                              stdin=subprocess.DEVNULL, capture_output=True, env=ENV,
                              start_new_session=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.decode().strip().endswith(
            "--critic human needs a terminal: standard input is not one and /dev/tty "
            "cannot be opened (run redline interactively, or use another critic)")
        assert proc.stdout == b"" and server.requests == []


async def test_a_terminal_guard_wraps_each_dialog(monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib
    import io

    from redline.critics import human

    shown = io.StringIO()
    events: list[str] = []

    @contextlib.contextmanager
    def fake_terminal(name: str) -> Any:
        events.append("dialog")
        yield io.StringIO("x\n7\nTighten it.\n"), shown

    @contextlib.contextmanager
    def paused() -> Any:
        events.append("pause")
        yield
        events.append("resume")

    monkeypatch.setattr(human, "_terminal", fake_terminal)
    ask = build_critic("human")
    with human.terminal_guard(paused):
        made = await ask.critique(Task(prompt="Q"), Candidate(text="the answer"))
    assert events == ["pause", "dialog", "resume"]
    assert (made.score, made.raw, made.feedback) == (0.7, 7.0, "Tighten it.")
    assert "the answer" in shown.getvalue() and "'x' is not a mark" in shown.getvalue()


async def test_any_critic_may_pause_the_graph_with_langgraphs_interrupt() -> None:
    """Not only HumanCritic: a plugin's own critic calling interrupt() pauses the run
    (redline's error handling lets LangGraph's pause through) and resumes with the value."""
    from langgraph.types import interrupt

    @critic(name="approval")
    def approval(text: str) -> float:
        return 1.0 if interrupt({"approve": text}) == "yes" else 0.0

    graph = build_refine_graph(ScriptedChat(["draft"]), [approval],
                               checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "approval"}}
    paused = await graph.ainvoke({"task": Task(prompt="Q")}, config)
    assert paused["__interrupt__"][0].value == {"approve": "draft"}
    assert "result" not in paused
    done = await graph.ainvoke(Command(resume="yes"), config)
    assert done["result"].stop_reason is StopReason.threshold
