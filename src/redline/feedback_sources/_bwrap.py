"""The bubblewrap command line of a sandbox run (``bwrap``, the sandbox Flatpak uses).

One call gives the run new PID, network, IPC, UTS and mount namespaces: a fresh
``/proc`` that shows the run's processes only (no other command line or environment on
the host is readable), no network interface but a down loopback, and a root that is an
empty tmpfs holding read-only binds of ``/usr`` (and the ``/bin``, ``/lib*`` links or
directories), a few files of ``/etc``, the interpreter's own directories (its prefix
and ``sys.path``, never the home directory they may live in) and the sandbox's
bootstrap, then remounted read-only. The only writable places are ``/tmp`` (the run's
working directory) and ``/dev/shm``: size-limited tmpfs mounts, so the disk the run
may fill is bounded as a whole. ``--die-with-parent`` ends the run if redline dies and
``--new-session`` takes the terminal away; when the run's first process exits, the
PID namespace ends and every process of the run with it.

As root, bwrap runs privileged (no user namespace) and keeps only ``CAP_SETUID`` and
``CAP_SETGID`` for the bootstrap, which switches to the run's own uid before any
untrusted code runs; otherwise bwrap makes a user namespace and the run keeps the
caller's uid.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess

__all__ = ["bwrap_command", "bwrap_path", "python_dirs"]

_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group",
        "nsswitch.conf", "host.conf", "hosts", "mime.types")
_ROOT_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
IN = "/.redline-in"
"""Where the run directory prepared by redline is seen (read-only) inside."""
LIB = "/.redline-lib"
"""Where the sandbox's bootstrap is seen inside."""


def bwrap_path() -> str | None:
    """The ``bwrap`` executable, or None when it is not installed."""
    return shutil.which("bwrap")


@functools.cache
def python_dirs(python: str) -> tuple[str, ...]:
    """The directories interpreter `python` needs: prefixes and ``sys.path``, resolved,
    without the ones inside another or under ``/usr`` (bound whole anyway)."""
    # Asked of the interpreter as the sandbox starts it (-I), not read from this
    # process, whose sys.path holds whatever its own start added (a test runner's dirs).
    code = ("import json, sys; print(json.dumps([sys.prefix, sys.exec_prefix, "
            "sys.base_prefix, sys.base_exec_prefix, *sys.path]))")
    done = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    info = json.loads(done.stdout)
    home = os.path.realpath(os.path.expanduser("~"))
    found: list[str] = [os.path.dirname(os.path.realpath(python))]
    for path in info:
        if not path:
            continue  # the current directory: the run's own
        real = os.path.realpath(path)
        if not os.path.isdir(real):
            real = os.path.dirname(real)  # a zip file on sys.path
        if os.path.isdir(real) and real not in ("/", home) and real != "/tmp":
            found.append(real)
    kept: list[str] = []
    for path in sorted(set(found), key=len):
        if path == "/usr" or path.startswith("/usr/") or any(
                path == k or path.startswith(k + "/") for k in kept):
            continue
        kept.append(path)
    return tuple(kept)


def bwrap_command(bwrap: str, *, python: str, run_dir: str, lib_dir: str,
                  disk_bytes: int, as_root: bool) -> list[str]:
    """The ``bwrap`` arguments for one run, up to and including ``--``."""
    if as_root:
        # Privileged mode: no user namespace (the bootstrap's uid switch needs the real
        # uids), every capability dropped but the two the switch needs.
        args = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                "--unshare-cgroup-try", "--cap-drop", "ALL", "--cap-add", "CAP_SETUID",
                "--cap-add", "CAP_SETGID"]
    else:
        args = [bwrap, "--unshare-all"]
    args += ["--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr"]
    for name in _ROOT_DIRS:
        path = "/" + name
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for name in _ETC:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    shm = max(disk_bytes // 8, 1 << 20)
    args += ["--proc", "/proc", "--dev", "/dev",
             "--perms", "1777", "--size", str(max(disk_bytes - shm, 1 << 20)),
             "--tmpfs", "/tmp",
             "--perms", "1777", "--size", str(shm), "--tmpfs", "/dev/shm"]
    made: set[str] = set()
    for path in python_dirs(python):
        # Their parents are made open to all (bwrap would copy a closed /root's mode):
        # the run's uid must walk down to what is bound, and sees nothing else there.
        parts = path.strip("/").split("/")[:-1]
        for i in range(len(parts)):
            parent = "/" + "/".join(parts[:i + 1])
            if parent not in made:
                made.add(parent)
                args += ["--perms", "0755", "--dir", parent]
        args += ["--ro-bind", path, path]
    args += ["--ro-bind", lib_dir, LIB, "--ro-bind", run_dir, IN,
             "--chdir", "/tmp", "--remount-ro", "/", "--"]
    return args
