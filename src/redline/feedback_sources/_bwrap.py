"""The bubblewrap command line of a sandbox run (``bwrap``, the sandbox Flatpak uses).

One call gives the run new PID, network, IPC, UTS and mount namespaces: a fresh
``/proc`` that shows the run's processes only (no other command line or environment on
the host is readable), no network interface but a down loopback, and a root that is an
empty tmpfs holding read-only binds of ``/usr`` (and the ``/bin``, ``/lib*`` links or
directories), a copy of a few files of ``/etc`` (made once per sandbox), the
interpreter's own directories (its prefix and ``sys.path``, never the home directory
they may live in), the sandbox's bootstrap and the run's input files (copied by bwrap
from file descriptors into a directory only root may enter), then remounted read-only.
The only writable places are ``/tmp`` (the run's working directory) and ``/dev/shm``:
size-limited tmpfs mounts, so the disk the run may fill is bounded as a whole.
``--die-with-parent`` ends the run if redline dies and ``--new-session`` takes the
terminal away. The sandbox's bootstrap is the namespace's PID 1 (``--as-pid-1``): it
reaps the run's processes, and ends and reaps all that are left once the code's own
process has exited, so that when bwrap exits by itself nothing of the run is alive
(bwrap's own init would report the exit before the namespace is empty).

The options go to bwrap through a file descriptor (``--args``), not its command line,
which stays short: should bwrap's process be visible in the run (its own init is,
without ``--as-pid-1``), nothing of the host's paths is readable there.

As root, bwrap runs privileged (no user namespace) and keeps only ``CAP_SETUID``,
``CAP_SETGID`` and ``CAP_KILL`` for the bootstrap, which switches to the run's own uid
(losing them all) before any untrusted code runs; otherwise bwrap makes a user
namespace and the run keeps the caller's uid.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Mapping

__all__ = ["args_fd", "bwrap_options", "bwrap_path", "input_args", "prepare_etc", "probe",
           "python_dirs"]

_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group",
        "nsswitch.conf", "host.conf", "hosts", "mime.types")
_ROOT_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_DEVICES = ("null", "zero", "random", "urandom")
_DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
              ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))
IN = "/.redline-in"
"""Where the run's input files are inside (copied there by bwrap; root's alone)."""
LIB = "/.redline-lib"
"""Where the sandbox's bootstrap is seen inside."""

_probes: dict[tuple[str, str, bool], tuple[str | None, str]] = {}
_probe_lock = threading.Lock()


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


def prepare_etc(target: str) -> None:
    """Copy the few files of ``/etc`` a run may need into `target` (one bind, not ten:
    each bind costs bwrap a read of the mount table)."""
    os.mkdir(target, 0o755)
    for name in _ETC:
        source = os.path.join("/etc", name)
        try:
            if os.path.isdir(source):
                shutil.copytree(source, os.path.join(target, name))
            elif os.path.isfile(source):
                shutil.copyfile(source, os.path.join(target, name))
        except OSError:
            continue  # unreadable: the run goes without it
    for root, dirs, names in os.walk(target):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
        for name in names:
            os.chmod(os.path.join(root, name), 0o644)


@functools.lru_cache(maxsize=64)
def bwrap_options(python: str, lib_dir: str, etc_dir: str, disk_bytes: int,
                  as_root: bool) -> tuple[str, ...]:
    """The bwrap options shared by every run of a sandbox (the input files' options and
    the command follow them)."""
    if as_root:
        # Privileged mode: no user namespace (the bootstrap's uid switch needs the real
        # uids), every capability dropped but the two the switch needs and the one its
        # closing kill of the run's processes needs (all lost with the switch: the code
        # has none).
        args = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                "--unshare-cgroup-try", "--cap-drop", "ALL", "--cap-add", "CAP_SETUID",
                "--cap-add", "CAP_SETGID", "--cap-add", "CAP_KILL"]
    else:
        args = ["--unshare-all"]
    # The bootstrap is the namespace's init (--as-pid-1): it reaps the run's processes
    # and ends them all before it exits, so bwrap's own exit means none is left.
    args += ["--as-pid-1", "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr"]
    for name in _ROOT_DIRS:
        path = "/" + name
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    shm = max(disk_bytes // 8, 1 << 20)
    # A /dev of the few devices Python uses (bwrap's --dev would bind six and mount
    # devpts: a pseudo-terminal is no use here, and each mount costs time).
    args += ["--ro-bind", etc_dir, "/etc", "--proc", "/proc", "--tmpfs", "/dev"]
    for name in _DEVICES:
        args += ["--dev-bind", f"/dev/{name}", f"/dev/{name}"]
    for name, target in _DEV_LINKS:
        args += ["--symlink", target, f"/dev/{name}"]
    args += [
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
    args += ["--ro-bind", lib_dir, LIB, "--chdir", "/tmp"]
    return tuple(args)


def args_fd(options: tuple[str, ...], extra: list[str]) -> int:
    """A file descriptor holding the options for one run (``--args FD``), read from
    the start; the caller closes it once bwrap has started."""
    data = b"".join(a.encode() + b"\0" for a in (*options, *extra, "--remount-ro", "/"))
    return _data_fd(data, "redline-bwrap-args")


def input_args(files: Mapping[str, str | bytes]) -> tuple[list[str], list[int]]:
    """The options that put `files` (relative names, checked) in ``IN`` inside, where
    only root may read them, and the fds they name (the caller closes them once bwrap
    has started: bwrap copies each into the run's root and closes its own)."""
    args = ["--perms", "0700", "--dir", IN]
    fds: list[int] = []
    made = {IN}
    try:
        for name, content in files.items():
            path = f"{IN}/{name}"
            parts = path.split("/")
            for i in range(3, len(parts)):
                parent = "/".join(parts[:i])
                if parent not in made:
                    made.add(parent)
                    args += ["--perms", "0700", "--dir", parent]
            data = content.encode("utf-8") if isinstance(content, str) else content
            fds.append(_data_fd(data, "redline-input"))
            args += ["--perms", "0600", "--file", str(fds[-1]), path]
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return args, fds


def _data_fd(data: bytes, name: str) -> int:
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
        return fd
    read, write = os.pipe()  # small data only: the options (far below a pipe's buffer)
    os.write(write, data)
    os.close(write)
    return read


def probe(python: str, lib_dir: str, etc_dir: str) -> tuple[str | None, str]:
    """Whether bubblewrap works here for `python`: (its path or None, why not).

    Asked once per interpreter and user in this process (every sandbox shares the
    answer); concurrent first runs wait for the one probe.
    """
    key = (python, bwrap_path() or "", os.geteuid() == 0)
    with _probe_lock:
        if key not in _probes:
            _probes[key] = _probe(python, lib_dir, etc_dir)
        return _probes[key]


def _probe(python: str, lib_dir: str, etc_dir: str) -> tuple[str | None, str]:
    path = bwrap_path()
    if path is None:
        return None, ("bubblewrap: bwrap is not installed (apt-get install bubblewrap); "
                      "namespaces made by hand instead")
    fd = None
    try:
        options = bwrap_options(python, lib_dir, etc_dir, 1 << 20, os.geteuid() == 0)
        fd = args_fd(options, [])
        done = subprocess.run([path, "--args", str(fd), "--", python, "-I", "-c", "pass"],
                              capture_output=True, text=True, timeout=60, pass_fds=(fd,))
        if done.returncode == 0:
            return path, ""
        why = done.stderr.strip()[-300:] or f"exit {done.returncode}"
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        why = str(exc)
    finally:
        if fd is not None:
            os.close(fd)
    return None, f"bubblewrap: bwrap failed here ({why}); namespaces made by hand instead"
