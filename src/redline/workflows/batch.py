"""Many items, one configuration: `abatch` refines them concurrently in one process
through one `Runner` (the loop built once, one preflight, one model client), and
`arun_batch` / `run_batch` write the results to a crash-safe JSONL file that a resumed
run continues without losing or repeating an item.

Input, one JSON object a line (blank lines skipped)::

    {"id": "q1", "task": "Write add(a, b)", "draft": null, "system": null,
     "metadata": {"tests": "assert add(1, 2) == 3"}}

Only ``task`` is required. An item without ``id`` gets the content hash of its fields
(``task``, ``draft``, ``system``, ``metadata``): stable when the input is reordered or
grows, so a resumed batch and a checkpoint find it again.

Output: see `BatchOutput` (a header with the run's `RunSpec`, then one
`RefineResult.document` a line with its ``"id"``).

A failure of one item is a result (``stop_reason="error"``, its ``error``, the best so
far); only a configuration the preflight rejects stops the batch, before any work.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from redline._aio import gc_frozen
from redline._files import json_lines, parse_json, read_config_text
from redline.errors import ConfigError, MissingDependencyError, RedlineError
from redline.llm import ChatModel
from redline.types import RefineResult, StopReason, Task, Usage, content_hash
from redline.workflows._batch_output import BATCH_FORMAT_VERSION, BatchOutput, result_line
from redline.workflows._run import Runner, blocking
from redline.workflows.config import RefineConfig, RunSpec

__all__ = ["BATCH_FORMAT_VERSION", "BatchItem", "BatchOutput", "BatchSummary", "abatch",
           "arun_batch", "failed_result", "read_items", "result_line", "run_batch"]

log = logging.getLogger("redline.workflows.batch")

_MAX_PROBLEMS = 10  # problems listed in read_items' message; the rest are counted


class BatchItem(BaseModel):
    """One line of a batch input: a task and what comes with it."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True,
                              use_attribute_docstrings=True)

    id: str = Field(min_length=1)
    """Unique in the batch: the result's ``id``, the task's id, the checkpoint's thread."""
    task: str
    """The instruction or question (the `Task`'s prompt)."""
    draft: str | None = None
    """A first candidate to improve instead of generating one."""
    system: str | None = None
    """A system prompt for this item (else the run's ``--system``)."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Anything critics need (``tests``, ``entry_point``, documents), passed through."""

    @field_validator("task")
    @classmethod
    def _task_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the task is empty")
        return value

    def to_task(self, *, system: str | None = None) -> Task:
        """The `Task` this item describes; `system` applies when the item has none."""
        return Task(id=self.id, prompt=self.task, draft=self.draft,
                    system=self.system if self.system is not None else system,
                    metadata=self.metadata)


Item = TypeVar("Item", bound=BatchItem)


@overload
def read_items(source: str | Path | Iterable[str], *, name: str | None = None
               ) -> list[BatchItem]: ...
@overload
def read_items(source: str | Path | Iterable[str], *, name: str | None = None,
               model: type[Item]) -> list[Item]: ...
def read_items(source: str | Path | Iterable[str], *, name: str | None = None,
               model: type[Any] = BatchItem) -> list[Any]:
    """Read and check a whole batch input before any work.

    Args:
        source: a JSONL file's path, or its lines.
        name: what to call the input in messages (default: the path, or ``input``).
        model: the item type (a `BatchItem` subclass with more fields, e.g.
            `redline.workflows.compare.CompareItem`).

    Raises:
        ConfigError: every bad line at once, one line of text: ``IN.jsonl: 2 bad
            lines: line 2: not JSON (...); line 9: duplicate id 'a' (first on line 4)``;
            or an unreadable or empty input.
    """
    if isinstance(source, str | Path):
        name = name or str(source)
        lines: Iterable[str] = json_lines(read_config_text(source, "batch input"))
    else:
        name = name or "input"
        lines = source
    items: list[Any] = []
    problems: list[str] = []
    first_seen: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        item, problem, auto = _item(line, model)
        if item is not None and item.id in first_seen:
            first = first_seen[item.id]
            problem = (f"the same item as line {first} (give each an 'id')" if auto else
                       f"duplicate id {item.id!r} (first on line {first})")
        if problem is not None:
            problems.append(f"line {number}: {problem}")
            continue
        assert item is not None
        first_seen[item.id] = number
        items.append(item)
    if problems:
        shown = "; ".join(problems[:_MAX_PROBLEMS])
        more = len(problems) - _MAX_PROBLEMS
        plural = "s" if len(problems) > 1 else ""
        raise ConfigError(f"{name}: {len(problems)} bad line{plural}: {shown}"
                          + (f"; and {more} more" if more > 0 else ""))
    if not items:
        raise ConfigError(f"{name}: no items (one JSON object a line, with a 'task')")
    return items


def _item(line: str, model: type[Any]) -> tuple[Any, str | None, bool]:
    """The item on one line or what is wrong with it, and whether its id is derived."""
    try:
        data = parse_json(line, unique_keys=True)
    except ValueError as exc:
        return None, f"not JSON ({getattr(exc, 'msg', exc)})", False
    if not isinstance(data, dict):
        return None, f"not a JSON object (a {type(data).__name__})", False
    auto = "id" not in data
    try:
        item = model.model_validate({"id": "-", **data})
    except ValidationError as exc:
        return None, ", ".join(_problem(e, data) for e in exc.errors()), auto
    if auto:
        fields = json.dumps(item.model_dump(exclude={"id"}), sort_keys=True,
                            ensure_ascii=False)
        item = item.model_copy(update={"id": content_hash(fields)})
    return item, None, auto


def _problem(error: Any, data: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in error["loc"])
    if error["type"] == "missing":
        hint = " (found 'prompt': call it 'task')" if "prompt" in data else ""
        return f"missing {where!r}{hint}"
    if error["type"] == "extra_forbidden":
        return f"unknown field {where!r}"
    if error["type"] == "value_error":
        return f"{where!r}: {str(error['ctx']['error'])}"
    return f"{where!r}: {error['msg'][0].lower()}{error['msg'][1:]}"


def failed_result(task: Task, error: BaseException, threshold: float) -> RefineResult:
    """The result recorded for an item whose run raised: ``stop_reason="error"``, no
    candidate, the error's message."""
    what = str(error) if isinstance(error, RedlineError) else f"{type(error).__name__}: {error}"
    return RefineResult(task=task, best=None, final=None, rounds=[], threshold=threshold,
                        usage=Usage(), stop_reason=StopReason.error,
                        stop_detail=f"the run failed: {what}", error=what)


async def abatch(items: Iterable[BatchItem | Task], config: RefineConfig | Runner, *,
                 concurrency: int = 8, checkpointer: Any = None,
                 skip_ids: Collection[str] = ()) -> AsyncIterator[RefineResult]:
    """Refine many items concurrently and yield each result as it finishes.

    All items share one `Runner`: one preflight (before any item starts), the loop built
    once, one model client. Items are drawn from `items` lazily, one whenever a slot
    frees, so at most `concurrency` run at a time (`items` may be a generator). While
    the batch runs, the objects alive at its start are kept out of the garbage
    collector's scans (`redline._aio.gc_frozen`).

    A failure of one item is a result: a `RefineConfig` runs with
    ``on_error="result"`` (a broken critic or model ends the item with
    ``stop_reason="error"`` and its best so far), and what still escapes a run (a
    rejected key, an ``on_error="raise"`` runner, a bug in a plugin) becomes
    `failed_result`. Cancelling the iteration (Ctrl-C, ``aclose``) cancels the items in
    flight and waits for them; their results are not yielded.

    ```python
    async for result in abatch(read_items("in.jsonl"), config, concurrency=16):
        print(result.task.id, result.stop_reason.value, result.text)
    ```

    Args:
        items: `BatchItem`s or `Task`s (task ids must be unique: they key checkpoints).
        config: the configuration, or a `Runner` to share (give it the checkpointer).
        concurrency: the most items in flight.
        checkpointer: a LangGraph checkpointer for a `RefineConfig`: an item that was
            in flight when a batch died resumes where it stopped.
        skip_ids: ids not to run (already done).

    Raises:
        ConfigError: the preflight found the model or a critic unable to work (before
            any item started); `concurrency` < 1; two items with the same id.
    """
    if concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
    runner = _runner(config, checkpointer)
    await runner.preflight()
    skip = set(skip_ids)
    seen: set[str] = set()

    def tasks() -> Iterator[Task]:
        for item in items:
            task = item.to_task() if isinstance(item, BatchItem) else item
            if task.id in skip:
                continue
            if task.id in seen:
                raise ConfigError(f"two batch items have the id {task.id!r}")
            seen.add(task.id)
            yield task

    pending = tasks()
    running: set[asyncio.Task[RefineResult]] = set()
    with gc_frozen():  # the objects alive now are not garbage: not scanned again
        try:
            while True:
                for task in itertools.islice(pending, concurrency - len(running)):
                    running.add(asyncio.create_task(_run_one(runner, task),
                                                    name=f"redline batch item {task.id}"))
                if not running:
                    return
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    yield finished.result()
        finally:
            for left in running:
                left.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)


def _runner(config: RefineConfig | Runner, checkpointer: Any) -> Runner:
    if isinstance(config, Runner):
        if checkpointer is not None:
            raise ConfigError("abatch: give the checkpointer to the Runner, not to abatch")
        return config
    if config.on_error != "result":
        config = config.replace(on_error="result")
    return Runner(config, checkpointer=checkpointer)


async def _run_one(runner: Runner, task: Task) -> RefineResult:
    try:
        return await runner.run(task)
    except RedlineError as exc:
        log.info("item %r failed: %s", task.id, exc)
        return failed_result(task, exc, runner.config.threshold)
    except Exception as exc:  # a bug in a plugin must not take the other items down
        log.exception("item %r failed", task.id)
        return failed_result(task, exc, runner.config.threshold)


@dataclass
class BatchSummary:
    """What a batch has done so far; `arun_batch` updates it as items finish."""

    total: int = 0
    """Items in the input."""
    skipped: int = 0
    """Items already in the output when the batch started (a resume)."""
    started: int = 0
    """Items started by this run."""
    done: int = 0
    """Items finished by this run, failed ones included."""
    failed: int = 0
    """Items that finished with ``stop_reason="error"``."""
    stop_reasons: Counter[str] = field(default_factory=Counter)
    """How many finished items stopped for each reason."""
    usage: Usage = Usage()
    """What the finished items cost, together."""
    score_sum: float = 0.0
    """The sum of the finished items' best scores (unscored ones left out)."""
    scored: int = 0
    """Finished items with a scored best candidate."""
    failed_before: int = 0
    """Items already in the output (a resume) that had ended with an error."""
    torn_line: int | None = None
    """The output's torn last line that was dropped on resume (its item runs again)."""
    foreign: list[str] = field(default_factory=list)
    """Ids in the output (a resume) that the input does not have: another input's output?"""
    interrupted: bool = False
    """The batch was cancelled before every item finished."""

    @property
    def in_flight(self) -> int:
        """Items started and not finished."""
        return self.started - self.done

    @property
    def remaining(self) -> int:
        """Items not finished yet (in flight included)."""
        return self.total - self.skipped - self.done

    @property
    def mean_best_score(self) -> float | None:
        """The mean best score of the finished items that have one."""
        return self.score_sum / self.scored if self.scored else None

    def add(self, result: RefineResult) -> None:
        """Count one finished item."""
        self.done += 1
        self.failed += result.stop_reason is StopReason.error
        self.stop_reasons[result.stop_reason.value] += 1
        self.usage = self.usage + result.usage
        if result.best is not None and not result.best.unscored:
            self.score_sum += result.best.score
            self.scored += 1


async def arun_batch(spec: RunSpec, items: Sequence[BatchItem], out: str | Path, *,
                     concurrency: int = 8, resume: bool = False,
                     checkpoint: str | Path | None = None, api_key: str | None = None,
                     model: ChatModel | None = None, summary: BatchSummary | None = None,
                     on_start: Callable[[BatchSummary], Any] | None = None,
                     on_result: Callable[[RefineResult], Any] | None = None
                     ) -> BatchSummary:
    """Run `items` with the run `spec` describes into the batch output file `out`.

    Everything is checked before a token is spent or a byte written: the output file
    (`BatchOutput`: refused when it exists without `resume`, or was written with other
    settings), the spec, the preflight. Then each finished item's line is appended and
    fsynced as it finishes; with `resume`, items already in `out` are skipped and a torn
    last line is dropped (its item runs again).

    Args:
        spec: the run's settings (written in the output's header).
        items: the batch (`read_items`).
        out: the output file.
        concurrency: the most items in flight.
        resume: continue an existing output file.
        checkpoint: a SQLite file for LangGraph's `AsyncSqliteSaver` (``redline[sqlite]``):
            items in flight when a batch died resume mid-loop. Without `resume`, an
            existing one is refused (it would answer with another batch's runs).
        api_key: the model's API key (never written).
        model: a chat model to use instead of the spec's (not closed here).
        summary: updated as the batch runs (to watch it live); a new one when None.
        on_start: called with the summary once the preflight passed and the output file
            is ready, before the first item starts.
        on_result: called with each result once its line is written.

    Returns:
        The summary: ``summary.failed`` items ended with an error (their lines say why);
        ``summary.interrupted`` when cancelled.

    Raises:
        ConfigError: a bad output file, checkpoint or spec, or a failed preflight.
        asyncio.CancelledError: cancelled (the finished items' lines are kept).
    """
    output, summary = open_output(spec, items, out, resume=resume, summary=summary)
    if checkpoint is not None:
        _check_checkpoint(checkpoint, out, resume=resume)
    config = spec.build(api_key=api_key, model=model)
    try:
        if checkpoint is None:
            await _write_all(Runner(config), spec, items, output, concurrency, summary,
                             on_start, on_result)
        else:
            async with _sqlite_saver(checkpoint) as saver:
                await _opened(saver, checkpoint)
                await _write_all(Runner(config, checkpointer=saver), spec, items, output,
                                 concurrency, summary, on_start, on_result)
    except asyncio.CancelledError:
        summary.interrupted = True
        raise
    finally:
        if model is None:
            await config.model.aclose()
    return summary


def open_output(spec: RunSpec, items: Sequence[BatchItem], out: str | Path, *,
                resume: bool, summary: BatchSummary | None) -> tuple[BatchOutput, BatchSummary]:
    """The batch's output file, checked (nothing written yet), and its summary with what
    the file already holds counted (a driver of its own, e.g. Ray's, starts here too)."""
    output = BatchOutput(out, spec.model_dump(mode="json"), resume=resume)
    summary = summary if summary is not None else BatchSummary()
    summary.total = len(items)
    summary.skipped = sum(item.id in output.done for item in items)
    summary.failed_before = sum(item.id in output.failed for item in items)
    summary.foreign = sorted(output.done - {item.id for item in items})
    return output, summary


async def _write_all(runner: Runner, spec: RunSpec, items: Sequence[BatchItem],
                     output: BatchOutput, concurrency: int, summary: BatchSummary,
                     on_start: Callable[[BatchSummary], Any] | None,
                     on_result: Callable[[RefineResult], Any] | None) -> None:
    await runner.preflight()  # a ConfigError here: nothing written yet
    output.start()
    summary.torn_line = output.torn_line
    if output.torn_line is not None:
        log.info("%s: dropped the torn line %d (a crash cut it off); its item runs again",
                 output.path, output.torn_line)
    if on_start is not None:
        on_start(summary)
    settings = output.spec

    def todo() -> Iterator[Task]:
        for item in items:
            if item.id not in output.done:
                summary.started += 1
                yield item.to_task(system=spec.system)

    try:
        async for result in abatch(todo(), runner, concurrency=concurrency):
            # The fsync runs in a thread so the other items' loops go on meanwhile.
            await asyncio.to_thread(output.write, result_line(result, settings))
            summary.add(result)
            if on_result is not None:
                on_result(result)
    except BaseException:
        output.abandon()  # interrupted before a result: no header-only file left behind
        raise


_SQLITE_MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database


def _check_checkpoint(path: str | Path, out: str | Path, *, resume: bool) -> None:
    """Check a batch's ``--checkpoint`` file before anything runs or is written: a new
    file in an existing folder, or (with `resume`) a SQLite database; never the output.

    Raises:
        ConfigError: one line saying what is wrong with it.
    """
    target, shown = Path(path), str(path)
    if target.resolve() == Path(out).resolve() or (
            target.exists() and Path(out).exists() and target.samefile(out)):
        raise ConfigError(f"checkpoint {shown!r} is the output file: give the checkpoint a "
                          "file of its own (e.g. OUT.ckpt.db)")
    if not target.exists():
        if not target.parent.is_dir():
            raise ConfigError(f"checkpoint {shown!r}: folder {str(target.parent)!r} does "
                              "not exist")
        return
    if not target.is_file():
        raise ConfigError(f"checkpoint {shown!r} is not a file")
    if target.stat().st_size == 0:
        return
    if not resume:
        raise ConfigError(f"checkpoint {shown!r} exists: add --resume to continue the batch "
                          "it belongs to, or choose another file")
    try:
        with target.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise ConfigError(f"cannot read checkpoint {shown!r}: {exc.strerror}") from None
    if head != _SQLITE_MAGIC:
        raise ConfigError(f"checkpoint {shown!r} is not a SQLite database (a batch "
                          "checkpoint is one): choose another file")


async def _opened(saver: Any, path: str | Path) -> None:
    """Open the checkpoint's tables now, so that a database SQLite refuses is one line
    before the output is written, not an error in every item."""
    import sqlite3

    try:
        await saver.setup()
    except sqlite3.Error as exc:
        raise ConfigError(f"checkpoint {str(path)!r}: SQLite cannot use it ({exc})") from None


def _sqlite_saver(path: str | Path) -> Any:
    try:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    except ImportError:
        raise MissingDependencyError("a batch checkpoint", "sqlite") from None
    return AsyncSqliteSaver.from_conn_string(str(path))


def run_batch(spec: RunSpec, items: Sequence[BatchItem], out: str | Path, **kwargs: Any
              ) -> BatchSummary:
    """`arun_batch` from synchronous code (same arguments).

    Raises:
        ConfigError: see `arun_batch`; also when called inside a running event loop.
    """
    return blocking(arun_batch(spec, items, out, **kwargs), "run_batch", "arun_batch")
