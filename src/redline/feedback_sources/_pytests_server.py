"""The candidate's side of a test run: load ``solution.py`` and answer the harness.

Runs in a sandbox of its own as ``main.py`` (after ``_wire.py``'s source), with two pipe
fds named in ``server.json``: requests from the harness and replies to it. It loads the
code as the module ``solution``, sends a hello (how loading went and the module's names
as data), then answers each request — call, attribute, item, len, iter, next, bool,
contains on an object it holds — with the result as data (see ``_wire.py``), the
exception it raised, or a timeout, plus what the code printed meanwhile.

Nothing here decides a verdict: the harness, another process, does. What this side
checks is whether the code touched the machinery (replaced builtins, or this module's
functions) and says so in every reply (``tamper``); a candidate that forges this module
entirely can still only send data, which the harness judges.
"""

import builtins
import io
import signal
import sys
import types

# traceback is imported on a failure only: an import is milliseconds of every start.

with open("server.json", encoding="utf-8") as _f:
    CONFIG = json.loads(_f.read())  # noqa: F821 (json comes with _wire.py's source)
REQUESTS, REPLIES = CONFIG["fds"]
TIMEOUT = CONFIG["test_timeout"]
OBJECTS = {}


class _Timeout(BaseException):
    """A call ran past its time (BaseException: the code's ``except Exception`` misses it)."""


def _alarm(signum, frame):
    raise _Timeout


def ref(value):
    OBJECTS[id(value)] = value
    return id(value)


def describe(exc):
    """The traceback from the code's frames on, trimmed to its end."""
    import traceback

    te = traceback.TracebackException.from_exception(exc, limit=30)
    te.stack = traceback.StackSummary.from_list(
        [f for f in te.stack if f.filename != "main.py"])
    text = "".join(te.format()).strip()
    if not te.stack:
        text = "".join(te.format_exception_only()).strip()
    return text if len(text) <= 2000 else "..." + text[-2000:]


def snapshot():
    return ({k: id(v) for k, v in vars(builtins).items()},
            {k: id(v) for k, v in globals().items() if k not in ("SNAPSHOT", "_f")})


def tampered():
    """What the code replaced of the builtins or of this module (names)."""
    now = snapshot()
    found = []
    for label, before, after in (("builtins", SNAPSHOT[0], now[0]),
                                 ("the test server", SNAPSHOT[1], now[1])):
        changed = sorted(k for k in before if after.get(k) != before[k])
        if changed:
            found.append(f"replaced {', '.join(changed[:8])} of {label}")
    return found


def guarded(fn, *args):
    """Run `fn(*args)` under the call timer, capturing what it prints."""
    out = io.StringIO()
    saved = sys.stdout
    sys.stdout = out
    signal.setitimer(signal.ITIMER_REAL, TIMEOUT)
    try:
        return fn(*args), out
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.stdout = saved


def reply(message, out=None):
    if out is not None:
        message["stdout"] = out.getvalue()[-20000:]
    problems = tampered()
    if problems:
        message["tamper"] = problems
    send(REPLIES, message)  # noqa: F821


def answer(request):
    op, target = request.get("op"), OBJECTS.get(request.get("ref"))
    args = [decode(a, lambda i, r, t: OBJECTS[i]) for a in request.get("args", [])]  # noqa: F821
    kwargs = {k: decode(v, lambda i, r, t: OBJECTS[i])  # noqa: F821
              for k, v in request.get("kwargs", {}).items()}
    ops = {"call": lambda: target(*args, **kwargs),
           "getattr": lambda: getattr(target, args[0]),
           "getitem": lambda: target[args[0]],
           "len": lambda: len(target),
           "iter": lambda: iter(target),
           "next": lambda: next(target),
           "bool": lambda: bool(target),
           "contains": lambda: args[0] in target}
    return ops[op]()


def serve():
    reader = Reader(REQUESTS)  # noqa: F821
    while True:
        request = reader.read()
        if request is None:
            return
        out = None
        try:
            value, out = guarded(answer, request)
            data, _ = guarded(encode, value, ref)  # noqa: F821 (a __repr__ runs: timed)
            message = {"id": request["id"], "value": data}
        except _Timeout:
            message = {"id": request["id"], "timeout": True}
        except BaseException as exc:  # the code's failure is the answer
            message = {"id": request["id"], "error": error(exc)}
        reply(message, out)


def error(exc):
    kind = type(exc)
    builtin = getattr(builtins, kind.__name__, None) is kind
    try:
        text = str(exc)
    except BaseException:
        text = ""
    return {"type": kind.__name__, "builtin": builtin, "message": text[:4000],
            "traceback": describe(exc)}


def load():
    with open("solution.py", "rb") as f:
        source = f.read()
    try:
        code = compile(source, "solution.py", "exec")
    except (SyntaxError, ValueError) as exc:
        import traceback

        return {"load": "syntax",
                "detail": "".join(traceback.format_exception_only(exc)).strip()}, None
    module = types.ModuleType("solution")
    module.__file__ = "solution.py"
    sys.modules["solution"] = module
    try:
        _, out = guarded(exec, code, module.__dict__)
    except _Timeout:
        return {"load": "timeout", "detail": f"timed out after {TIMEOUT:g} s"}, None
    except BaseException as exc:  # the code's failure is the outcome
        return {"load": "error", "detail": describe(exc)}, None
    public = {k: v for k, v in vars(module).items()
              if not (k.startswith("__") and k.endswith("__"))}
    try:
        names, _ = guarded(encode, public, ref)  # noqa: F821
    except BaseException as exc:
        return {"load": "error", "detail": describe(exc)}, None
    return {"load": "ok", "names": names}, out


signal.signal(signal.SIGALRM, _alarm)
sys.path.insert(0, ".")
SNAPSHOT = snapshot()
_hello, _out = load()
reply({"id": 0, **_hello}, _out)
serve()
