"""Methods side by side at a matched budget, scored by an evaluator the loop never sees
(``redline compare``).

Repair is only worth it at equal compute (Olausson et al. 2023), and intrinsic
self-correction can make answers worse (Huang et al. 2024). `acompare` runs each method
(a preset name; ``single`` is one draft) over the same items with the same model and the
same per-item token budget, judges every returned answer (and every method's first
draft) with the evaluator, and returns a `CompareTable`: success rate with a 95 %
Wilson interval, mean tokens, LLM calls and seconds per item, and the **flip rate**
(items whose draft was right that the method returned wrong) and **fix rate** (wrong
drafts made right).

The evaluator reads fields of the item that never reach the loop: ``answer`` (a
reference answer) and ``hidden_tests`` (tests run on the answer's code in the sandbox).
A method's run is a batch: its lines go to one output file, keyed by method and id, so
an interrupted compare resumes where it stopped.

```
{"redline_compare": 1, "spec": {"methods": {...}, "evaluator": "tests", "max_tokens": 6000}}
{"method": "single", "id": "q1", "correct": true, "draft_correct": true, ...result document}
```
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import math
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from redline._files import json_lines, parse_json
from redline.errors import ConfigError
from redline.types import Budget, RefineResult, Task
from redline.workflows._batch_output import BatchOutput, result_line
from redline.workflows._run import Runner, blocking
from redline.workflows.batch import BatchItem, abatch
from redline.workflows.config import Policy, RunSpec

__all__ = ["CompareItem", "CompareTable", "Evaluator", "MethodRow", "acompare",
           "compare", "make_evaluator", "method_specs", "wilson"]

Judge = Callable[["CompareItem", str], Awaitable[bool]]


class CompareItem(BatchItem):
    """A batch item with what the evaluator needs; those fields never reach the loop."""

    answer: str | None = None
    """A reference answer the evaluator matches the returned answer against."""
    hidden_tests: str | None = None
    """Tests run on the returned answer's code (asserts, ``test_*`` functions or a
    HumanEval ``check(candidate)``; the function is ``metadata["entry_point"]``)."""
    extra: dict[str, Any] = Field(default_factory=dict)
    """Anything else a custom evaluator reads (never shown to the loop)."""


@dataclass(frozen=True)
class Evaluator:
    """Says whether a returned answer is right; the loop never sees what it reads.

    Attributes:
        name: what the output's header records (``tests``, ``numeric``, a function).
        judge: ``await judge(item, text)`` → right or not (no answer is never right).
    """

    name: str
    judge: Judge

    async def __call__(self, item: CompareItem, text: str | None) -> bool:
        return False if text is None else await self.judge(item, text)


def make_evaluator(spec: str = "auto") -> Evaluator:
    """The evaluator named by `spec`.

    - ``auto``: per item, its ``hidden_tests`` if it has them, else its ``answer``
      compared numerically when it is a number
      (`redline.feedback_sources.answers.is_number`: ``$1,000``, ``3/4``), else exactly.
    - ``tests``: the item's ``hidden_tests`` run on the answer's code in the sandbox;
      right when every test passes.
    - ``exact``: the answer's final answer equals ``answer`` once normalised
      (`redline.feedback_sources.answers.answer_key`: case, spaces, ``$``, trailing dot).
    - ``numeric``: the final answer equals ``answer`` as a number (relative 1e-6);
      `compare` refuses an item whose ``answer`` is not a number before any work.
    - ``regex``: ``answer`` is a regular expression found in the answer's text.
    - ``FILE.py:FUNCTION``: ``FUNCTION(item: dict, text: str) -> bool`` (sync or async),
      ``item`` being the whole input line.

    Raises:
        ConfigError: an unknown name, a file or function that cannot be loaded.
    """
    kinds: dict[str, Judge] = {"tests": _tests, "exact": _exact, "numeric": _numeric,
                               "regex": _regex, "auto": _auto}
    if spec in kinds:
        return Evaluator(spec, kinds[spec])
    if ":" in spec:
        return _from_file(spec)
    raise ConfigError(f"unknown evaluator {spec!r}: use auto, tests, exact, numeric, regex "
                      "or FILE.py:FUNCTION")


def _needs(item: CompareItem, field_name: str, evaluator: str) -> str:
    value = getattr(item, field_name)
    if not value:
        raise ConfigError(f"item {item.id!r} has no {field_name!r}, which the {evaluator} "
                          "evaluator needs")
    return str(value)


async def _tests(item: CompareItem, text: str) -> bool:
    from redline.critics.code_tests import entry_point
    from redline.feedback_sources.code import extract_python
    from redline.feedback_sources.python_tests import TestSuite, run_tests
    from redline.feedback_sources.sandbox import default_sandbox

    tests = _needs(item, "hidden_tests", "tests")
    task = item.to_task()
    suite = TestSuite.from_source(tests, entry_point=entry_point(task))
    report = await run_tests(default_sandbox(), extract_python(text), suite, timeout=30.0,
                             test_timeout=5.0)
    return bool(report.total) and not report.error and not report.tampering \
        and report.passed == report.total


def _final(text: str) -> str:
    from redline.feedback_sources.answers import final_answer

    return final_answer(text) or text.strip()


async def _exact(item: CompareItem, text: str) -> bool:
    from redline.feedback_sources.answers import answer_key

    return answer_key(_final(text)) == answer_key(_needs(item, "answer", "exact"))


async def _numeric(item: CompareItem, text: str) -> bool:
    from redline.feedback_sources.answers import same_answer

    return same_answer(_final(text), _needs(item, "answer", "numeric"))


async def _regex(item: CompareItem, text: str) -> bool:
    return _pattern(item, _needs(item, "answer", "regex")).search(text) is not None


def _pattern(item: CompareItem, answer: str) -> re.Pattern[str]:
    try:
        return re.compile(answer)
    except re.error as exc:
        raise ConfigError(f"item {item.id!r}: 'answer' is not a regular expression: {exc}"
                          ) from None


async def _auto(item: CompareItem, text: str) -> bool:
    if item.hidden_tests:
        return await _tests(item, text)
    from redline.feedback_sources.answers import is_number

    answer = _needs(item, "answer", "auto")
    return await (_numeric if is_number(answer) else _exact)(item, text)


def _from_file(spec: str) -> Evaluator:
    path, _, name = spec.rpartition(":")
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"evaluator {spec!r}: no file {path!r}")
    module_spec = importlib.util.spec_from_file_location(f"_redline_eval_{file.stem}", file)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"evaluator {spec!r}: {path!r} is not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # the user's file can fail in any way: say where
        raise ConfigError(f"evaluator {spec!r}: {path!r} failed to load: "
                          f"{type(exc).__name__}: {exc}") from exc
    function = getattr(module, name, None)
    if not callable(function):
        raise ConfigError(f"evaluator {spec!r}: {path!r} has no function {name!r}")

    async def judge(item: CompareItem, text: str) -> bool:
        try:
            outcome = function(item.model_dump(mode="json"), text)
            if inspect.isawaitable(outcome):
                outcome = await outcome
        except (Exception, SystemExit) as exc:  # the user's function: one line, not a trace
            raise ConfigError(f"evaluator {spec!r} failed on item {item.id!r}: "
                              f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(outcome, bool):
            raise ConfigError(f"evaluator {spec!r} returned {type(outcome).__name__}, not "
                              "a bool")
        return outcome

    return Evaluator(spec, judge)


def method_specs(methods: Sequence[str], base: RunSpec, *, max_tokens: int
                 ) -> dict[str, RunSpec]:
    """Each method's `RunSpec`: `base` (model, critics, policy the user set) with the
    method as its preset and `max_tokens` as every method's per-item token budget.

    Critics in `base` go to the methods whose preset takes critics (``-c`` is the
    critic of best-of-N, the evaluator of Reflexion, the tests of Self-Debug, the tools
    of CRITIC); the others keep their own. ``single`` ignores ``n`` and the revision
    fields (it is the one-draft baseline); preset options (``memory``, ``explain``,
    ``rubric``) go to the presets that take them, and `base`'s reviser model to those
    that revise (``single`` and ``best-of-n`` run on `base`'s model alone).

    Raises:
        ConfigError: no method, an unknown or repeated one, a bad budget.
    """
    from redline.plugins import load_preset

    if not methods:
        raise ConfigError("no methods to compare: give --methods single,best-of-n,...")
    if max_tokens < 1:
        raise ConfigError(f"the per-item token budget must be at least 1, got {max_tokens}")
    given = base.model_fields_set
    specs: dict[str, RunSpec] = {}
    for name in methods:
        preset = load_preset(name)
        if preset.name in specs:
            raise ConfigError(f"method {preset.name!r} is given twice")
        budget = base.budget.model_copy(update={"max_tokens": max_tokens}) \
            if "budget" in given else Budget(max_tokens=max_tokens)
        fields: dict[str, Any] = {k: getattr(base, k) for k in Policy.model_fields
                                  if k in given and k != "budget"}
        if preset.name == "single":  # the baseline: one draft, whatever -n says
            fields = {k: v for k, v in fields.items() if k not in _REVISING}
        fields |= {"model": base.model, "system": base.system, "budget": budget,
                   "critic_settings": base.critic_settings, "preset": preset.name}
        if "critics" in given and preset.critics_param is not None:
            fields["critics"] = base.critics
        if base.reviser_model is not None and preset.takes_reviser_model:
            fields["reviser_model"] = base.reviser_model
        options = {k: v for k, v in base.preset_options.items() if k in preset.options}
        if options:
            fields["preset_options"] = options
        specs[preset.name] = RunSpec(**fields)
    return specs


# What the single draft of the baseline ignores among the policy the user set.
_REVISING = frozenset({"n", "select", "revise", "revise_when", "revise_from", "patience"})


def wilson(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95 % by default); (0, 1) for none."""
    if total == 0:
        return 0.0, 1.0
    p = successes / total
    centre = p + z * z / (2 * total)
    spread = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    low, high = (centre - spread) / (1 + z * z / total), (centre + spread) / (1 + z * z / total)
    return max(0.0, low), min(1.0, high)


@dataclass
class MethodRow:
    """One method's figures over the items it ran."""

    method: str
    items: int = 0
    correct: int = 0
    drafts_right: int = 0
    """Items whose first draft the evaluator found right."""
    flips: int = 0
    """Items whose draft was right and whose returned answer is wrong."""
    fixes: int = 0
    """Items whose draft was wrong and whose returned answer is right."""
    errors: int = 0
    """Items that ended with ``stop_reason="error"``."""
    unanswered: int = 0
    """Items that ended with no answer at all (counted wrong): typically a budget too
    small for the prompt, so the method never made a call."""
    unanswered_detail: str | None = None
    """Why the first of those ended (its ``stop_detail``, else its error)."""
    tokens: int = 0
    calls: int = 0
    seconds: float = 0.0

    @property
    def success(self) -> float:
        """The share of items answered right."""
        return self.correct / self.items if self.items else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        """The success rate's 95 % Wilson interval."""
        return wilson(self.correct, self.items)

    @property
    def flip_rate(self) -> float | None:
        """Flips per draft that was right (None: no draft was right)."""
        return self.flips / self.drafts_right if self.drafts_right else None

    @property
    def fix_rate(self) -> float | None:
        """Fixes per draft that was wrong (None: every draft was right)."""
        wrong = self.items - self.drafts_right
        return self.fixes / wrong if wrong else None

    def per_item(self, total: float) -> float:
        """`total` divided by the items (0 without items)."""
        return total / self.items if self.items else 0.0

    def add(self, line: Mapping[str, Any]) -> None:
        """Count one item's output line."""
        self.items += 1
        right, draft = bool(line.get("correct")), line.get("draft_correct")
        self.correct += right
        self.drafts_right += draft is True
        self.flips += draft is True and not right
        self.fixes += draft is False and right
        self.errors += line.get("stop_reason") == "error"
        if line.get("text") is None:
            self.unanswered += 1
            if self.unanswered_detail is None:
                self.unanswered_detail = line.get("stop_detail") or line.get("error") or \
                    str(line.get("stop_reason"))
        usage = line.get("usage") or {}
        self.tokens += int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))
        self.calls += int(usage.get("llm_calls", 0))
        self.seconds += float(usage.get("seconds", 0.0))

    def as_dict(self) -> dict[str, Any]:
        """The row as plain data (``--json``)."""
        low, high = self.interval
        return {"method": self.method, "items": self.items, "correct": self.correct,
                "success": self.success, "ci95": [low, high], "flips": self.flips,
                "fixes": self.fixes, "flip_rate": self.flip_rate, "fix_rate": self.fix_rate,
                "errors": self.errors, "unanswered": self.unanswered,
                "unanswered_detail": self.unanswered_detail,
                "tokens_per_item": self.per_item(self.tokens),
                "calls_per_item": self.per_item(self.calls),
                "seconds_per_item": self.per_item(self.seconds)}


@dataclass
class CompareTable:
    """The comparison: one row per method, in the order given."""

    rows: list[MethodRow] = field(default_factory=list)
    evaluator: str = ""
    max_tokens: int = 0

    def row(self, method: str) -> MethodRow:
        """The row of `method` (made when missing)."""
        for r in self.rows:
            if r.method == method:
                return r
        self.rows.append(MethodRow(method))
        return self.rows[-1]

    def as_dict(self) -> dict[str, Any]:
        """The table as plain data."""
        return {"evaluator": self.evaluator, "max_tokens": self.max_tokens,
                "methods": [r.as_dict() for r in self.rows]}


def _first_draft(result: RefineResult) -> str | None:
    if not result.rounds or not result.rounds[0].scored:
        return result.text
    return result.rounds[0].scored[0].candidate.text


async def acompare(items: Sequence[CompareItem], specs: Mapping[str, RunSpec],
                   out: str | Path, *, evaluator: Evaluator | None = None,
                   concurrency: int = 8, resume: bool = False, api_key: str | None = None,
                   on_result: Callable[[str, Mapping[str, Any]], Any] | None = None
                   ) -> CompareTable:
    """Run every method over `items` into `out` and return the table.

    Every method with items to run is preflighted first (its model and critics), so a
    configuration that cannot work stops the comparison before the output is written
    or a token spent. Methods then run one after another (each a batch of
    `concurrency` items at a time, one `Runner`: the loop built once); each finished
    item is judged (the returned answer and the method's first draft) and its line
    appended and fsynced.

    Args:
        items: the dataset (`read_items(..., model=CompareItem)`).
        specs: each method's run (`method_specs`).
        out: the output file (refused when it exists, unless `resume`).
        evaluator: what says right or wrong (default: ``auto``).
        concurrency: items in flight per method.
        resume: continue `out`: (method, id) pairs in it are not run again.
        api_key: the model's API key (never written).
        on_result: called with the method and each line once it is written.

    Raises:
        ConfigError: a bad output file, spec or evaluator input; a failed preflight
            (nothing written).
    """
    evaluator = evaluator or make_evaluator("auto")
    if evaluator.name in ("tests", "auto", "exact", "numeric", "regex"):
        for item in items:  # every item must carry what the evaluator reads: fail early
            if evaluator.name != "auto" or not (item.hidden_tests or item.answer):
                _needs_for(item, evaluator.name)
    max_tokens = max((s.budget.max_tokens or 0) for s in specs.values()) if specs else 0
    header = {"methods": {m: s.model_dump(mode="json") for m, s in specs.items()},
              "evaluator": evaluator.name, "max_tokens": max_tokens}
    output = BatchOutput(out, header, resume=resume, kind="redline_compare",
                         key=lambda d: (d.get("method"), d.get("id")))
    table = CompareTable(evaluator=evaluator.name, max_tokens=max_tokens)
    for method in specs:
        table.row(method)
    by_id = {item.id: item for item in items}
    pending = [(method, spec, todo) for method, spec in specs.items()
               if (todo := [i for i in items if (method, i.id) not in output.done])]
    first = await _checked_runners(pending, api_key)  # a ConfigError: nothing written
    try:
        output.start()
    except BaseException:
        if first is not None:
            await first.config.model.aclose()
        raise
    try:
        await _run_methods(pending, first, by_id, evaluator, output, concurrency, api_key,
                           on_result)
    except BaseException:
        output.abandon()  # stopped before a result: no header-only file left behind
        raise
    _tally(output.path, table)
    return table


async def _run_methods(pending: Sequence[tuple[str, RunSpec, Sequence[CompareItem]]],
                       first: Runner | None, by_id: Mapping[str, CompareItem],
                       evaluator: Evaluator, output: BatchOutput, concurrency: int,
                       api_key: str | None,
                       on_result: Callable[[str, Mapping[str, Any]], Any] | None) -> None:
    """Each method's batch in turn, each item judged and its line written."""
    for index, (method, spec, todo) in enumerate(pending):
        runner = first if index == 0 and first is not None else Runner(
            spec.build(api_key=api_key))
        try:
            settings = spec.model_dump(mode="json")
            tasks: Iterator[Task] = (i.to_task(system=spec.system) for i in todo)
            async for result in abatch(tasks, runner, concurrency=concurrency):
                item = by_id[result.task.id]
                draft_text = _first_draft(result)
                if draft_text == result.text:  # not revised: one verdict for both
                    right = draft = await evaluator(item, draft_text)
                else:
                    right, draft = await asyncio.gather(evaluator(item, result.text),
                                                        evaluator(item, draft_text))
                line = {"method": method, "correct": right, "draft_correct": draft,
                        **result_line(result, settings)}
                await asyncio.to_thread(output.write, line)
                if on_result is not None:
                    on_result(method, line)
        finally:
            await runner.config.model.aclose()


async def _checked_runners(pending: Sequence[tuple[str, RunSpec, Any]], api_key: str | None
                           ) -> Runner | None:
    """Preflight every method that has items to run, before the output is written: a
    model or critic that cannot work is found before any method spends a token. The
    first method's `Runner` is returned, checked and ready; the others' models are
    closed again (a local model's server would otherwise sit idle until its turn).

    Raises:
        ConfigError: the first method whose preflight fails.
    """
    first: Runner | None = None
    try:
        for index, (_, spec, _) in enumerate(pending):
            runner = Runner(spec.build(api_key=api_key))
            if index == 0:
                first = runner
            try:
                await runner.preflight()
            finally:
                if index:
                    await runner.config.model.aclose()
    except BaseException:
        if first is not None:
            await first.config.model.aclose()
        raise
    return first


def _needs_for(item: CompareItem, evaluator: str) -> None:
    field_name = "hidden_tests" if evaluator == "tests" else "answer"
    if evaluator == "auto":
        raise ConfigError(f"item {item.id!r} has neither 'hidden_tests' nor 'answer': the "
                          "auto evaluator has nothing to judge it by")
    value = _needs(item, field_name, evaluator)
    if evaluator == "regex":
        _pattern(item, value)
    if evaluator == "numeric":
        from redline.feedback_sources.answers import is_number

        if not is_number(value):
            raise ConfigError(f"item {item.id!r}: 'answer' {value!r} is not a number, which "
                              "the numeric evaluator needs (use --evaluator exact or auto)")


def _tally(path: Path, table: CompareTable) -> None:
    """The table from every line of the output (this run's and a resumed one's)."""

    for number, raw in enumerate(json_lines(path.read_text(encoding="utf-8"))):
        if number == 0 or not raw.strip():
            continue
        line = parse_json(raw)
        table.row(line["method"]).add(line)


def compare(items: Sequence[CompareItem], specs: Mapping[str, RunSpec], out: str | Path,
            **kwargs: Any) -> CompareTable:
    """`acompare` from synchronous code (same arguments).

    Raises:
        ConfigError: see `acompare`; also when called inside a running event loop.
    """
    return blocking(acompare(items, specs, out, **kwargs), "compare", "acompare")
