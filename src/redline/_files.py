"""Files: reading the small text files that configure critics (rubrics, tests, schemas),
and writing results without losing or half-writing anything."""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from redline.errors import ConfigError

__all__ = ["append_line", "atomic_write", "check_writable", "json_lines", "parse_json",
           "read_config_text", "read_jsonl", "write_output"]

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # \uD800-\uDFFF, half of a pair or alone
_SURROGATE_ESCAPE_BYTES = re.compile(_SURROGATE_ESCAPE.pattern.encode())


def json_lines(text: str) -> list[str]:
    """The lines of a JSONL text, split at line feeds only (a ``\\r`` before one is
    dropped). `str.splitlines` also splits at U+2028, U+2029, U+0085 and other
    characters that JSON strings may hold raw, which would cut a valid line in two."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def parse_json(text: str | bytes, *, unique_keys: bool = False) -> Any:
    """`json.loads`, with two inputs it would pass on reported as bad JSON: nesting too
    deep for the parser (a `RecursionError`) and a ``\\uD800``-style escape that leaves
    half a surrogate pair (a string that cannot be written as UTF-8 later).

    Args:
        text: the JSON text.
        unique_keys: refuse an object that gives a key twice (JSON keeps the last one
            silently: in a file a person wrote, the first is then lost unseen).

    Raises:
        json.JSONDecodeError: the text is not JSON, or one of the two above, or holds an
            integer longer than Python reads, or (with `unique_keys`) a key twice
            (``msg`` says which).
    """
    try:
        value = json.loads(text, object_pairs_hook=_unique if unique_keys else None)
    except _DuplicateKey as exc:
        raise json.JSONDecodeError(f"key {exc.args[0]!r} given twice", _as_text(text),
                                   0) from None
    except RecursionError:
        raise json.JSONDecodeError("nested too deep", _as_text(text), 0) from None
    except json.JSONDecodeError:
        raise
    except UnicodeDecodeError:  # bytes that are not UTF-8
        raise json.JSONDecodeError("not UTF-8 text", _as_text(text), 0) from None
    except ValueError:  # an integer past Python's digit limit for str -> int
        raise json.JSONDecodeError("a number too long to read", _as_text(text), 0) from None
    pattern = _SURROGATE_ESCAPE if isinstance(text, str) else _SURROGATE_ESCAPE_BYTES
    if (found := pattern.search(text)) is not None:  # type: ignore[arg-type]  # rare
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise json.JSONDecodeError("a \\u escape leaves half a surrogate pair, which is "
                                       "not text", _as_text(text), found.start()) from None
    return value


class _DuplicateKey(Exception):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return value


def _as_text(text: str | bytes) -> str:
    return text if isinstance(text, str) else text.decode("utf-8", "replace")


def read_config_text(path: str | Path, what: str) -> str:
    """The text of `path`, or a `ConfigError` naming `what` when it is unreadable or empty."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a BOM (Notepad) is not data
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {str(path)!r}: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {what} {str(path)!r}: not UTF-8 text") from None
    if not text.strip():
        raise ConfigError(f"{what} {str(path)!r} is empty")
    return text


def check_writable(path: str | Path) -> Path:
    """Check, before any work, that `path` can be written; return it.

    A regular file (or a new one) must be creatable in its folder; a symlink is followed;
    a FIFO, a terminal or ``/dev/stdout`` is written directly.

    Raises:
        ConfigError: one line saying why `path` cannot be written.
    """
    target = Path(path)
    shown = str(path)
    try:
        if _special(target):
            if target.is_dir():
                raise ConfigError(f"cannot write {shown!r}: it is a folder")
            if not os.access(target, os.W_OK):
                raise ConfigError(f"cannot write {shown!r}: permission denied")
            return target  # a device, FIFO or /dev/stdout: written directly
        real = target.resolve()
        folder = real.parent
        if not folder.is_dir():
            raise ConfigError(f"cannot write {shown!r}: folder {str(target.parent)!r} "
                              "does not exist")
        # Try it: os.access says yes for root on read-only and virtual file systems.
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{real.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"cannot write {shown!r}: {exc.strerror or exc}") from None
    return target


def write_output(path: str | Path, text: str) -> None:
    """Write `text` to `path` so that no reader sees half a file and nothing is lost.

    A regular file (or a new one) is replaced atomically (`atomic_write`) keeping the
    old file's mode, or the umask's mode for a new one. A symlink is followed and its
    target replaced. A FIFO or device (``-o /dev/stdout``) is written directly.

    Raises:
        OSError: the write failed (the old file, if any, is unchanged).
    """
    if _special(Path(path)):
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return
    atomic_write(Path(path).resolve(), text)


def atomic_write(path: str | Path, text: str) -> None:
    """Replace `path` with `text` atomically: a temporary file in the same folder,
    fsync, rename. The old file's mode (and owner, for root) is kept; a new file gets
    the umask's mode.

    Raises:
        OSError: the write failed (the old file, if any, is unchanged).
    """
    real = Path(path)
    fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            if real.exists():
                st = real.stat()
                os.fchmod(f.fileno(), stat.S_IMODE(st.st_mode))
                with contextlib.suppress(OSError):  # only root may give files away
                    os.fchown(f.fileno(), st.st_uid, st.st_gid)
            else:
                os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, real)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_line(path: str | Path, line: str) -> None:
    """Append one line (a newline is added) and fsync, so that a crash after the call
    returns never loses it: the building block of crash-safe JSONL logs.

    Raises:
        ValueError: `line` contains a newline.
        OSError: the write failed.
    """
    if "\n" in line:
        raise ValueError("append_line writes one line: the text contains a newline")
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path, what: str = "file") -> Iterator[tuple[int, Any]]:
    """The JSON value of each non-blank line of a JSONL file, with its line number.

    Raises:
        ConfigError: the file is unreadable or not UTF-8, or a line is not JSON (naming
            the file and the line).
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a BOM (Notepad) is not data
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {what} {str(path)!r}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None
    for number, line in enumerate(json_lines(text), 1):
        if not line.strip():
            continue
        try:
            yield number, parse_json(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}, line {number}: not JSON ({exc.msg})") from None


def _special(path: Path) -> bool:
    """Whether `path` exists (symlinks followed) and is not a regular file."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
