"""The batch output file: a header line, then one JSON line per finished item, appended
and fsynced, so that a crash loses at most the line being written (dropped on resume).

```
{"redline_batch": 1, "spec": {...RunSpec JSON...}}       header: how the items were run
{"id": "a", "schema_version": 1, "text": ..., ...}        RefineResult.document + "id"
{"id": "b", ...}
```
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from redline._files import append_line, check_writable, parse_json
from redline.errors import ConfigError
from redline.types import RefineResult

__all__ = ["BATCH_FORMAT_VERSION", "BatchOutput", "result_line"]

BATCH_FORMAT_VERSION = 1
"""The version of the batch output layout (the header's ``redline_batch`` value)."""


def result_line(result: RefineResult, settings: Mapping[str, Any] | None = None
                ) -> dict[str, Any]:
    """The JSON document a batch writes for one finished item: ``{"id": <task id>}``
    followed by `RefineResult.document` (what ``redline refine --json`` writes)."""
    return {"id": result.task.id, **result.document(dict(settings or {}))}


class BatchOutput:
    """A batch's output file, checked at construction and written by `start` and `write`.

    Construction only reads: it refuses an existing non-empty file without ``resume``,
    a file written with other settings, and a damaged one; with ``resume`` it collects
    the ids already done (`done`) and notes a torn last line (`torn_line`). Nothing is
    written until `start`, so a batch refused later (bad input, a failed preflight)
    leaves the file as it was.

    A driver that receives finished documents from elsewhere (a Ray worker) writes them
    with `write` the same way `run_batch` does.

    Args:
        path: the output file.
        spec: the run's settings, ``RunSpec.model_dump(mode="json")``; a resumed file
            must have been written with the same.
        resume: continue an existing file instead of refusing it.
        kind: the header's key (``redline_batch``; ``redline_compare`` for a compare).
        key: a document's unique key (its ``id``; a compare's method and id).

    Raises:
        ConfigError: one line saying why the file cannot be used.
    """

    def __init__(self, path: str | Path, spec: Mapping[str, Any], *, resume: bool = False,
                 kind: str = "redline_batch",
                 key: Callable[[Mapping[str, Any]], Any] = lambda d: d.get("id")) -> None:
        self.path = Path(path)
        self.spec = dict(spec)
        self.kind = kind
        self.key = key
        self.done: set[Any] = set()
        """Ids of the items whose result is in the file (never written twice)."""
        self.failed: set[str] = set()
        """Ids among `done` whose result is an error (``stop_reason="error"``)."""
        self.torn_line: int | None = None
        """The number of the torn last line that `start` drops (a crash cut it off)."""
        self._keep: int | None = None  # bytes kept by `start` (None: new file)
        self._started = False
        self._written = 0  # results written by this run
        check_writable(self.path)
        if self.path.exists() and not self.path.is_file():
            raise ConfigError(f"cannot write {str(path)!r}: a batch output must be a regular "
                              "file (it is appended to, and read back by --resume)")
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ConfigError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
        if not data.strip():
            self._keep = 0
            return
        if not resume:
            raise ConfigError(f"{str(path)!r} exists and is not empty: add --resume to "
                              "continue it, or choose another output file")
        self._read(data)

    def _read(self, data: bytes) -> None:
        name = str(self.path)
        end = data.rfind(b"\n") + 1  # the complete lines end here; the rest is torn
        starts, numbered = 0, []
        for number, raw in enumerate(data[:end].split(b"\n")[:-1], 1):
            if raw.strip():
                numbered.append((number, starts, raw))
            starts += len(raw) + 1
        self._keep = end
        if data[end:].strip():  # a line without its newline: the write was cut off
            self.torn_line = data.count(b"\n") + 1
        values = []
        for i, (number, starts, raw) in enumerate(numbered):
            try:
                values.append((number, parse_json(raw)))
            except ValueError:
                if i < len(numbered) - 1 or self.torn_line is not None:
                    raise ConfigError(f"{name!r}, line {number}: not JSON; the file is "
                                      "damaged (a crash can only tear the last line)"
                                      ) from None
                self.torn_line, self._keep = number, starts
        if not values:  # only a torn header: start the file again
            self._keep = 0
        for i, (number, value) in enumerate(values):
            if i == 0:
                self._check_header(value)
            else:
                self._add(value, number)

    def _check_header(self, header: Any) -> None:
        name = str(self.path)
        what = self.kind.removeprefix("redline_")
        if not isinstance(header, dict) or self.kind not in header:
            raise ConfigError(f"{name!r} is not a redline {what} output (no header line); "
                              "choose another output file")
        if header[self.kind] != BATCH_FORMAT_VERSION:
            raise ConfigError(f"{name!r} is a {what} output of format "
                              f"{header[self.kind]!r}; this redline writes format "
                              f"{BATCH_FORMAT_VERSION}")
        written = header.get("spec")
        if written != self.spec:
            raise ConfigError(f"{name!r} was written with other settings "
                              f"({_first_difference(written, self.spec)}); resume with the "
                              "same options, or choose another output file")

    def _add(self, value: Any, number: int) -> None:
        name = str(self.path)
        if not isinstance(value, dict) or not isinstance(value.get("id"), str):
            raise ConfigError(f"{name!r}, line {number}: not a result (no 'id'); "
                              "the file is damaged")
        key = self.key(value)
        if key in self.done:
            raise ConfigError(f"{name!r}, line {number}: {_shown(key)} is there twice; "
                              "the file is damaged")
        self.done.add(key)
        if value.get("stop_reason") == "error":
            self.failed.add(key)

    def start(self) -> None:
        """Make the file ready for `write`: drop a torn last line, or write the header of
        a new (or empty) file. Idempotent.

        Raises:
            OSError: the file cannot be written.
        """
        if self._started:
            return
        self._started = True
        if self._keep is not None and self._keep > 0:
            if self.path.stat().st_size != self._keep:
                with open(self.path, "r+b") as f:
                    f.truncate(self._keep)
                    f.flush()
                    os.fsync(f.fileno())
            return
        if self._keep == 0:
            with open(self.path, "r+b") as f:
                f.truncate(0)
        append_line(self.path, json.dumps({self.kind: BATCH_FORMAT_VERSION,
                                           "spec": self.spec}, ensure_ascii=False))

    def abandon(self) -> None:
        """After a run that stopped before its first result: put the file back as it was
        when this run made it (no file, or an empty one), so that it leaves nothing
        half-written and the corrected rerun needs no ``--resume``. A file that held
        results, or was resumed, is kept."""
        if not self._started or self._written or self.done or self._keep:
            return
        with contextlib.suppress(OSError):
            if self._keep is None:
                self.path.unlink()
            else:
                os.truncate(self.path, 0)
        self._started = False

    def write(self, document: Mapping[str, Any]) -> None:
        """Append one finished item's document (`result_line`) and fsync it.

        Raises:
            ValueError: the document has no ``id``, or its id was written already.
            OSError: the write failed.
        """
        if not isinstance(document.get("id"), str):
            raise ValueError("a batch result document needs a string 'id'")
        key = self.key(document)
        if key in self.done:
            raise ValueError(f"{_shown(key)} is already in {str(self.path)!r}")
        self.start()
        append_line(self.path, json.dumps(document, ensure_ascii=False))
        self._written += 1
        self.done.add(key)
        if document.get("stop_reason") == "error":
            self.failed.add(key)


def _shown(key: Any) -> str:
    """A key in a message: ``id 'a'``, or ``method 'single', id 'a'``."""
    if isinstance(key, tuple):
        return ", ".join(f"{k} {v!r}" for k, v in zip(("method", "id"), key, strict=False))
    return f"id {key!r}"


def _first_difference(old: Any, new: Any, where: str = "") -> str:
    """``budget.max_rounds: 3 != 2``: the first setting that differs, for one line."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key),
                                         f"{where}.{key}" if where else str(key))
    shown = f"{where}: " if where else ""
    return f"{shown}{json.dumps(old)} in the file, {json.dumps(new)} now"
