"""Reading what redline wrote: a batch output, a ``redline compare`` output, or one
``redline refine --json`` result (or a JSONL of such documents without a header).

Every result line is read back with `RefineResult.from_document`; keys a result does not
know (a batch's ``id``, compare's ``method``/``correct``, fields added by a newer
redline of the same schema version) are set aside, so that reading stays lenient.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from redline._files import json_lines, parse_json
from redline.errors import ConfigError
from redline.types import RefineResult

__all__ = ["Entry", "Results", "load_results"]

Kind = Literal["result", "batch", "compare", "results"]

_RESULT_KEYS = frozenset(RefineResult.model_fields) | {"schema_version"}


@dataclass(frozen=True)
class Entry:
    """One run read from a results file: one item (of one method, for a compare file)."""

    id: str
    """The item's id (the task's id for a single result)."""
    result: RefineResult
    """The run."""
    method: str | None = None
    """The method it ran with (compare files only)."""
    correct: bool | None = None
    """Whether the evaluator judged the returned answer correct (compare files only)."""
    draft_correct: bool | None = None
    """Whether the evaluator judged the first draft correct (compare files, when known)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The result document's own ``settings``."""


@dataclass(frozen=True)
class Results:
    """Everything a results file holds, whatever its format."""

    kind: Kind
    """``result`` (one ``--json`` document), ``batch``, ``compare``, or ``results`` (a
    JSONL of result documents without a header)."""
    entries: list[Entry]
    """The runs, in file order."""
    spec: dict[str, Any] | None = None
    """How the runs were configured: a batch header's ``spec``, a ``--json`` document's
    ``settings``; None for a compare file (see `methods`)."""
    methods: dict[str, Any] = field(default_factory=dict)
    """A compare file's methods, each with its RunSpec JSON (or None)."""
    evaluator: str | None = None
    """A compare file's evaluator description."""
    budget: dict[str, Any] | None = None
    """A compare file's matched budget."""
    notes: list[str] = field(default_factory=list)
    """What the reader skipped or noticed (a torn last line), said in the report."""
    source: str = ""
    """The file's name."""

    @property
    def method_names(self) -> list[str]:
        """The methods in header order, then any others the lines name."""
        names = list(self.methods)
        for entry in self.entries:
            if entry.method is not None and entry.method not in names:
                names.append(entry.method)
        return names


def load_results(path: str | Path) -> Results:
    """Read a batch output, a compare output or a ``--json`` result file.

    Raises:
        ConfigError: the file is unreadable, not JSON, or not something redline wrote
            (the message names the file and the line).
    """
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {name!r}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {name!r}: {exc.strerror or exc}") from None
    if not text.strip():
        raise ConfigError(f"{name!r} is empty: give a batch output, a compare output or a "
                          "`redline refine --json` result")
    try:  # one JSON document: `redline refine --json` (indented, several lines)
        whole = parse_json(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict) and "schema_version" in whole:
        result = _result(whole, name, None)
        given = whole.get("settings")
        settings: dict[str, Any] = given if isinstance(given, dict) else {}
        return Results(kind="result", spec=settings, source=name,
                       entries=[Entry(id=result.task.id, result=result, settings=settings)])
    return _read_lines(text, name)


def _lines(text: str, name: str, notes: list[str]) -> Iterator[tuple[int, Any]]:
    """Each non-blank line's JSON value; a last line that is not JSON (a batch torn by a
    crash) is skipped with a note, one elsewhere is an error."""
    lines = json_lines(text)
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield i + 1, parse_json(line)
        except json.JSONDecodeError as exc:
            if i == last:
                notes.append(f"line {i + 1} is not JSON and was skipped (a last line torn "
                             "by a crash)")
                continue
            raise ConfigError(f"{name!r}, line {i + 1}: not JSON ({exc.msg})") from None


def _read_lines(text: str, name: str) -> Results:
    notes: list[str] = []
    lines = _lines(text, name, notes)
    first = next(lines, None)
    if first is None:
        raise ConfigError(f"{name!r} holds no JSON line")
    number, header = first
    if not isinstance(header, dict):
        raise ConfigError(f"{name!r}, line {number}: not a JSON object")
    entries: list[Entry] = []
    seen: set[tuple[str | None, str]] = set()

    def add(number: int, value: Any, compare: bool) -> None:
        if not isinstance(value, dict):
            raise ConfigError(f"{name!r}, line {number}: not a JSON object")
        method = value.get("method") if compare else None
        if compare and not isinstance(method, str):
            raise ConfigError(f"{name!r}, line {number}: a compare line needs a 'method'")
        result = _result(value, name, number)
        item_id = value.get("id")
        item_id = item_id if isinstance(item_id, str) else result.task.id
        if (method, item_id) in seen:
            notes.append(f"line {number}: {_what(method, item_id)} appears again; the "
                         "first is shown")
            return
        seen.add((method, item_id))
        settings = value.get("settings")
        entries.append(Entry(id=item_id, result=result, method=method,
                             correct=_bool(value.get("correct")),
                             draft_correct=_bool(value.get("draft_correct")),
                             settings=settings if isinstance(settings, dict) else {}))

    for kind in ("redline_compare", "redline_batch"):
        if kind not in header:
            continue
        from redline.workflows.batch import BATCH_FORMAT_VERSION  # loads LangGraph: here

        if header[kind] != BATCH_FORMAT_VERSION:
            raise ConfigError(f"{name!r} is a {kind.removeprefix('redline_')} output of format "
                              f"{header[kind]!r}; this redline reads format "
                              f"{BATCH_FORMAT_VERSION} (upgrade redline to read it)")
    if "redline_compare" in header:
        for number, value in lines:
            add(number, value, True)
        # The methods, evaluator and budget at the top of the header, or in its "spec"
        # (as `redline compare` writes them, with the matched "max_tokens").
        given = header.get("spec")
        inner: dict[str, Any] = given if isinstance(given, dict) else {}
        methods = header.get("methods", inner.get("methods"))
        evaluator = header.get("evaluator", inner.get("evaluator"))
        budget = header.get("budget", inner.get("budget"))
        if budget is None and inner.get("max_tokens"):
            budget = {"max_tokens": inner["max_tokens"]}
        return Results(kind="compare", entries=entries, source=name, notes=notes,
                       methods=dict(methods) if isinstance(methods, dict) else {},
                       evaluator=evaluator if evaluator is None else str(evaluator),
                       budget=budget if isinstance(budget, dict) else None)
    if "redline_batch" in header:
        spec = header.get("spec")
        for number, value in lines:
            add(number, value, False)
        return Results(kind="batch", entries=entries, source=name, notes=notes,
                       spec=spec if isinstance(spec, dict) else None)
    if "schema_version" in header:  # result documents, one a line, without a header
        add(number, header, False)
        for number, value in lines:
            add(number, value, False)
        return Results(kind="results", entries=entries, source=name, notes=notes)
    raise ConfigError(f"{name!r} is not a redline results file: its first line is neither a "
                      "batch or compare header nor a result document")


def _result(document: dict[str, Any], name: str, number: int | None) -> RefineResult:
    where = f"{name!r}" if number is None else f"{name!r}, line {number}"
    if "schema_version" not in document:
        raise ConfigError(f"{where}: not a redline result document (no 'schema_version')")
    try:
        return RefineResult.from_document(
            {k: v for k, v in document.items() if k in _RESULT_KEYS})
    except ValidationError as exc:
        first = exc.errors()[0]
        at = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}: not a redline result ({at}: {first['msg']})") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _what(method: str | None, item_id: str) -> str:
    return f"item {item_id!r}" if method is None else f"item {item_id!r} of {method!r}"
