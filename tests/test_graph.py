"""The graph's shape, its use as a subgraph, and resuming from a checkpoint."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypedDict

import pytest
from langgraph.graph import END, START, StateGraph

import redline
from redline import Task
from redline.errors import LLMError
from redline.testing import ScriptedChat
from redline.workflows import build_refine_graph

SNAPSHOT = Path(__file__).parent / "snapshots" / "refine_graph.mmd"


def test_graph_shape_matches_the_snapshot() -> None:
    graph = build_refine_graph(ScriptedChat([]), [lambda t: 1.0])
    drawn = graph.get_graph().draw_mermaid()
    if os.environ.get("REDLINE_UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(drawn)
    assert drawn == SNAPSHOT.read_text(), (
        "graph shape changed: rerun with REDLINE_UPDATE_SNAPSHOTS=1")
    assert "decide -.-> finalize" in drawn and "decide -.-> revise" in drawn


async def test_the_compiled_graph_works_as_a_subgraph() -> None:
    class App(TypedDict, total=False):
        question: str
        answer: str
        task: Task
        result: redline.RefineResult

    refine_graph = build_refine_graph(ScriptedChat(["draft", "final"]),
                                      [lambda t: 1.0 if t == "final" else 0.3])
    app = StateGraph(App)
    app.add_node("ask", lambda s: {"task": Task(prompt=s["question"])})
    app.add_node("refine", refine_graph)
    app.add_node("answer", lambda s: {"answer": s["result"].text})
    app.add_edge(START, "ask")
    app.add_edge("ask", "refine")
    app.add_edge("refine", "answer")
    app.add_edge("answer", END)
    out = await app.compile().ainvoke({"question": "Q?"})
    assert out["answer"] == "final"
    assert out["result"].stop_reason is redline.StopReason.threshold


async def test_an_interrupted_run_resumes_without_repeating_round_one(tmp_path: Path) -> None:
    sqlite = pytest.importorskip("langgraph.checkpoint.sqlite.aio")
    scores = {"a": 0.2, "b": 0.5, "c": 1.0}
    critics = [lambda text: scores[text]]
    task = Task(prompt="Q", id="resume-me")
    db = str(tmp_path / "checkpoints.sqlite")

    crashing = ScriptedChat(["a", "b", LLMError("server went away")])
    async with sqlite.AsyncSqliteSaver.from_conn_string(db) as saver:
        with pytest.raises(LLMError, match="server went away"):
            await redline.arefine(task, model=crashing, critics=critics, checkpointer=saver,
                                  patience=5, on_error="raise")
    assert len(crashing.calls) == 3  # draft, revision 1, the failed revision 2

    fresh = ScriptedChat(["c"])
    async with sqlite.AsyncSqliteSaver.from_conn_string(db) as saver:
        result = await redline.arefine(task, model=fresh, critics=critics, checkpointer=saver,
                                       patience=5)
    assert len(fresh.calls) == 1  # only round 2's revision
    assert "b" in fresh.calls[0]["messages"][-1]["content"]
    assert [(r.index, [s.candidate.text for s in r.scored]) for r in result.rounds] == [
        (0, ["a"]), (1, ["b"]), (2, ["c"])]
    assert result.stop_reason is redline.StopReason.threshold
    # A node that raised wrote nothing to the checkpoint, so the failed call is not in
    # the resumed total: draft, revision 1, revision 2.
    assert result.usage.llm_calls == 3

    # A finished run asked again returns its stored result without any call.
    idle = ScriptedChat([])
    async with sqlite.AsyncSqliteSaver.from_conn_string(db) as saver:
        again = await redline.arefine(task, model=idle, critics=critics, checkpointer=saver)
    assert again == result and idle.calls == []


def test_resume_works_with_langgraphs_strict_deserialization(tmp_path: Path) -> None:
    """With LANGGRAPH_STRICT_MSGPACK=true only the graph's schema types may be restored
    (LangGraph's announced default): redline's state types must be among them."""
    pytest.importorskip("langgraph.checkpoint.sqlite.aio")
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import asyncio, redline
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
        from redline.errors import LLMError
        from redline.testing import ScriptedChat
        scores = {{"a": 0.2, "b": 1.0}}
        task = redline.Task(prompt="Q", id="strict")
        async def main():
            async with AsyncSqliteSaver.from_conn_string({str(tmp_path / 'c.sqlite')!r}) as s:
                first = await redline.arefine(task, model=ScriptedChat(["a", LLMError("x")]),
                                              critics=[lambda t: scores[t]], checkpointer=s)
                assert first.stop_reason.value == "error", first
            async with AsyncSqliteSaver.from_conn_string({str(tmp_path / 'c.sqlite')!r}) as s:
                r = await redline.arefine(task, model=ScriptedChat(["b"]),
                                          critics=[lambda t: scores[t]], checkpointer=s)
            print(r.stop_reason.value, [s.candidate.text for r_ in r.rounds for s in r_.scored])
        asyncio.run(main())
    """)
    env = {**os.environ, "LANGGRAPH_STRICT_MSGPACK": "true"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "threshold ['a', 'b']"
    assert "Blocked deserialization" not in out.stderr


async def test_a_run_that_ended_on_an_error_is_retried_from_the_failed_step(
        tmp_path: Path) -> None:
    sqlite = pytest.importorskip("langgraph.checkpoint.sqlite.aio")
    scores = {"a": 0.2, "b": 0.5, "c": 1.0}
    task = Task(prompt="Q", id="retry-me")
    db = str(tmp_path / "checkpoints.sqlite")
    async with sqlite.AsyncSqliteSaver.from_conn_string(db) as saver:
        broken = await redline.arefine(
            task, model=ScriptedChat(["a", "b", LLMError("server went away")]),
            critics=[lambda t: scores[t]], checkpointer=saver, patience=5)
    assert broken.stop_reason is redline.StopReason.error and broken.text == "b"
    fresh = ScriptedChat(["c"])
    async with sqlite.AsyncSqliteSaver.from_conn_string(db) as saver:
        result = await redline.arefine(task, model=fresh, critics=[lambda t: scores[t]],
                                       checkpointer=saver, patience=5)
    assert len(fresh.calls) == 1 and "b" in fresh.calls[0]["messages"][-1]["content"]
    assert result.stop_reason is redline.StopReason.threshold and result.text == "c"
    assert [(r.index, [s.candidate.text for s in r.scored]) for r in result.rounds] == [
        (0, ["a"]), (1, ["b"]), (2, ["c"])]


def test_resuming_prints_no_deserialization_warnings(tmp_path: Path) -> None:
    """LangGraph's default (permissive) serializer warns about every class it was not told
    about; redline registers its state types, so a resumed run is silent."""
    pytest.importorskip("langgraph.checkpoint.sqlite.aio")
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import asyncio, logging, redline
        logging.basicConfig(level=logging.WARNING)
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
        from redline.errors import LLMError
        from redline.testing import ScriptedChat
        scores = {{"a": 0.2, "b": 1.0}}
        task = redline.Task(prompt="Q", id="quiet", metadata={{"k": [1, 2]}})
        async def main():
            db = {str(tmp_path / 'q.sqlite')!r}
            async with AsyncSqliteSaver.from_conn_string(db) as s:
                try:
                    await redline.arefine(task, model=ScriptedChat(["a", LLMError("x")]),
                                          critics=[lambda t: scores[t]], checkpointer=s,
                                          on_error="raise")
                except LLMError:
                    pass
            async with AsyncSqliteSaver.from_conn_string(db) as s:
                r = await redline.arefine(task, model=ScriptedChat(["b"]),
                                          critics=[lambda t: scores[t]], checkpointer=s)
            print(r.stop_reason.value, r.task.metadata)
        asyncio.run(main())
    """)
    env = {k: v for k, v in os.environ.items() if k != "LANGGRAPH_STRICT_MSGPACK"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "threshold {'k': [1, 2]}"
    assert "Deserializing" not in out.stderr and "unregistered" not in out.stderr, out.stderr
