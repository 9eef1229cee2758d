"""The files of a sandbox run on the host side: its inputs, its output and status files
(without names: nothing to remove), what it leaves, and their removal
(`redline.feedback_sources.sandbox`)."""

from __future__ import annotations

import ast
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from redline.errors import ConfigError
from redline.feedback_sources._uids import kill_uid

__all__ = ["anonymous_file", "check_names", "cleanup", "collect", "final_record", "read_all",
           "tail", "write_files"]

log = logging.getLogger("redline.sandbox")


def final_record(lines: list[str]) -> dict | None:
    """The bootstrap's closing record (bubblewrap mode), when it wrote one whole."""
    for line in lines:
        try:
            record = ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            continue
        if isinstance(record, dict) and isinstance(record.get("wait"), int) \
                and isinstance(record.get("files"), dict):
            return record
    return None


def check_names(files: Mapping[str, str | bytes]) -> None:
    """Raise ConfigError for a file name that is not relative or climbs out ('..')."""
    for name in files:
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise ConfigError(f"sandbox file name {name!r} must be relative, without '..'")


def write_files(run_dir: str, files: Mapping[str, str | bytes]) -> None:
    check_names(files)
    for name, content in files.items():
        path = Path(run_dir, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode("utf-8") if isinstance(content, str) else content
        path.write_bytes(data)


def anonymous_file(directory: str, mode: int = 0o600) -> int:
    """A read-write fd of a new file without a name in `directory` (nothing to remove
    afterwards), of permissions `mode` (what a reopening through ``/proc/self/fd``,
    as ``/dev/stdout`` does, is checked against)."""
    if hasattr(os, "O_TMPFILE"):
        try:
            fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, mode)
            os.fchmod(fd, mode)  # past the umask
            return fd
        except OSError:
            pass  # a file system without it
    fd, path = tempfile.mkstemp(dir=directory)
    os.unlink(path)
    os.fchmod(fd, mode)
    return fd


def read_all(fd: int) -> bytes:
    """Everything in the file `fd`, read from its start."""
    chunks, offset = [], 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def tail(fd: int, size: int) -> tuple[str, int]:
    """The last `size` bytes of the file `fd` as text, and its whole size."""
    total = os.fstat(fd).st_size
    start = max(0, total - size)
    return os.pread(fd, total - start, start).decode("utf-8", errors="replace"), total


def collect(run_dir: str, names: tuple[str, ...], limit: int) -> dict[str, str]:
    found = {}
    inside = os.path.realpath(run_dir) + os.sep
    for name in names:
        path = os.path.join(run_dir, name)
        # The code may have left symlinks: never read outside its run directory.
        if os.path.realpath(path).startswith(inside) and os.path.isfile(path):
            with open(path, "rb") as f:
                found[name] = f.read(limit).decode("utf-8", errors="replace")
    return found


def cleanup(run_dir: str | None, uid: int | None) -> None:
    """End what is left of a run (its uid's processes, when it had one; the caller holds
    the uid) and remove its run directory (when it had one on the host)."""
    if uid is not None:
        kill_uid(uid)
    if run_dir is None:
        return

    def writable(function: object, path: str, _exc: object) -> None:
        # Code may leave read-only directories (a problem when not root): make the
        # parent writable and retry. Never chmod through a symlink.
        os.chmod(os.path.dirname(path), 0o700)
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
        else:
            os.chmod(path, 0o700)
            shutil.rmtree(path, ignore_errors=True)

    try:
        shutil.rmtree(run_dir, onerror=writable)
    except OSError as exc:  # a leftover directory must not hide the run's result
        log.warning("sandbox: could not remove run directory %s: %s", run_dir, exc)
