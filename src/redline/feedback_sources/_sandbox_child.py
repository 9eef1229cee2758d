"""The sandbox's child side: confine this process, then run ``main.py`` from the cwd.

`redline.feedback_sources.sandbox` copies this file into its base directory once and
starts each run with ``python -I -X utf8 -c "import it; it.main()" MODE MAIN UID
STATUS_FD CPU MEMORY FSIZE NPROC FDS COLLECT DONE`` (UID empty to keep the user, MEMORY 0 for
no limit, FDS the comma-separated fds the program keeps, COLLECT the newline-separated
files to send back, DONE empty or the fd of a pipe to say "1" on once the run is over:
bubblewrap mode), so that its bytecode is cached. Standard library only, and as few
imports as can be (``json`` alone would add 3 ms to every run): it runs before anything
else in the child and must not import redline. What it applied is reported (never
faked) as a Python literal line on the status fd before the untrusted code starts.

MODE ``bwrap``: bubblewrap made the namespaces and the filesystem (see ``_bwrap.py``).
This process, PID 1 of the run's PID namespace, copies the input files
(``/.redline-in``) into its working directory (a size-limited tmpfs) and forks: the
child switches to the run's uid (as root), sets the limits and runs the code; the
parent, which the code cannot signal (it stays root, or is the user namespace's),
reaps every process of the run until the code's ends, kills and reaps the rest, and
writes the code's wait status and the files asked for as a second literal line, then
"1" on the DONE pipe. When it exits, nothing of the run is left.

MODE ``ns`` (no bubblewrap): the namespaces by hand, through ``ctypes``:

1. Linux: new network namespace (no interface but a down loopback, so no network) and
   new mount namespace; as a non-root user inside a new user namespace.
2. With the mount namespace: the run directory is bind-mounted over ``/tmp`` and
   ``/dev/shm`` (and ``/var/tmp``), so every world-writable place the code can write is
   its own run directory; the cwd becomes ``/tmp``.
3. As root with ``uid`` set: ``/proc`` is mounted again with ``hidepid=2`` (other
   users' processes, their command lines and environments, are invisible); directories
   on the interpreter's paths that other users cannot enter (``/root`` when Python lives
   in ``/root/.pyenv``) are replaced, in this mount namespace only, by a tmpfs holding
   read-only bind mounts of what Python needs; then the process switches to that
   unprivileged uid and kills every other process of it (an earlier run's leftovers)
   now and again when the code ends.

Both modes then set the limits: core dumps off, CPU seconds, file size and, where the
kernel enforces it for this run alone, the process count with an address-space limit
of MEMORY / NPROC per process, so that the run as a whole holds MEMORY (without a
process limit, MEMORY applies to each process).
"""

import atexit
import os
import resource
import sys

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18


class _Libc:
    """unshare(2) and mount(2) through ctypes (``os.unshare`` needs Python 3.12)."""

    def __init__(self):
        import ctypes

        self.ctypes = ctypes
        self.libc = ctypes.CDLL(None, use_errno=True)

    def _check(self, result, what):
        if result != 0:
            err = self.ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def unshare(self, flags):
        self._check(self.libc.unshare(flags), "unshare")

    def mount(self, source, target, fstype, flags, data=None):
        def enc(s):
            return s.encode() if isinstance(s, str) else s
        self._check(self.libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)),
                    f"mount {target}")


def _blocked(paths):
    """Directories on `paths` that other users cannot enter: {closed dir: {child, ...}}.

    Returns None when that cannot be worked around: a closed directory below another
    one, or a needed directory that is itself closed.
    """
    found: dict[str, set[str]] = {}
    for path in paths:
        real = os.path.realpath(path)
        if not os.path.exists(real):
            continue
        parent, exposed = "/", False
        for part in real.split(os.sep)[1:]:
            child = os.path.join(parent, part)
            if not os.stat(parent).st_mode & 0o001:
                if exposed or parent == "/":
                    return None
                found.setdefault(parent, set()).add(child)
                exposed = True
            parent = child
        if os.path.isdir(real) and os.stat(real).st_mode & 0o005 != 0o005:
            return None
    return found


def _traversable(path):
    """True when other users can reach `path` (every directory down to it is o+x)."""
    current = "/"
    for part in os.path.realpath(path).split(os.sep)[1:]:
        current = os.path.join(current, part)
        if not os.stat(current).st_mode & 0o001:
            return False
    return True


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def confine(cfg):
    """Apply every step that this platform and user allow; return what was applied."""
    status: dict = {"network": False, "filesystem": False, "user": None, "processes": False,
              "backend": "namespaces" if sys.platform.startswith("linux") else "none",
              "pid": False, "disk": False, "notes": []}
    notes = status["notes"]
    root = os.geteuid() == 0
    uid = cfg.get("uid") if root else None
    run_dir = os.getcwd()
    libc = mounts = None
    if sys.platform.startswith("linux"):
        libc = _Libc()
        status["network"], mounts = _namespaces(libc, root, notes)
    else:
        notes.append(f"network: no network namespaces on {sys.platform}; the code can "
                     "reach the network")
    if uid is not None:
        blocked = _blocked([sys.executable, *(p for p in sys.path if p)])
        if not mounts and not _traversable(os.path.dirname(run_dir)):
            blocked = None  # without a mount namespace the run directory stays where it is
        if blocked and mounts:
            try:
                _expose(libc, blocked)
                blocked = {}
            except OSError as exc:
                notes.append(f"user: cannot open {', '.join(blocked)} to other users ({exc})")
        if blocked or blocked is None:
            notes.append("user: kept root: a directory Python needs is closed to other users")
            uid = None
    if mounts and uid is not None:
        try:
            libc.mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                       "hidepid=2")
        except OSError as exc:
            notes.append(f"pid: cannot hide other processes ({exc})")
    if mounts:
        status["filesystem"] = _own_tmp(libc, run_dir, notes)
    else:
        notes.append("filesystem: no mount namespace; the code can write wherever its "
                     "user may, not only in its run directory")
    if uid is not None:
        _switch_user(uid)
        status["user"] = uid
    notes.append("pid: no PID namespace: the code sees other processes"
                 + (" of its own uid only" if uid is not None else
                    ", their command lines included"))
    notes.append("disk: only each file's size is limited, not the run directory's")
    own = status["user"] is not None or (mounts and not root and _kernel() >= (5, 14))
    _limits(cfg, status, own)
    os.environ["HOME"] = os.environ["TMPDIR"] = os.getcwd()
    return status


def _limits(cfg, status, own_count):
    """Core, CPU, file size; process count and memory per process where the count is
    the run's alone (a uid of its own, or a user namespace counted apart)."""
    notes = status["notes"]
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_CPU, cfg["cpu"], cfg["cpu"] + 1)
    _limit(resource.RLIMIT_FSIZE, cfg["fsize"])
    if own_count:
        _limit(resource.RLIMIT_NPROC, cfg["nproc"])
        status["processes"] = True
    memory = cfg.get("memory")
    if memory:
        try:
            _limit(resource.RLIMIT_AS, memory // cfg["nproc"] if own_count else memory)
        except (ValueError, OSError) as exc:
            notes.append(f"memory: address-space limit refused ({exc})")
    if own_count:
        return
    if os.geteuid() == 0:
        notes.append("processes: not limited: the kernel exempts root from RLIMIT_NPROC "
                     "and the code runs as root")
    else:
        notes.append("processes: not limited: RLIMIT_NPROC would count every process of "
                     "this user, not only the sandbox's")
    if memory:
        notes.append("memory: limited per process, not for the run as a whole")


def _namespaces(libc, root, notes):
    """Enter new network and mount namespaces: (network isolated, mounts usable)."""
    real_uid, real_gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNS | CLONE_NEWNET if root else CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET
    try:
        libc.unshare(flags)
    except OSError as exc:
        notes.append(f"network: new namespaces refused ({exc.strerror}); the code can "
                     "reach the network")
        return False, False
    try:
        if not root:
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"{real_uid} {real_uid} 1")
            _write("/proc/self/gid_map", f"{real_gid} {real_gid} 1")
        libc.mount("none", "/", None, MS_REC | MS_PRIVATE)  # nothing propagates out
    except OSError as exc:
        notes.append(f"filesystem: the mount namespace is unusable ({exc})")
        return True, False
    return True, True


def _own_tmp(libc, run_dir, notes):
    """Bind the run directory over /tmp, /var/tmp and /dev/shm, and move into /tmp."""
    targets = []
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        real = os.path.realpath(d)
        if os.path.isdir(real) and real not in targets:
            targets.append(real)
    keep = os.open(run_dir, os.O_PATH)  # its path may be hidden once /tmp is covered
    try:
        for target in targets:
            libc.mount(f"/proc/self/fd/{keep}", target, None, MS_BIND)
    except OSError as exc:
        notes.append(f"filesystem: cannot cover {target} ({exc})")
        return False
    finally:
        os.close(keep)
    if targets:
        os.chdir(targets[0])
    return bool(targets)


def _switch_user(uid, sweep=True):
    """Become `uid` (from root), owning the run directory, with no leftovers of it."""
    _chown_tree(".", uid)  # the cwd is the run directory, wherever it is mounted
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if sweep:
        _kill_all_of_uid()  # an earlier run's leftovers: the uid is ours alone now
        atexit.register(_kill_all_of_uid, os.getpid())  # and the code's own, when it ends


def _chown_tree(path, uid):
    os.chown(path, uid, uid, follow_symlinks=False)
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            _chown_tree(entry.path, uid)
        else:
            os.chown(entry.path, uid, uid, follow_symlinks=False)


def _expose(libc, blocked):
    """Replace each closed directory by a tmpfs holding read-only binds of its needed
    children (in this mount namespace only)."""
    fds = {child: os.open(child, os.O_PATH) for children in blocked.values()
           for child in children}
    for closed, children in blocked.items():
        libc.mount("tmpfs", closed, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=64k")
        for child in sorted(children):
            if os.path.isdir(f"/proc/self/fd/{fds[child]}"):
                os.mkdir(child)
            else:
                open(child, "w").close()  # a file to mount the file on
            libc.mount(f"/proc/self/fd/{fds[child]}", child, None, MS_BIND | MS_REC)
            libc.mount(None, child, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID)
    for fd in fds.values():
        os.close(fd)


def _kill_all_of_uid(only_in=None):
    if only_in is not None and os.getpid() != only_in:
        return  # a forked child of the code exiting: not the end of the run
    try:
        os.kill(-1, 9)  # every process of this uid but this one
    except ProcessLookupError:
        pass


def _limit(kind, soft, hard=None):
    resource.setrlimit(kind, (soft, soft if hard is None else hard))


def _kernel():
    try:
        return tuple(int(x) for x in os.uname().release.split("-")[0].split(".")[:2])
    except ValueError:
        return (0, 0)


def run_main(path):
    """Run ``path`` as ``__main__``, with tracebacks that start at the user's code."""
    import builtins
    import types

    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__dict__["__builtins__"] = builtins  # the same (typeshed's ModuleType lacks it)
    sys.modules["__main__"] = module
    sys.argv = [path]
    sys.path.insert(0, os.getcwd())
    with open(path, "rb") as f:
        source = f.read()
    try:
        exec(compile(source, path, "exec"), module.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:
        import traceback

        tb = exc.__traceback__  # never None for a caught exception
        tb = tb.tb_next if tb is not None and not isinstance(exc, SyntaxError) else None
        traceback.print_exception(type(exc), exc, tb)
        sys.exit(1)


def by_bwrap(cfg):
    """MODE bwrap: copy the inputs, fork; the child is confined and returned to run the
    code, the parent waits, reports and exits (it never returns)."""
    inputs = _read_tree("/.redline-in", "")  # read as root; written as the run's uid
    root = os.geteuid() == 0
    status: dict = {"network": True, "filesystem": True, "user": None, "processes": False,
              "backend": "bubblewrap", "pid": True, "disk": True, "notes": []}
    pid = os.fork()
    if pid == 0:
        if cfg["done_fd"] is not None:
            os.close(cfg["done_fd"])  # the parent's alone: the code cannot say "done"
        uid = cfg.get("uid") if root else None
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)  # no sweep: the PID namespace holds only this run
            status["user"] = uid
        elif root:
            status["notes"].append("user: kept root (no uid was given)")
        for name, data in inputs:
            if data is None:
                os.mkdir(name)
            else:
                with open(name, "wb") as f:
                    f.write(data)
        _limits(cfg, status, status["user"] is not None or (not root and _kernel() >= (5, 14)))
        os.environ.pop("PWD", None)  # bwrap's --chdir sets it: the environment stays as given
        os.environ["HOME"] = os.environ["TMPDIR"] = os.getcwd()
        return status
    for fd in cfg["fds"]:
        os.close(fd)  # the other end sees the end of the pipe when the code's side ends
    # This process is the PID namespace's init (bwrap --as-pid-1): every orphan of the
    # run comes to it. Reap them as they die until the code's process ends, then kill
    # what is left (a daemon) and reap that too: when this process exits, nothing of
    # the run is left alive, so that the caller needs no sweep of the run's uid.
    wait_status = None
    while wait_status is None:
        try:
            done, waited = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if done == pid:
            wait_status = waited
    try:
        os.kill(-1, 9)  # every process of the namespace but this one
        while True:
            os.waitpid(-1, 0)
    except ChildProcessError:
        pass  # all reaped
    except OSError:
        pass  # the kill was refused: this process's exit ends the namespace instead
    files = {}
    inside = os.path.realpath(".") + os.sep
    for name in cfg["collect"]:
        try:
            # The code may have left symlinks: never read outside its directory.
            if os.path.realpath(name).startswith(inside) and os.path.isfile(name):
                with open(name, "rb") as f:
                    files[name] = f.read(cfg["fsize"]).decode("utf-8", "replace")
        except OSError:
            continue
    os.write(cfg["status_fd"], ("\n" + repr({"wait": wait_status, "files": files})).encode())
    if cfg["done_fd"] is not None:
        # Every process of the run is reaped and the record written: the caller may
        # take the result now, without waiting for the namespaces to be torn down.
        os.write(cfg["done_fd"], b"1")
    os._exit(0)


def _read_tree(source, prefix):
    """[(relative path, bytes or None for a directory)], parents first."""
    found: list[tuple[str, bytes | None]] = []
    for entry in os.scandir(source):
        path = os.path.join(prefix, entry.name)
        if entry.is_dir(follow_symlinks=False):
            found.append((path, None))
            found += _read_tree(entry.path, path)
        elif entry.is_file(follow_symlinks=False):
            with open(entry.path, "rb") as f:
                found.append((path, f.read()))
    return found


def main():
    """Confine this process as the arguments say, report it, and run the code."""
    sys.dont_write_bytecode = True  # the code's imports leave no .pyc behind (as -B)
    mode, main_file, uid, status_fd, cpu, memory, fsize, nproc, fds, collect, done = \
        sys.argv[1:12]
    cfg = {"uid": int(uid) if uid else None, "cpu": int(cpu), "memory": int(memory),
           "fsize": int(fsize), "nproc": int(nproc), "status_fd": int(status_fd),
           "fds": [int(x) for x in fds.split(",") if x],
           "collect": [x for x in collect.split("\n") if x],
           "done_fd": int(done) if done else None}
    status = by_bwrap(cfg) if mode == "bwrap" else confine(cfg)
    os.write(int(status_fd), repr(status).encode())
    os.close(int(status_fd))
    run_main(main_file)


if __name__ == "__main__":
    main()
