"""The refine loop as a LangGraph graph.

```
START → generate → critique → decide ─┬→ finalize → END
                      ↑               │
                      └─── revise ←───┘ (← reflect ←, with a reflector)
```
`build_refine_graph` closes over the loop's configuration and returns a compiled graph,
usable alone or as a subgraph, with any checkpointer. The ``reflect`` node exists only
when the configuration has a reflector (Reflexion, Self-Refine's feedback history).
`build_steps` gives the same nodes and edges as plain functions; `Runner` walks them
itself (`Steps.run`) when a run has no checkpointer.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, cast

from langgraph.errors import GraphBubbleUp
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from redline.context import Meter, RunScope
from redline.errors import BudgetExceeded, ConfigError, LLMError, RedlineError
from redline.llm import ChatModel
from redline.types import (
    Candidate,
    RefineResult,
    Round,
    ScoredCandidate,
    StopReason,
    Usage,
)
from redline.workflows._state import (
    REDUCERS,
    RefineState,
    Select,
    Stop,
    best_of,
    registered,
    scored_history,
    select_best,
)
from redline.workflows.config import CriticsArg, RefineConfig

__all__ = ["RunClock", "Steps", "build_refine_graph", "build_steps", "result_from_state"]

log = logging.getLogger("redline.workflows")

Update = dict[str, Any]


def build_refine_graph(config: RefineConfig | ChatModel, critics: CriticsArg = None, *,
                       checkpointer: Any = None, name: str = "refine",
                       **fields: Any) -> CompiledStateGraph:
    """Build the refine loop as a compiled LangGraph graph.

    Invoke it with ``{"task": Task(...)}``; the final state's ``result`` is the
    `RefineResult`. Pass ``config={"recursion_limit": cfg.recursion_limit}`` for long
    budgets (`arefine` does this for you).

    Args:
        config: the run's `RefineConfig`; or, in the keyword form, the chat model, with
            `critics` and any other `RefineConfig` field as keywords
            (``build_refine_graph(model, [critic], threshold=0.8)``).
        critics: the critics, in the keyword form only.
        checkpointer: any LangGraph checkpointer; the thread id is the task id.
        name: the graph's name.
        **fields: other `RefineConfig` fields, in the keyword form only.

    Raises:
        ConfigError: an invalid field, or fields given with a `RefineConfig`.
    """
    if isinstance(config, RefineConfig):
        if critics is not None or fields:
            raise ConfigError("build_refine_graph: give a RefineConfig or keyword fields, "
                              "not both (use config.replace(...) to change one)")
        cfg = config
    else:
        cfg = RefineConfig(model=config, critics=critics, **fields)
    if checkpointer is not None:
        checkpointer = registered(checkpointer)
    return _graph(cfg).compile(checkpointer=checkpointer, name=name)


Node = Callable[[RefineState], Awaitable[Update]]


@dataclass(frozen=True)
class Steps:
    """The loop's nodes and edges for one configuration: what `_graph` hands LangGraph
    and what `Steps.run` walks directly."""

    nodes: dict[str, Node]
    """Each node by name: an async function of the state returning its update."""
    after: dict[str, str]
    """The next node of each node with one way out (``decide`` routes)."""
    route: Callable[[RefineState], Awaitable[str]]
    """Where ``decide`` goes: ``finalize`` once a stop is set, else on to revise."""

    async def run(self, state: dict[str, Any], *, recursion_limit: int,
                  on_step: Callable[[str, Update, dict[str, Any]], Awaitable[None]] | None
                  = None) -> dict[str, Any]:
        """Run the loop from ``generate`` to ``finalize`` on `state` (``{"task": ...}``)
        and return the final state, with LangGraph's semantics for this graph (a node
        sees the state after the last node's update merged through the channels'
        reducers) and none of its per-step machinery: no checkpoint, no interrupt, no
        callbacks. `Runner.run` uses it for runs that need none of these; `on_step` gets
        each node's name, its update and the state after it.

        Raises:
            GraphRecursionError: more than `recursion_limit` steps (as LangGraph would).
        """
        node, steps = "generate", 0
        while True:
            steps += 1
            if steps > recursion_limit:
                from langgraph.errors import GraphRecursionError

                raise GraphRecursionError(f"Recursion limit of {recursion_limit} reached "
                                          "without hitting a stop condition")
            update = await self.nodes[node](cast(RefineState, state))
            state = _merged(state, update)
            if on_step is not None:
                await on_step(node, update, state)
            if node == "finalize":
                return state
            node = await self.route(cast(RefineState, state)) if node == "decide" \
                else self.after[node]


def _merged(state: dict[str, Any], update: Update) -> dict[str, Any]:
    """`state` with a node's `update` applied as LangGraph's channels apply it: through
    the key's reducer when it has one and a value already, else the new value."""
    out = dict(state)
    for key, value in update.items():
        reducer = REDUCERS.get(key)
        out[key] = reducer(out[key], value) if reducer is not None and key in out else value
    return out


def _graph(cfg: RefineConfig) -> StateGraph:
    steps = build_steps(cfg)
    g = StateGraph(RefineState)
    for name, node in steps.nodes.items():
        g.add_node(name, node)  # type: ignore[call-overload]
    g.add_edge(START, "generate")
    for name, after in steps.after.items():
        g.add_edge(name, after)
    g.add_conditional_edges("decide", steps.route,
                            ["reflect" if cfg.reflector else "revise", "finalize"])
    g.add_edge("finalize", END)
    return g


def build_steps(cfg: RefineConfig) -> Steps:
    """The loop's nodes and edges for `cfg`: what `build_refine_graph` compiles into a
    LangGraph graph, and what `Runner` walks itself when a run needs no checkpointer."""
    drafter, fixer = cfg.drafter, cfg.fixer
    async def generate(state: RefineState) -> Update:
        task = state["task"]
        if task.draft is not None:
            return {"pending": [Candidate(text=task.draft, origin="given")],
                    "rounds": [Round(index=0)]}

        async def make() -> list[Candidate]:
            return await drafter.generate(task, cfg.n)
        return await _metered(cfg, state, make, lambda c: {
            "pending": c or [], "rounds": [Round(index=0)]}, node="generate")

    async def critique(state: RefineState) -> Update:
        pending = state.get("pending") or []
        if not pending:
            return {}
        rounds = state["rounds"]
        current = rounds[-1]

        async def score() -> Any:
            return await cfg.panel.evaluate(state["task"], pending, state.get("cache"))

        def update(done: Any) -> Update:
            if done is None:
                return {}  # stopped or broken: keep the candidates, unscored, for the result
            scored, fresh = done
            made = sum((c.usage for c in pending), Usage())
            spent = sum((k.usage for k in fresh.values()), Usage())
            return {"pending": [], "cache": fresh,
                    "rounds": [current.model_copy(update={
                        "scored": [*current.scored, *scored], "usage": made + spent})]}
        return await _metered(cfg, state, score, update, node="critique")

    async def decide(state: RefineState) -> Update:
        return {"stop": state.get("stop") or _decide(cfg, state)}

    after_decide: Literal["reflect", "revise"] = "reflect" if cfg.reflector else "revise"

    # async: a sync router would be sent to a worker thread for every decision.
    async def route(state: RefineState) -> Literal["reflect", "revise", "finalize"]:
        return "finalize" if state.get("stop") else after_decide

    async def reflect(state: RefineState) -> Update:
        reflector = cfg.reflector
        assert reflector is not None  # the node exists only with one
        rounds = state["rounds"]
        current = rounds[-1]
        # The attempt reflected on is the round's best (a round has one candidate after
        # the drafts).
        attempt = best_of(current.scored)
        if attempt is None:
            return {}
        memory = list(state.get("memory") or [])

        async def write() -> str | None:
            return await reflector.reflect(state["task"], attempt, memory)

        def update(entry: str | None) -> Update:
            if not entry:
                return {}
            return {"memory": [*memory, entry][-reflector.memory:],
                    "rounds": [current.model_copy(update={"reflection": entry})]}
        return await _metered(cfg, state, write, update, node="reflect")

    async def revise(state: RefineState) -> Update:
        rounds = state["rounds"]
        history = scored_history(rounds)
        target = best_of(history) if cfg.revise_from == "best" else history[-1]
        assert target is not None  # decide stops when nothing was scored
        index = rounds[-1].index + 1

        async def make() -> Candidate:
            return await fixer.revise(state["task"], target, round=index,
                                            memory=state.get("memory") or [])
        return await _metered(cfg, state, make, lambda c: {
            "pending": [c], "rounds": [Round(index=index)]} if c else {}, node="revise")

    async def finalize(state: RefineState) -> Update:
        elapsed = _elapsed(state)
        done = cast(RefineState, {**state, "elapsed": elapsed})
        return {"result": result_from_state(done, cfg.threshold, select=cfg.select),
                "elapsed": elapsed - (state.get("elapsed") or 0.0)}

    nodes: dict[str, Node] = {"generate": generate, "critique": critique, "decide": decide,
                              "revise": revise}
    after = {"generate": "critique", "critique": "decide", "revise": "critique"}
    if cfg.reflector:
        nodes["reflect"] = reflect
        after["reflect"] = "revise"
    nodes["finalize"] = finalize
    return Steps(nodes=nodes, after=after, route=route)


@dataclass
class RunClock:
    """When the current run started, for `arefine` (set in a context variable).

    With a clock, a run's seconds are wall-clock time from the start of its first step
    (plus the seconds of earlier attempts when it resumes), gaps between nodes included;
    LangGraph's own set-up before the first step is not counted. Without one (the graph
    used directly as a subgraph) they are the nodes' own time.
    """

    before: float = 0.0
    """Seconds the run had used in earlier attempts (a resumed run)."""
    started: float | None = None
    """`time.monotonic()` when this attempt's first step started (None until then)."""

    def elapsed(self) -> float:
        """Seconds of the run so far (the clock starts on the first call)."""
        if self.started is None:
            self.started = time.monotonic()
        return self.before + time.monotonic() - self.started

    @contextmanager
    def active(self) -> Iterator[RunClock]:
        """Make this the clock of the run's nodes inside the block."""
        token = _clock.set(self)
        try:
            yield self
        finally:
            _clock.reset(token)


_clock: contextvars.ContextVar[RunClock | None] = contextvars.ContextVar(
    "redline_run_clock", default=None)


def _elapsed(state: RefineState, node_started: float | None = None) -> float:
    """The run's seconds so far: by the run's clock, else the nodes' own time."""
    clock = _clock.get()
    if clock is not None:
        return clock.elapsed()
    before = state.get("elapsed") or 0.0
    return before + (time.monotonic() - node_started if node_started is not None else 0.0)


async def _metered(cfg: RefineConfig, state: RefineState, work: Callable[[], Awaitable[Any]],
                   update: Callable[[Any], Update], *, node: str) -> Update:
    """Run a node's work under the run's meter.

    A budget refusal becomes a budget stop; a broken model or critic becomes an error
    stop when ``on_error="result"`` (the default), so the run still returns what it has.
    Configuration errors always raise.
    """
    started = time.monotonic()
    meter = Meter(cfg.budget, state.get("usage") or Usage(), _elapsed(state),
                  margin=cfg.seconds_margin)
    stop = None
    with RunScope(meter, cfg.model) as tally:
        try:
            # The time limit covers tool work too (sandbox runs, searches, plugins),
            # not only the LLM calls: one deadline, the meter's.
            async with meter.deadline():
                done = await work()
            out = update(done)
        except BudgetExceeded as exc:
            out = update(None)
            stop = Stop(reason=StopReason.budget, detail=str(exc), limit=exc.limit)
        except (ConfigError, GraphBubbleUp):  # GraphBubbleUp: an interrupt() pause
            raise
        except Exception as exc:
            if cfg.on_error == "raise" or _wrong_setup(exc):
                raise
            what = str(exc) if isinstance(exc, RedlineError) else f"{type(exc).__name__}: {exc}"
            log.info("the run stopped: %s failed: %s", node, what,
                     exc_info=not isinstance(exc, RedlineError))
            out = update(None)
            stop = Stop(reason=StopReason.error, detail=f"{node} failed: {what}")
    before = state.get("elapsed") or 0.0
    out |= {"usage": tally.usage, "elapsed": _elapsed(state, started) - before}
    if stop:
        out["stop"] = stop
    return out


def _wrong_setup(exc: Exception) -> bool:
    """A rejected key or an unknown model: the configuration is wrong, and every later
    call would fail the same way, so it raises whatever ``on_error`` says."""
    return isinstance(exc, LLMError) and exc.status in (401, 403, 404)


def _decide(cfg: RefineConfig, state: RefineState) -> Stop | None:
    rounds = state["rounds"]
    history = scored_history(rounds)
    # The threshold is about the candidate the run would return (the vote's winner).
    best = select_best(history, cfg.select)
    if best is None:
        return Stop(reason=StopReason.error, detail="no candidate could be scored")
    if best.score >= cfg.threshold and best.gates_passed:
        return Stop(reason=StopReason.threshold,
                    detail=f"score {best.score:.3f} >= threshold {cfg.threshold:g}")
    target = best if cfg.revise_from == "best" else history[-1]
    if cfg.revise_when == "on_failure" and not target.failed:
        return Stop(reason=StopReason.verified,
                    detail="no critic flagged a failure (revise_when='on_failure')")
    revisions = rounds[-1].index
    if revisions >= 1 and (cfg.reviser is None or cfg.reviser.repeat_converges):
        latest = rounds[-1].scored
        earlier = {s.candidate.id: r.index for r in rounds[:-1] for s in r.scored}
        repeats = [earlier[s.candidate.id] for s in latest if s.candidate.id in earlier]
        if latest and len(repeats) == len(latest):
            return Stop(reason=StopReason.converged,
                        detail=f"the reviser returned the candidate of round {repeats[0]}")
    if revisions >= cfg.patience:
        # By rank, not score alone: while every candidate fails a gate (score 0), a gate
        # score that still improves is progress.
        before = best_of(scored_history(rounds[:-cfg.patience]))
        after = best_of(scored_history(rounds[-cfg.patience:]))
        if before and after and after.rank <= before.rank:
            return Stop(reason=StopReason.converged,
                        detail=f"no score gain in the last {cfg.patience} rounds")
    if cfg.budget.max_rounds == 0:
        drafts = len(rounds[0].scored)
        how = "the vote's winner" if cfg.select == "vote" else "the best"
        return Stop(reason=StopReason.sampled,
                    detail=f"{drafts} draft{'s' * (drafts != 1)} scored, {how} returned "
                           "(max_rounds=0: no revision asked for)")
    if revisions >= cfg.budget.max_rounds:
        limit = cfg.budget.max_rounds
        return Stop(reason=StopReason.budget, limit="max_rounds",
                    detail=f"max_rounds: {revisions} of {limit} revisions done"
                    if cfg.reviser is None else cfg.reviser.rounds_done(revisions, limit))
    try:
        Meter(cfg.budget, state.get("usage") or Usage(), _elapsed(state),
              margin=cfg.seconds_margin).check_seconds()
    except BudgetExceeded as exc:
        return Stop(reason=StopReason.budget, limit="max_seconds", detail=str(exc))
    return None


def result_from_state(state: RefineState, threshold: float, *,
                      select: Select = "score") -> RefineResult:
    """The `RefineResult` of a (finished or stopped) run's state; `select` is how its
    best candidate is chosen (see `RefineConfig.select`)."""
    rounds = state.get("rounds") or []
    history = scored_history(rounds)
    stop = state.get("stop") or Stop(reason=StopReason.error, detail="the run did not finish")
    usage = (state.get("usage") or Usage()).model_copy(
        update={"seconds": state.get("elapsed") or 0.0})
    best = select_best(history, select)
    if best is None and state.get("pending"):
        # The draft was made (and paid for) but never scored: return it, marked.
        best = ScoredCandidate(candidate=state["pending"][0], score=0.0, gates_passed=False,
                               failed=False, critiques=[], unscored=True)
    return RefineResult(
        task=state["task"], best=best, final=history[-1] if history else None,
        rounds=rounds, stop_reason=stop.reason, stop_detail=stop.detail,
        budget_limit=stop.limit, threshold=threshold, usage=usage,
        memory=state.get("memory") or [],
        error=stop.detail if stop.reason is StopReason.error else None)
