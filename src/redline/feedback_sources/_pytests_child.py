"""The test harness that runs inside the sandbox (as its ``main.py``).

Standard library only. It loads ``solution.py`` as the module ``solution``, then runs
the steps of ``plan.json`` in order against ``tests.py`` (or doctest examples), each
under its own timer, writing one JSON line per outcome to ``.redline-results.jsonl``
as it goes, so what finished is known even if the run is killed.
"""

import ast
import functools
import inspect
import itertools
import json
import re
import signal
import sys
import traceback
import types

RESULTS = ".redline-results.jsonl"
HARNESS = "main.py"


class _Timeout(BaseException):
    """A test ran past its time (BaseException: code's ``except Exception`` misses it)."""


def _alarm(signum, frame):
    raise _Timeout


with open("plan.json", encoding="utf-8") as f:
    PLAN = json.load(f)
_out = open(RESULTS, "w", encoding="utf-8")  # open for the whole run


def emit(**record):
    _out.write(json.dumps(record) + "\n")
    _out.flush()


def timed(fn, *args):
    signal.setitimer(signal.ITIMER_REAL, PLAN["test_timeout"])
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def describe(exc, limit=2000):
    """The traceback without the harness's frames, trimmed to its end."""
    if isinstance(exc, _Timeout):
        return f"timed out after {PLAN['test_timeout']:g} s (an infinite loop?)"
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
    result = fn()
    if inspect.isawaitable(result):
        import asyncio

        asyncio.run(result)


def run_function(name, fn):
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
    with open("solution.py", "rb") as f:
        source = f.read()
    try:
        code = compile(source, "solution.py", "exec")
    except (SyntaxError, ValueError) as exc:
        emit(event="load", ok=False, kind="syntax",
             detail="".join(traceback.format_exception_only(exc)).strip())
        return None
    module = types.ModuleType("solution")
    module.__file__ = "solution.py"
    sys.modules["solution"] = module
    try:
        timed(exec, code, module.__dict__)
    except BaseException as exc:  # the code's failure is the outcome
        emit(event="load", ok=False, kind="timeout" if isinstance(exc, _Timeout) else "error",
             detail=describe(exc))
        return None
    emit(event="load", ok=True)
    return module


def main():
    signal.signal(signal.SIGALRM, _alarm)
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


def _missing(entry):
    def missing(*args, **kwargs):
        raise NameError(f"the code defines no function {entry!r}")
    return missing


main()
