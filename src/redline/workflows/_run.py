"""`arefine` and `refine`: run the refine graph on one task and return its result."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from pydantic import BaseModel, ConfigDict

from redline._aio import run_sync
from redline.critics.human import PAYLOAD_KIND, HumanCritic, read_verdict
from redline.errors import ConfigError, HumanInputNeeded, RedlineError
from redline.llm import ChatModel
from redline.types import RefineResult, ScoredCandidate, StopReason, Task, Usage
from redline.workflows._state import RefineState, best_of, scored_history
from redline.workflows.config import RefineConfig
from redline.workflows.graph import (
    RunClock,
    build_refine_graph,
    build_steps,
    result_from_state,
)

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langgraph.graph.state import CompiledStateGraph

__all__ = ["Progress", "Runner", "arefine", "interrupted_result", "preflight_run", "refine",
           "resolve_default"]

log = logging.getLogger("redline.workflows")

T = TypeVar("T")


class Progress(BaseModel):
    """A step of a run, as reported to ``on_progress`` while it runs."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    node: Literal["generate", "critique", "decide", "reflect", "revise", "finalize"]
    """The graph node that just finished."""
    round: int
    """The current round (0: drafts)."""
    scored: list[ScoredCandidate]
    """Candidates scored by this step (``critique`` steps only)."""
    best_score: float | None
    """The best score so far."""
    usage: Usage
    """What the run has spent so far."""
    stop_reason: StopReason | None = None
    """Set once the loop decided to stop."""
    stop_detail: str = ""
    """A sentence on the stop."""
    result: RefineResult | None = None
    """The run as it stands after this step: the best so far and the trace (what an
    interrupted run keeps; its ``stop_reason`` is only final after ``finalize``)."""


ProgressCallback = Callable[[Progress], Any]



async def arefine(
    task: str | Task,
    config: RefineConfig | None = None,
    *,
    checkpointer: Any = None,
    on_progress: ProgressCallback | None = None,
    resume: Any = None,
    **fields: Any,
) -> RefineResult:
    """Draft, critique and revise until the threshold or the budget; return the best.

    The run is configured by a `RefineConfig`, or by its fields as keywords (validated
    the same way), or both (the keywords change the config's fields):

    ```python
    await arefine("Q", model=model, critics=[judge], threshold=0.8)
    await arefine("Q", config, budget=Budget(max_rounds=1))
    ```

    Args:
        task: the prompt, or a `Task` (with a draft to improve, a system prompt, ...).
        config: the run's configuration.
        checkpointer: a LangGraph checkpointer; a run interrupted with the same task id
            resumes where it stopped, and a finished one returns its stored result. A
            task whose stored result is an error is retried from the step that failed.
        on_progress: called (sync or async) after each step with a `Progress`.
        resume: the answer to the pause of a run that raised `HumanInputNeeded` (a
            `HumanCritic` in graph mode): a mark, or ``{"score": ..., "feedback":
            ...}``; the run continues from the pause (same task and checkpointer).
        **fields: `RefineConfig` fields: ``model`` (a `ChatModel`, a model string such
            as ``"openai:gpt-4o-mini"``, ``"ollama:qwen2.5"`` or ``"local"``, a
            LangChain chat model, or None for the CLI's default: the configured
            environment, else the embedded model), ``critics`` (an `LLMJudge` when
            None), ``threshold`` (0.9), ``budget``, ``n`` (1), ``temperature``,
            ``seed``, ``revise`` ("rewrite" | "edit"), ``revise_when`` ("always" |
            "on_failure"), ``revise_from`` ("best" | "last"), ``patience`` (2),
            ``on_error`` ("result": a critic or model that breaks mid-run ends the run
            with ``stop_reason="error"`` and the best so far; "raise": it propagates;
            a rejected key or unknown model, HTTP 401/403/404, always raises),
            ``preflight`` (True: check the model and every critic before any token),
            ``generator``, ``reviser``.

    Raises:
        ConfigError: a bad field, or a preflight found a critic or the model unable to
            work (before any token was spent); a graph-mode `HumanCritic` without a
            checkpointer; ``resume=`` for a run that is not paused.
        HumanInputNeeded: the run paused for a person's mark; it carries what to show
            them (``payload``), and ``resume=`` continues the run.
        CriticError: ``resume=`` is not an answer the paused critic can read (the run
            stays paused); or a critic broke, with ``on_error="raise"``.
        LLMError: the model broke, with ``on_error="raise"``.
    """
    task = task if isinstance(task, Task) else Task(prompt=task)
    if "model" in fields and not isinstance(fields["model"], ChatModel):
        fields["model"] = resolve_default(fields["model"])
    if config is None:
        fields.setdefault("model", None)
        if fields["model"] is None:
            fields["model"] = resolve_default(None)
        cfg = RefineConfig(**fields)
    else:
        cfg = config.replace(**fields) if fields else config
    return await Runner(cfg, checkpointer=checkpointer).run(
        task, on_progress=on_progress, resume=resume)


class Runner:
    """Runs tasks with one configuration: the preflight done once, the graph compiled
    once, then any number of tasks, concurrently if you like (`abatch` does).

    `arefine` is ``Runner(config, checkpointer=...).run(task)``; keep a runner to refine
    many tasks without paying for the preflight and the graph's compilation each time.

    Args:
        config: the runs' configuration.
        checkpointer: a LangGraph checkpointer (the thread id of a run is its task id).

    Raises:
        ConfigError: a graph-mode `HumanCritic` without a checkpointer.
    """

    def __init__(self, config: RefineConfig, *, checkpointer: Any = None) -> None:
        self.config = config
        self.checkpointer = checkpointer
        if checkpointer is None:
            _check_no_pause(config, None)
        self._graph: CompiledStateGraph | None = None
        self._steps = build_steps(config)
        self._checked: asyncio.Task[None] | None = None

    @property
    def graph(self) -> CompiledStateGraph:
        """The compiled LangGraph graph of the runs (compiled on first use, once: runs
        with a checkpointer use it; runs without one walk the same nodes directly)."""
        if self._graph is None:
            self._graph = build_refine_graph(self.config, checkpointer=self.checkpointer)
        return self._graph

    async def preflight(self) -> None:
        """Check the model and every critic, once for the runner's life (when the
        config asks for it); concurrent callers wait for the one check.

        Raises:
            ConfigError: the first thing that cannot work.
        """
        checked = self._checked
        if not self.config.preflight or (checked is not None and checked.done() and
                                         not checked.cancelled() and
                                         checked.exception() is None):
            return
        if checked is None or checked.done():  # first use, or the last check failed
            checked = self._checked = asyncio.ensure_future(preflight_run(self.config))
        await asyncio.shield(checked)

    async def run(self, task: str | Task, *, on_progress: ProgressCallback | None = None,
                  resume: Any = None) -> RefineResult:
        """Refine one task (see `arefine` for `on_progress`, `resume` and what it
        raises)."""
        task = task if isinstance(task, Task) else Task(prompt=task)
        cfg, checkpointer = self.config, self.checkpointer
        if checkpointer is None and resume is not None:
            _check_no_pause(cfg, resume)
        await self.preflight()
        run_config: RunnableConfig = {"recursion_limit": cfg.recursion_limit}
        if checkpointer is not None:
            # Only a checkpointer needs a thread: inside a caller's graph, a thread id
            # of its own would detach the run from the caller's stream of subgraph steps.
            run_config["configurable"] = {"thread_id": task.id}
        graph_input: Any = {"task": task}
        elapsed_before = 0.0
        graph: Any = None
        if checkpointer is not None:
            graph = self.graph
            snapshot = await graph.aget_state(run_config)
            paused = _pauses(snapshot)
            if paused and resume is None:
                raise _human_input_needed(task, paused)
            if resume is not None:
                if not paused:
                    raise ConfigError(f"resume= was given, but run {task.id!r} is not paused "
                                      "for human input")
                _check_answer(paused[0], resume)
                from langgraph.types import Command

                graph_input = Command(resume=resume)
            stored = snapshot.values.get("result")
            if stored is not None and not snapshot.next:
                if stored.stop_reason is not StopReason.error:
                    return stored
                # A run that ended on an error is tried again from before the failed step.
                snapshot = await _before_the_error(graph, run_config) or snapshot
                if snapshot.next:
                    run_config = cast("RunnableConfig", dict(snapshot.config))
            if snapshot.next:
                if resume is None:
                    graph_input = None  # resume the interrupted run from its last checkpoint
                elapsed_before = snapshot.values.get("elapsed") or 0.0
        state: dict[str, Any] = {}
        pauses: list[Any] = []
        step: tuple[str, dict[str, Any]] | None = None
        # The clock starts with the first step: after imports, model start-up, preflight.
        with RunClock(elapsed_before).active() as clock:
            try:
                if checkpointer is None and not _observed():
                    # Nothing to save, nothing can pause, nothing watches LangGraph's
                    # steps: the same nodes, walked directly. LangGraph's per-step
                    # machinery (task preparation, channels, callbacks) was ~60% of the
                    # loop's CPU and bought nothing here (bench/batch_overhead.py).
                    async def walked(node: str, delta: dict[str, Any],
                                     after: dict[str, Any]) -> None:
                        nonlocal state
                        # A step that wrote nothing is not reported (as LangGraph, which
                        # streams no values for it).
                        if on_progress is not None and delta:
                            outcome = on_progress(_progress(node, delta, before=state,
                                                            after=after,
                                                            threshold=cfg.threshold))
                            if asyncio.iscoroutine(outcome):
                                await outcome
                        state = after

                    state = await self._steps.run(
                        {"task": task}, recursion_limit=cfg.recursion_limit,
                        on_step=walked)
                    return cast("RefineResult", state["result"])
                graph = self.graph
                if on_progress is None and checkpointer is None:
                    state = await graph.ainvoke(graph_input, run_config)
                    return cast("RefineResult", state["result"])
                # "sync": a step's checkpoint is saved before the next step starts, so a
                # process killed at any moment resumes after its last finished step.
                async for item in graph.astream(graph_input, run_config,
                                                stream_mode=["updates", "values"],
                                                durability="sync" if checkpointer else None):
                    # With a list of modes, each item is (mode, chunk): langgraph's types
                    # cannot say so.
                    mode, chunk = cast("tuple[str, dict[str, Any]]", item)
                    if mode == "updates":
                        if "__interrupt__" in chunk:  # a critic paused for a person
                            pauses.extend(chunk["__interrupt__"])
                            continue
                        node, delta = next(iter(chunk.items()))
                        step = (node, delta or {})
                        continue
                    if step is not None and on_progress is not None:
                        outcome = on_progress(_progress(*step, before=state, after=chunk,
                                                        threshold=cfg.threshold))
                        if asyncio.iscoroutine(outcome):
                            await outcome
                    state, step = chunk, None
            except asyncio.CancelledError:
                if state.get("task") is not None:
                    log.info("run %s interrupted after %.1f s", task.id, clock.elapsed())
                raise
        if pauses:
            raise _human_input_needed(task, pauses)
        return state["result"]



def _observed() -> bool:
    """Whether LangChain tooling watches this run, so it must run on the LangGraph graph:
    LangSmith tracing is on, or the run is called from inside a runnable (a node of the
    caller's LangGraph graph), whose callbacks and streams (``astream(subgraphs=True)``)
    expect the graph's steps."""
    from langchain_core.runnables.config import var_child_runnable_config

    if var_child_runnable_config.get() is not None:
        return True
    from langsmith.utils import tracing_is_enabled

    return bool(tracing_is_enabled())


def _check_no_pause(cfg: RefineConfig, resume: Any) -> None:
    """Without a checkpointer a pause could never be resumed: refuse before any token."""
    if resume is not None:
        raise ConfigError("resume= needs the checkpointer that keeps the paused run "
                          "(checkpointer=...)")
    for name, critic in zip(cfg.panel.names, cfg.panel.critics, strict=True):
        if isinstance(critic, HumanCritic) and critic.pauses:
            raise ConfigError(f"critic {name!r}: a HumanCritic needs a checkpointer in graph "
                              "mode (arefine(..., checkpointer=InMemorySaver())), or pass "
                              "ask=... to ask the person directly")


def _pauses(snapshot: Any) -> list[Any]:
    """The pending interrupts of a run's latest checkpoint (LangGraph `Interrupt`s)."""
    return [i for t in snapshot.tasks for i in t.interrupts]


def _check_answer(pause: Any, resume: Any) -> None:
    """Check ``resume=`` before the run continues: a `HumanCritic`'s pause would only
    ask again, and the caller is here to hear what was wrong."""
    payload = pause.value
    if isinstance(payload, dict) and payload.get("kind") == PAYLOAD_KIND:
        read_verdict(resume, critic=payload["critic"], scale=payload["scale"])


def _human_input_needed(task: Task, pauses: list[Any]) -> HumanInputNeeded:
    pause = pauses[0]
    payload = pause.value
    ours = isinstance(payload, dict) and payload.get("kind") == PAYLOAD_KIND
    if ours:
        what = (f"critic {payload['critic']!r} waits for a mark (0-{payload['scale']:g}) of "
                f"candidate {payload['candidate_id'][:8]}")
    else:
        what = f"the graph waits for input: {payload!r:.80}"
    rejected = payload.get("error") if ours else None
    return HumanInputNeeded(
        f"run {task.id!r} is paused for human input: {what}"
        + (f" (the last answer was rejected: {rejected})" if rejected else "")
        + "; continue it with arefine(exc.task, config, checkpointer=<the same>, "
          "resume={'score': ..., 'feedback': '...'})",
        task=task, payload=payload, interrupt_id=getattr(pause, "id", None))


async def _before_the_error(graph: Any, config: RunnableConfig) -> Any:
    """The newest checkpoint of a run with no stop decided yet and a step to run next."""
    async for snapshot in graph.aget_state_history(config):
        if snapshot.next and snapshot.values.get("stop") is None \
                and snapshot.values.get("task") is not None:
            return snapshot
    return None


def interrupted_result(progress: Progress | None, task: Task, threshold: float) -> RefineResult:
    """The result to keep when a run is interrupted: the last `Progress`'s result marked
    ``interrupted`` (an empty one when the run had not made a step yet)."""
    if progress is not None and progress.result is not None:
        return progress.result.model_copy(update={
            "stop_reason": StopReason.interrupted, "stop_detail": "interrupted",
            "budget_limit": None, "error": None})
    return RefineResult(task=task, best=None, final=None, rounds=[], threshold=threshold,
                        usage=Usage(), stop_reason=StopReason.interrupted,
                        stop_detail="interrupted")


async def preflight_run(cfg: RefineConfig) -> None:
    """Check the model (and the reviser's, when another) and every critic before a token
    is spent.

    Raises:
        ConfigError: one line on the first thing that cannot work.
    """
    models = {id(m): m for m in (cfg.model, cfg.fixer.model)}
    # All checked at once, but the failure reported does not depend on which check
    # ends first: the critics' (a missing compiler), then the models'.
    checks = [cfg.panel.preflight(), *(m.preflight() for m in models.values())]
    for outcome in await asyncio.gather(*checks, return_exceptions=True):
        if isinstance(outcome, ConfigError):
            raise outcome
        if isinstance(outcome, RedlineError):
            raise ConfigError(str(outcome)) from outcome
        if isinstance(outcome, BaseException):
            raise outcome


_DEFAULT_MODELS: dict[str, ChatModel] = {}
_MODEL_ENV = ("REDLINE_MODEL", "REDLINE_MODEL_PATH", "OPENAI_BASE_URL", "OPENAI_API_KEY",
              "OLLAMA_HOST")


def resolve_default(spec: Any) -> ChatModel:
    """The chat model for a `model=` that is not a `ChatModel` instance.

    Models built here from the environment or a string are kept for the process (the
    embedded model's server starts once, not once per `refine`).
    """
    from redline.llm import resolve_model

    if spec is not None and not isinstance(spec, str):
        return resolve_model(spec)
    # Keyed by what selects the model, so a changed environment builds a new one.
    key = "\0".join([spec or "", *(os.environ.get(v, "") for v in _MODEL_ENV)])
    if key not in _DEFAULT_MODELS:
        _DEFAULT_MODELS[key] = resolve_model(spec)
    return _DEFAULT_MODELS[key]


def _progress(node: str, delta: dict[str, Any], *, before: dict[str, Any],
              after: dict[str, Any], threshold: float) -> Progress:
    rounds = after.get("rounds") or []
    best = best_of(scored_history(rounds))
    scored: list[ScoredCandidate] = []
    if node == "critique" and delta.get("rounds"):
        current = delta["rounds"][-1]
        earlier = {r.index: len(r.scored) for r in before.get("rounds") or []}
        scored = current.scored[earlier.get(current.index, 0):]
    stop = after.get("stop")
    return Progress(node=node, round=rounds[-1].index if rounds else 0,  # type: ignore[arg-type]
                    scored=scored, best_score=best.score if best else None,
                    usage=after.get("usage") or Usage(),
                    stop_reason=stop.reason if stop else None,
                    stop_detail=stop.detail if stop else "",
                    result=after.get("result") or (
                        result_from_state(cast(RefineState, after), threshold)
                        if after.get("task") else None))


def blocking(coroutine: Coroutine[Any, Any, T], name: str, async_name: str) -> T:
    """Run `coroutine` to completion from synchronous code (``asyncio.run``).

    Raises:
        ConfigError: called inside a running event loop (say to await `async_name`).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    coroutine.close()
    raise ConfigError(f"{name}() cannot run inside a running event loop: use "
                      f"`await {async_name}(...)`")


def refine(task: str | Task, config: RefineConfig | None = None, **kwargs: Any
           ) -> RefineResult:
    """Run `arefine` to completion from synchronous code; same arguments
    (``refine(task, self_debug(model))``, ``refine(task, model=m, critics=[...])``).

    It runs on an event loop kept for the calling thread (`redline._aio.run_sync`), so
    the model's connections serve one `refine` after another.

    Raises:
        ConfigError: when called inside a running event loop (use ``await arefine``).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run_sync(arefine(task, config, **kwargs))
    raise ConfigError("refine() cannot run inside a running event loop (Jupyter, an async "
                      "app): use `await redline.arefine(...)` instead")
