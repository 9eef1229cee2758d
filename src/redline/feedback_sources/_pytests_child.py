"""The test harness (the sandbox's ``main.py``, after ``_wire.py``'s source).

Standard library only. The candidate's code runs in another sandboxed process (the
server, ``_pytests_server.py``); this one holds the tests and decides every verdict.
The candidate's module-level names are bound here as data (plain values) or as
`Remote` references whose calls, attributes and iteration are requests over the pipe,
answered with data. So ``assert add(2, 3) == 5`` calls ``add`` in the candidate's
process, gets ``5`` back as a plain ``int`` built here, and compares it here. Steps of
``plan.json`` run in order against ``tests.py`` (or doctest examples), each under its
own timer; one JSON line per outcome goes to the results fd (which only this process
holds) as it goes, so what finished is known even if the run is killed.
"""

import ast
import builtins
import functools
import itertools
import re
import signal
import sys
import types

# inspect and traceback are imported where needed (tests that are functions, failures):
# each import is milliseconds of every run's start.

HARNESS = "main.py"


class _Timeout(BaseException):
    """A test ran past its time (BaseException: code's ``except Exception`` misses it)."""


def _alarm(signum, frame):
    raise _Timeout


with open("plan.json", encoding="utf-8") as f:
    PLAN = json.load(f)  # noqa: F821 (json comes with _wire.py's source)
REQUESTS, REPLIES, RESULTS = PLAN["fds"]


def emit(**record):
    send(RESULTS, record)  # noqa: F821 (from _wire.py's source)


class CandidateGone(BaseException):
    """The candidate's process ended, hung or broke the protocol: no more calls."""


class CandidateError(Exception):
    """An exception of the candidate's code whose type is not a builtin one."""


_ERROR_TYPES = {}


class Link:
    """The pipe to the candidate's process: one request at a time, replies by id."""

    def __init__(self):
        self.reader = Reader(REPLIES)  # noqa: F821
        self.next_id = 1
        self.dead = None
        self.tamper = []

    def receive(self, want):
        while True:
            try:
                message = self.reader.read()
            except ProtocolError as exc:  # noqa: F821
                self.fail(f"the code's process sent malformed data ({exc})", tamper=True)
            except OSError as exc:
                self.fail(f"the pipe to the code's process broke ({exc})")
            if message is None:
                self.fail("the code's process ended while being tested", gone=True)
            if type(message.get("id")) is not int or message["id"] > want:
                self.fail("the code's process sent a reply nobody asked for", tamper=True)
            for problem in message.get("tamper") or []:
                if str(problem) not in self.tamper:
                    self.tamper.append(str(problem))
                    emit(event="tamper", detail=str(problem))
            if message["id"] == want:
                return message

    def fail(self, why, tamper=False, gone=False):
        if self.dead is None:
            self.dead = why
            if tamper:
                emit(event="tamper", detail=why)
            if gone:
                emit(event="gone", detail=why)
        raise CandidateGone(why)

    def request(self, op, ref, args=(), kwargs=None):
        if self.dead is not None:
            raise CandidateGone(self.dead)
        message = {"id": self.next_id, "op": op, "ref": ref,
                   "args": [encode(a, local) for a in args],  # noqa: F821
                   "kwargs": {str(k): encode(v, local)  # noqa: F821
                              for k, v in (kwargs or {}).items()}}
        self.next_id += 1
        try:
            send(REQUESTS, message)  # noqa: F821
        except OSError as exc:
            self.fail(f"the code's process stopped listening ({exc})", gone=True)
        answer = self.receive(message["id"])
        text = answer.get("stdout")
        if type(text) is str and text:
            sys.stdout.write(text)
        if answer.get("timeout"):
            raise _Timeout
        if "error" in answer:
            raise remote_error(answer["error"])
        if "value" not in answer:
            self.fail("the code's process sent a reply without a value", tamper=True)
        try:
            return decode(answer["value"], remote)  # noqa: F821
        except ProtocolError as exc:  # noqa: F821
            self.fail(f"the code's process sent malformed data ({exc})", tamper=True)


def local(value):
    """What is not plain data here cannot be sent, except the candidate's own objects."""
    if isinstance(value, Remote):
        return object.__getattribute__(value, "_id")
    raise TypeError(f"a {type(value).__name__} cannot be passed to the code under test "
                    "(only plain data crosses into its sandbox)")


def remote_error(data):
    """The exception the candidate's code raised, rebuilt here from data."""
    if type(data) is not dict:
        data = {}
    name, message = str(data.get("type", "Exception")), str(data.get("message", ""))
    kind = getattr(builtins, name, None)
    if not (data.get("builtin") is True and isinstance(kind, type)
            and issubclass(kind, BaseException)) or issubclass(
                kind, (SystemExit, KeyboardInterrupt, GeneratorExit)):
        kind = _ERROR_TYPES.get(name)
        if kind is None:
            kind = _ERROR_TYPES[name] = type(name if name.isidentifier() else "Error",
                                             (CandidateError,), {"__module__": "solution"})
    try:
        exc = kind(message) if message else kind()
    except Exception:
        exc = CandidateError(f"{name}: {message}")
    if data.get("traceback"):
        exc.add_note("In the code under test:\n" + str(data["traceback"])[-2000:])
    return exc


class Remote:
    """An object of the candidate's process: its repr, and requests for the rest.

    It equals nothing but itself: comparisons need data.
    """

    __slots__ = ("_id", "_repr", "_type")

    def __repr__(self):
        return object.__getattribute__(self, "_repr")

    def _ask(self, op, *args, **kwargs):
        return LINK.request(op, object.__getattribute__(self, "_id"), args, kwargs)

    def __call__(self, *args, **kwargs):
        return Remote._ask(self, "call", *args, **kwargs)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return Remote._ask(self, "getattr", name)

    def __getitem__(self, key):
        return Remote._ask(self, "getitem", key)

    def __len__(self):
        return Remote._ask(self, "len")

    def __iter__(self):
        return Remote._ask(self, "iter")

    def __next__(self):
        return Remote._ask(self, "next")

    def __bool__(self):
        return Remote._ask(self, "bool") is True

    def __contains__(self, item):
        return Remote._ask(self, "contains", item) is True


def remote(ref_id, text, type_name):
    value = object.__new__(Remote)
    object.__setattr__(value, "_id", ref_id)
    object.__setattr__(value, "_repr", text)
    object.__setattr__(value, "_type", type_name)
    return value


def timed(fn, *args):
    signal.setitimer(signal.ITIMER_REAL, PLAN["test_timeout"])
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def describe(exc, limit=2000):
    """The traceback without the harness's frames, trimmed to its end."""
    if isinstance(exc, CandidateGone):
        return f"did not run: {exc}"
    if isinstance(exc, _Timeout):
        return f"timed out after {PLAN['test_timeout']:g} s (an infinite loop?)"
    import traceback

    te = traceback.TracebackException.from_exception(exc, limit=30)
    te.stack = traceback.StackSummary.from_list(
        [f for f in te.stack if f.filename != HARNESS])
    text = "".join(te.format()).strip()
    if not te.stack:
        text = "".join(te.format_exception_only()).strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def compile_node(node, mode="exec"):
    tree = ast.Module([node], type_ignores=[]) if mode == "exec" else ast.Expression(node)
    return compile(tree, "tests.py", mode)


def introspect(node, ns):
    """For a failed bare ``assert a == b``: the values of its non-literal operands."""
    if not (isinstance(node, ast.Assert) and node.msg is None
            and isinstance(node.test, ast.Compare)):
        return ""
    lines = []
    for operand in [node.test.left, *node.test.comparators]:
        if isinstance(operand, ast.Constant):
            continue
        try:
            value = repr(timed(eval, compile_node(operand, "eval"), ns))
        except BaseException:  # evaluating again may fail: then say nothing
            continue
        value = value if len(value) <= 300 else value[:300] + "..."
        lines.append(f"where {ast.unparse(operand)} = {value}")
    return "\n".join(lines)


def run_statement(name, node, ns):
    try:
        timed(exec, compile_node(node), ns)
    except BaseException as exc:  # any failure of the test is its outcome
        import traceback

        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if f.filename != HARNESS]
        if isinstance(exc, AssertionError) and len(frames) == 1:
            # The test's own assert failed: its text is the test's name; add the values.
            detail = "".join(traceback.format_exception_only(exc)).strip()
            where = introspect(node, ns)
            if "candidate" in ns and PLAN["entry_point"]:
                where = re.sub(r"\bcandidate\b", PLAN["entry_point"], where)
            detail = "\n".join(x for x in (detail, where) if x)
        else:
            detail = describe(exc)
        emit(name=name, ok=False, detail=detail)
    else:
        emit(name=name, ok=True)


def cases(fn):
    """Calls of a test function: one per combination of its ``parametrize`` marks."""
    axes = []
    for mark in getattr(fn, "pytestmark", []):
        if getattr(mark, "name", "") != "parametrize":
            continue
        names, values = mark.args[0], mark.args[1]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else names
        rows = [dict(zip(names, v if len(names) > 1 else (v,), strict=True)) for v in values]
        axes.append(rows)
    if not axes:
        return [("", {})]
    return [(f"[{'-'.join(str(i) for i in idx)}]",
             {k: v for row in combo for k, v in row.items()})
            for idx, combo in zip(itertools.product(*(range(len(a)) for a in axes)),
                                  itertools.product(*axes), strict=True)]


def call(fn):
    import inspect

    result = fn()
    if inspect.isawaitable(result):
        import asyncio

        asyncio.run(result)


def run_function(name, fn):
    import inspect

    for suffix, kwargs in cases(fn):
        missing = [p for p in inspect.signature(fn).parameters if p not in kwargs]
        if missing:
            emit(name=name + suffix, ok=False,
                 detail=f"needs pytest fixtures ({', '.join(missing)}), which redline's "
                        "test runner does not provide")
            continue
        try:
            timed(call, functools.partial(fn, **kwargs))
        except BaseException as exc:
            emit(name=name + suffix, ok=False, detail=describe(exc))
        else:
            emit(name=name + suffix, ok=True)


def run_method(name, cls, method):
    def body():
        instance = cls()
        if hasattr(instance, "setup_method"):
            instance.setup_method(getattr(instance, method))
        try:
            call(getattr(instance, method))
        finally:
            if hasattr(instance, "teardown_method"):
                instance.teardown_method(getattr(instance, method))

    try:
        timed(body)
    except BaseException as exc:
        emit(name=name, ok=False, detail=describe(exc))
    else:
        emit(name=name, ok=True)


def run_doctest(step, ns):
    import doctest

    example = doctest.Example(step["source"], step["want"], exc_msg=step["exc_msg"],
                              lineno=step["lineno"])
    test = doctest.DocTest([example], ns, "task", None, 0, None)
    runner = doctest.DocTestRunner(
        optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    report = []
    try:
        outcome = timed(lambda: runner.run(test, out=report.append, clear_globs=False))
    except _Timeout as exc:
        emit(name=step["name"], ok=False, detail=describe(exc))
        return
    text = "".join(report)
    if "_Timeout" in text:  # doctest catches every exception, the timer's too
        emit(name=step["name"], ok=False, detail=describe(_Timeout()))
        return
    lines = [ln for ln in text.splitlines()
             if not ln.startswith(("*****", 'File "task"', "Line "))]
    emit(name=step["name"], ok=outcome.failed == 0, detail="\n".join(lines).strip()[-2000:])


def load_solution():
    """Wait for the candidate's hello: its module's names, or why it did not load."""
    signal.setitimer(signal.ITIMER_REAL, PLAN["test_timeout"] + PLAN["start_timeout"])
    try:
        hello = LINK.receive(0)
    except (CandidateGone, _Timeout) as exc:
        timed_out = isinstance(exc, _Timeout)
        emit(event="load", ok=False, kind="timeout" if timed_out else "error",
             detail=f"timed out after {PLAN['test_timeout']:g} s" if timed_out else str(exc))
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if hello.get("stdout"):
        sys.stdout.write(str(hello["stdout"]))
    if hello.get("load") != "ok":
        kind = hello.get("load")
        emit(event="load", ok=False,
             kind=kind if kind in ("syntax", "error", "timeout") else "error",
             detail=str(hello.get("detail", ""))[-4000:])
        return None
    try:
        names = decode(hello.get("names"), remote)  # noqa: F821
        if type(names) is not dict:
            raise ProtocolError("names are not a mapping")  # noqa: F821
    except ProtocolError as exc:  # noqa: F821
        emit(event="tamper", detail=f"the code's process sent malformed data ({exc})")
        emit(event="load", ok=False, kind="error", detail="malformed names")
        return None
    module = types.ModuleType("solution")
    module.__file__ = "solution.py"
    for key, value in names.items():
        if type(key) is str:
            setattr(module, key, value)
    sys.modules["solution"] = module
    emit(event="load", ok=True)
    return module


def main():
    global LINK
    signal.signal(signal.SIGALRM, _alarm)
    LINK = Link()
    solution = load_solution()
    if solution is None:
        return
    ns = {k: v for k, v in vars(solution).items() if k not in ("__name__", "__file__")}
    ns["__name__"] = "tests"
    tree = ast.parse(PLAN["tests_source"], "tests.py")
    body = tree.body
    check_env = None
    for step in PLAN["steps"]:
        kind = step["kind"]
        if kind == "setup":
            try:
                timed(exec, compile_node(body[step["index"]]), ns)
            except BaseException as exc:
                emit(name=step["name"], ok=False, detail=describe(exc))
        elif kind == "statement":
            run_statement(step["name"], body[step["index"]], ns)
        elif kind == "function":
            run_function(step["name"], ns[step["name"]])
        elif kind == "method":
            cls_name, method = step["name"].split(".")
            run_method(step["name"], ns[cls_name], method)
        elif kind == "doctest":
            run_doctest(step, ns)
        elif kind in ("check-setup", "check"):
            if check_env is None:
                entry = PLAN["entry_point"]
                check_env = dict(ns, candidate=ns.get(entry) or _missing(entry))
            node = body[step["index"]].body[step["sub"]]
            if kind == "check":
                run_statement(step["name"], node, check_env)
            else:
                try:
                    timed(exec, compile_node(node), check_env)
                except BaseException as exc:
                    emit(name=step["name"], ok=False, detail=describe(exc))
    emit(event="done")
    sys.stdout.flush()


def _missing(entry):
    def missing(*args, **kwargs):
        raise NameError(f"the code defines no function {entry!r}")
    return missing


main()
