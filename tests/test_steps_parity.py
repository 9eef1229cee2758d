"""`Runner.run` walks the loop's nodes directly when nothing needs LangGraph (no
checkpointer); the compiled graph runs the same nodes through LangGraph. Both must give
the same run: same candidates, scores, stop, usage and trace, same progress events."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from conftest import answers, score_table
from langgraph.checkpoint.memory import InMemorySaver

import redline
from redline import Budget, StopReason, Task
from redline.errors import LLMError
from redline.testing import ScriptedChat
from redline.workflows import Runner, build_refine_graph
from redline.workflows.config import RefineConfig
from redline.workflows.presets import best_of_n, reflexion

VERDICT = '{"score": %d, "feedback": "%s"}'


def _threshold(m: ScriptedChat) -> RefineConfig:
    return RefineConfig(model=m, critics=[score_table(a=0.2, b=0.5, c=0.95)])


def _converged(m: ScriptedChat) -> RefineConfig:
    return RefineConfig(model=m, critics=[score_table(a=0.2)])


def _max_rounds(m: ScriptedChat) -> RefineConfig:
    return RefineConfig(model=m, critics=[score_table(a=0.1, b=0.2, c=0.3, d=0.4)],
                        budget=Budget(max_rounds=2), patience=5)


def _max_tokens(m: ScriptedChat) -> RefineConfig:
    return RefineConfig(model=m, critics=[score_table(a=0.1, b=0.2, c=0.3, d=0.4)],
                        budget=Budget(max_tokens=40), patience=5)


def _error(m: ScriptedChat) -> RefineConfig:
    return RefineConfig(model=m, critics=[score_table(a=0.2)])


def _reflexion(m: ScriptedChat) -> RefineConfig:
    return reflexion(m, score_table(a=0.2, b=0.5, c=1.0))


def _vote(m: ScriptedChat) -> RefineConfig:
    return best_of_n(m, score_table(**{"Answer: 4": 0.4, "Answer: 5": 0.6}), n=3,
                     select="vote")


def _judge(m: ScriptedChat) -> RefineConfig:
    return RefineConfig(model=m)  # the default LLM judge


SCENARIOS: dict[str, tuple[Callable[[ScriptedChat], RefineConfig], Callable[[], ScriptedChat]]] = {
    "threshold": (_threshold, lambda: answers("a", "b", "c")),
    "converged": (_converged, lambda: answers("a", "a")),
    "max_rounds": (_max_rounds, lambda: answers("a", "b", "c", "d")),
    "max_tokens": (_max_tokens, lambda: answers("a", "b", "c", "d")),
    "error": (_error, lambda: ScriptedChat(["a", LLMError("the server went away")])),
    "reflexion": (_reflexion, lambda: ScriptedChat(["a", "the loop was wrong", "b",
                                                    "off by one", "c"])),
    "vote": (_vote, lambda: ScriptedChat(["Answer: 4", "Answer: 5", "Answer: 4"])),
    "judge": (_judge, lambda: answers("a draft", "a better draft", judge=[
        VERDICT % (4, "Name an example."), VERDICT % (9, "")])),
}


def comparable(value: Any) -> Any:
    """A result's JSON with wall-clock figures (which differ between two runs) zeroed."""
    if isinstance(value, dict):
        return {k: 0.0 if k == "seconds" else comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def prompts(model: ScriptedChat) -> list[str]:
    return [re.sub(r"-[0-9a-f]{8,}", "-MARK", str(c["messages"])) for c in model.calls]


async def _via_langgraph(cfg: RefineConfig, task: Task) -> redline.RefineResult:
    graph = build_refine_graph(cfg)
    state = await graph.ainvoke({"task": task}, {"recursion_limit": cfg.recursion_limit})
    return state["result"]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_the_direct_walk_and_langgraph_give_the_same_run(scenario: str) -> None:
    make_config, make_model = SCENARIOS[scenario]
    task = Task(prompt="Write the answer.", id=f"parity-{scenario}")
    direct_model, graph_model = make_model(), make_model()
    direct = await Runner(make_config(direct_model)).run(task)
    through_graph = await _via_langgraph(make_config(graph_model), task)
    assert comparable(direct.model_dump(mode="json")) == \
        comparable(through_graph.model_dump(mode="json"))
    # The same calls with the same prompts, in the same order (the judge's fence
    # markers are random).
    assert prompts(direct_model) == prompts(graph_model)
    assert direct.rounds, "the scenario made no round"


def test_the_scenarios_cover_every_way_a_run_ends() -> None:
    reasons = set()
    for make_config, make_model in SCENARIOS.values():
        result = redline.refine(Task(prompt="Q"), make_config(make_model()))
        reasons.add(result.stop_reason)
    assert reasons >= {StopReason.threshold, StopReason.converged, StopReason.budget,
                       StopReason.error, StopReason.sampled}


@pytest.mark.parametrize("scenario", ["threshold", "reflexion", "error"])
async def test_progress_is_the_same_walked_directly_and_streamed_by_langgraph(
        scenario: str) -> None:
    make_config, make_model = SCENARIOS[scenario]
    task = Task(prompt="Write the answer.", id=f"progress-{scenario}")
    seen: dict[str, list[Any]] = {"direct": [], "graph": []}
    # A checkpointer makes `Runner.run` stream the compiled graph; without one it walks
    # the nodes itself.
    await Runner(make_config(make_model())).run(
        task, on_progress=lambda p: seen["direct"].append(p))
    await Runner(make_config(make_model()), checkpointer=InMemorySaver()).run(
        task, on_progress=lambda p: seen["graph"].append(p))

    def events(progress: list[Any]) -> list[Any]:
        return [comparable(p.model_dump(mode="json")) for p in progress]
    assert [p.node for p in seen["direct"]][:2] == ["generate", "critique"]
    assert seen["direct"][-1].node == "finalize"
    assert events(seen["direct"]) == events(seen["graph"])


async def test_the_direct_walk_stops_at_the_recursion_limit_like_langgraph() -> None:
    from langgraph.errors import GraphRecursionError

    from redline.workflows.graph import build_steps

    steps = build_steps(_converged(answers("a", "b", "c")))
    with pytest.raises(GraphRecursionError):
        await steps.run({"task": Task(prompt="Q")}, recursion_limit=2)


async def test_a_run_inside_a_callers_langgraph_node_streams_its_steps_to_the_caller() -> None:
    """Called from a node of the user's own graph, `arefine` runs on LangGraph, so the
    caller's ``astream(subgraphs=True)`` and callbacks see its steps."""
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    class App(TypedDict, total=False):
        question: str
        answer: str

    async def ask(state: App) -> App:
        result = await redline.arefine(state["question"], _threshold(answers("a", "b", "c")))
        return {"answer": result.text}

    app = StateGraph(App)
    app.add_node("ask", ask)
    app.add_edge(START, "ask")
    app.add_edge("ask", END)
    inner: list[str] = []
    async for namespace, chunk in app.compile().astream(
            {"question": "Q?"}, stream_mode="updates", subgraphs=True):
        if namespace:  # an update from inside the node: redline's graph
            inner.extend(chunk)
        else:
            final = chunk
    assert final == {"ask": {"answer": "c"}}
    assert inner[:3] == ["generate", "critique", "decide"] and inner[-1] == "finalize"


def test_langsmith_tracing_or_a_parent_runnable_sends_runs_to_langgraph() -> None:
    from langchain_core.runnables import RunnableLambda
    from langsmith.run_helpers import tracing_context

    from redline.workflows._run import _observed

    assert not _observed()
    with tracing_context(enabled=True):
        assert _observed()
    assert RunnableLambda(lambda _: _observed()).invoke(None) is True


async def test_without_observers_the_run_compiles_no_graph() -> None:
    runner = Runner(_threshold(answers("a", "b", "c")))
    await runner.run(Task(prompt="Q"))
    assert runner._graph is None  # walked directly: LangGraph was not needed
