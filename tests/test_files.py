"""`redline._files`: atomic writes keep modes, appended lines survive, JSONL errors name
the line."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from redline._files import append_line, atomic_write, read_jsonl
from redline.errors import ConfigError


def test_atomic_write_keeps_the_mode_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "cal.json"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write(target, "new")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal.json"]


def test_atomic_write_failing_leaves_the_old_file(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "keep.txt"
    target.write_text("precious")

    def broken(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, "half")
    assert target.read_text() == "precious" and len(list(tmp_path.iterdir())) == 1


def test_append_line_appends_whole_lines(tmp_path: Path) -> None:
    log = tmp_path / "runs.jsonl"
    append_line(log, '{"a": 1}')
    append_line(log, '{"b": 2}')
    assert log.read_text() == '{"a": 1}\n{"b": 2}\n'
    with pytest.raises(ValueError, match="one line"):
        append_line(log, "two\nlines")


def test_read_jsonl_names_the_bad_line(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"a": 1}\n\n[2]\n{oops\n')
    rows = read_jsonl(data)
    assert next(rows) == (1, {"a": 1}) and next(rows) == (3, [2])
    with pytest.raises(ConfigError, match=r"d.jsonl, line 4: not JSON"):
        next(rows)
    with pytest.raises(ConfigError, match="cannot read data file"):
        list(read_jsonl(tmp_path / "missing.jsonl", "data file"))
