"""Run uids handed out across processes: a lock file per uid, held for the whole run.

As root the sandbox runs each program under an unprivileged uid of its own, so that
the process limit counts that run alone and a sweep of the uid ends everything the run
left. Two redline processes (two CLI runs, two batch workers) must then never hold the
same uid: each uid has a lock file in one host-wide directory, and a run holds an
exclusive ``flock`` on it from before its program starts until none of the run's
processes is left. A uid is only ever swept by its holder: on taking it (leftovers of
a holder that died mid-run, which left "busy" in the file) and after every run that
may have left processes (all but a bubblewrap run that ended by itself: its PID
namespace's init ended and reaped them all before it exited).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import stat
import tempfile
import time

from redline.errors import FeedbackSourceError

__all__ = ["UidLease", "kill_uid", "lock_dir"]

log = logging.getLogger("redline.sandbox")

SPAN = 4096
"""Uids in the pool: ``base`` .. ``base + SPAN - 1``."""


def lock_dir() -> str:
    """The host-wide directory of uid lock files (made on first use, root's, 0700)."""
    for parent in ("/run", tempfile.gettempdir()):
        path = os.path.join(parent, "redline-uids")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError:
            continue
        info = os.lstat(path)
        # Never trust a directory (or a symlink) someone else made in a shared place.
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() \
                and not info.st_mode & 0o022:
            return path
    raise FeedbackSourceError("sandbox: no usable directory for uid locks "
                              "(/run/redline-uids or $TMPDIR/redline-uids)")


class UidLease:
    """An exclusive hold on one run uid (a context manager).

    Uids are tried from a random place round the span, so that a uid comes back only
    long after its last run (a fork bomb's killed processes may stay zombies until init
    reaps them, and would count against the next run's process limit).
    """

    def __init__(self, base: int) -> None:
        self.base = base
        self.uid: int | None = None
        self._fd: int | None = None

    def __enter__(self) -> int:
        import fcntl

        directory = lock_dir()
        start = random.randrange(SPAN)
        for i in range(SPAN):
            uid = self.base + (start + i) % SPAN
            fd = os.open(os.path.join(directory, str(uid)),
                         os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.uid, self._fd = uid, fd
            # A holder that died before its closing sweep left "busy" in the file: its
            # processes may still run, and are ours to end now. ("free": released
            # clean; empty: a uid never used since the lock directory was made.)
            if os.pread(fd, 4, 0) == b"busy":
                kill_uid(uid)
            os.pwrite(fd, b"busy", 0)
            return uid
        raise FeedbackSourceError(f"sandbox: all {SPAN} sandbox uids are in use")

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.pwrite(self._fd, b"free", 0)  # the caller swept the uid after its run
            os.close(self._fd)  # releases the lock
            self._fd = self.uid = None


def kill_uid(uid: int) -> None:
    """SIGKILL every process of `uid` (Linux; only call it for a uid you hold).

    Sweeps until a pass finds none alive: a fork bomb's survivors of one pass may fork
    again before their own SIGKILL lands.
    """
    if not os.path.isdir("/proc"):
        return
    for _ in range(200):
        if not _kill_once(uid):
            return
        time.sleep(0.005)
    log.warning("sandbox uid %d: processes still alive after 200 sweeps", uid)


def _kill_once(uid: int) -> int:
    """One sweep of /proc; the number of live (not zombie) processes of `uid` it saw."""
    alive = 0
    wanted = str(uid)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            # /proc/PID/status, not the directory's owner: a process that made itself
            # non-dumpable shows root as the owner of its /proc directory.
            with open(os.path.join(entry.path, "status"), "rb") as f:
                text = f.read(2048).decode("ascii", "replace")
            fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
            if wanted in fields["Uid"].split() and not fields["State"].strip().startswith("Z"):
                alive += 1
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, KeyError, ValueError):
            continue  # gone meanwhile
    return alive
