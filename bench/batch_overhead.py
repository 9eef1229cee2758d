"""Many refine loops at once against a server with a fixed latency: what each client adds.

A loopback OpenAI-compatible server (stdlib asyncio, in its own process, so it does not
share the event loop or the GIL with the clients) answers every chat request after
``--latency`` seconds. Each side then refines ``--items`` tasks, ``--concurrency`` at a
time, with ``--calls`` LLM calls per item (a draft, a judge's verdict, a revision):

- **ideal**: ``items * calls * latency / concurrency``, the time the server alone needs;
- **raw streams**: the same requests written by hand on kept-alive asyncio streams, no
  HTTP library: what the server and the event loop allow (the server is not the limit
  when this side is close to the ideal);
- **bare httpx**: one `httpx.AsyncClient` (one connection pool) posting the same three
  requests per item; **bare aiohttp**: one `aiohttp.ClientSession` (with
  ``--dspy-python``, whose environment has aiohttp);
- **bare AsyncOpenAI**: ``openai.AsyncOpenAI(max_retries=0)`` making the same calls;
- **redline**: one `redline.workflows.Runner` (``abatch`` when it exists), `OpenAIChat`,
  an `LLMJudge` and the default reviser, ``Budget(max_rounds=1, max_llm_calls=3)``: the
  draft, its verdict, one revision; the revision's verdict is refused by the budget, so
  exactly 3 calls per item (checked from each result's usage); **redline, before**: the
  same with the ``src/`` given by ``--before-src`` (an earlier checkout);
- **DSPy**: ``dspy.Refine(dspy.Predict("question -> answer"), N=2, reward_fn=...,
  threshold=1.0)`` through ``dspy.Parallel(num_threads=concurrency)``: the answer, the
  feedback call (``OfferFeedback``), the second answer; the reward function is plain
  Python (no call), so also 3 calls per item (counted by the server). DSPy is not a
  redline dependency: pass ``--dspy-python`` an interpreter that has it.

Each side runs in a fresh interpreter (imports, warm-up and one small batch first, not
timed), and the sides take turns over ``--repeats``; the table gives the median. Memory
is a separate, untimed pass of the same batch under `tracemalloc`: the peak of Python
allocations while ``concurrency`` items are in flight, per 1,000 items in flight.

Two checks of where the limit is: ``--loop uvloop`` runs the clients on uvloop's event
loop instead of asyncio's, and ``--processes K`` runs each side as K processes at once
(each with 1/K of the items and of the concurrency, started together when all are warm;
the wall time is the slowest one's; no memory pass).

    python bench/batch_overhead.py --items 500 --calls 3 --concurrency 64 --latency 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

SYSTEM = "You are a careful assistant."
VERDICT = json.dumps({"score": 3, "feedback": "Name one concrete example."})
DRAFT = "The sea is wide, grey and never quite still; it keeps its own time."

# -- the server --------------------------------------------------------------------------


def _reply_text(request: dict[str, Any]) -> str:
    """What the server answers: a verdict to a request for JSON, DSPy's field format to
    DSPy, else a short paragraph."""
    messages = request.get("messages") or []
    system = str(messages[0].get("content") or "") if messages else ""
    if request.get("response_format"):
        return VERDICT
    if "[[ ## " in system:
        # DSPy's ChatAdapter: every output field, then the end marker.
        fields = _dspy_output_fields(system)
        parts = [f"[[ ## {name} ## ]]\n{_dspy_value(name)}\n" for name in fields]
        return "\n".join(parts) + "\n[[ ## completed ## ]]"
    # A revision differs from its draft (else the judge's cached verdict serves it).
    last = str(messages[-1].get("content") or "") if messages else ""
    return f"{DRAFT} ({zlib.crc32(last.encode()) % 1000})"


def _dspy_output_fields(system: str) -> list[str]:
    head, _, rest = system.partition("Your output fields are:")
    names = []
    for line in rest.splitlines()[1:]:
        line = line.strip()
        if not line or not line[0].isdigit():
            break
        names.append(line.split("`")[1])
    return names


def _dspy_value(name: str) -> str:
    if name == "advice":
        return json.dumps({"self": "Name one concrete example."})
    return DRAFT


async def _serve(latency: float, ready: Callable[[int], None]) -> None:
    requests = connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests, connections
        connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                if method == "GET" and path.rstrip("/").endswith("/models"):
                    out: Any = {"object": "list", "data": [
                        {"id": "bench-model", "object": "model", "created": 0,
                         "owned_by": "bench"}]}
                elif method == "GET" and path == "/stats":
                    out = {"requests": requests, "connections": connections}
                else:
                    request = json.loads(body)
                    requests += 1
                    await asyncio.sleep(latency)
                    text = _reply_text(request)
                    words = len(text.split())
                    prompt = sum(len(str(m.get("content") or "").split())
                                 for m in request.get("messages") or ())
                    out = {"id": f"chatcmpl-{requests}", "object": "chat.completion",
                           "created": int(time.time()), "model": request.get("model"),
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": text}}],
                           "usage": {"prompt_tokens": prompt, "completion_tokens": words,
                                     "total_tokens": prompt + words}}
                data = json.dumps(out).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    ready(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    """The server in a child process, and its API root."""
    proc = subprocess.Popen([sys.executable, __file__, "--serve", "--latency", str(latency)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}/v1"


def server_requests(base_url: str) -> int:
    import urllib.request

    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/stats") as response:
        return int(json.load(response)["requests"])


# -- the sides ---------------------------------------------------------------------------


def _messages(i: int, step: int) -> list[dict[str, str]]:
    prompts = [f"Write one sentence about the sea (task {i}).",
               f"Grade this answer to task {i} from 0 to 10 as JSON: {DRAFT}",
               f"Revise this answer to task {i}: {DRAFT}\nFeedback: Name one example."]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompts[step]}]


_JSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "verdict", "strict": True,
                                                       "schema": {"type": "object"}}}


async def _pooled(items: int, concurrency: int,
                  one: Callable[[int], Awaitable[Any]]) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def gated(i: int) -> Any:
        async with gate:
            return await one(i)
    return await asyncio.gather(*(gated(i) for i in range(items)))


async def side_bare_httpx(base_url: str, items: int, calls: int, concurrency: int,
                          ) -> Callable[[int], Awaitable[Any]]:
    import httpx

    client = httpx.AsyncClient(base_url=base_url, timeout=120.0, headers={
        "Authorization": "Bearer not-needed"},
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=None))

    async def item(i: int) -> int:
        for step in range(calls):
            body: dict[str, Any] = {"model": "bench-model", "messages": _messages(i, step % 3),
                                    "max_tokens": 300, "temperature": 0.0}
            if step % 3 == 1:
                body["response_format"] = _JSON_FORMAT
            response = await client.post("/chat/completions", json=body)
            response.raise_for_status()
            text = response.json()["choices"][0]["message"]["content"]
        return len(text) and calls

    return lambda n: _pooled(n, concurrency, item)


async def side_bare_openai(base_url: str, items: int, calls: int, concurrency: int,
                           ) -> Callable[[int], Awaitable[Any]]:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="not-needed", max_retries=0)

    async def item(i: int) -> int:
        for step in range(calls):
            extra: dict[str, Any] = {}
            if step % 3 == 1:
                extra["response_format"] = _JSON_FORMAT
            response = await client.chat.completions.create(
                model="bench-model", messages=_messages(i, step % 3),  # type: ignore[arg-type]
                max_tokens=300, temperature=0.0, **extra)
            text = response.choices[0].message.content or ""
        return len(text) and calls

    return lambda n: _pooled(n, concurrency, item)


async def side_redline(base_url: str, items: int, calls: int, concurrency: int,
                       ) -> Callable[[int], Awaitable[Any]]:
    import redline
    from redline.llm import OpenAIChat
    from redline.types import Task
    from redline.workflows import Runner
    from redline.workflows.config import RefineConfig

    if calls != 3:
        raise SystemExit("the redline side makes 3 calls per item (draft, verdict, revision)")
    chat = OpenAIChat("bench-model", base_url=base_url)
    config = RefineConfig(model=chat, critics=[redline.LLMJudge()], threshold=0.9,
                          budget=redline.Budget(max_rounds=1, max_llm_calls=3))
    runner = Runner(config)
    try:
        from redline.workflows.batch import abatch  # type: ignore[import-not-found]
    except ImportError:
        abatch = None

    async def batch(n: int) -> list[int]:
        tasks = [Task(prompt=f"Write one sentence about the sea (task {i}).")
                 for i in range(n)]
        if abatch is not None:
            results = [r async for r in _results(abatch(tasks, runner,
                                                        concurrency=concurrency))]
        else:
            results = await _pooled(n, concurrency, lambda i: runner.run(tasks[i]))
        made = [r.usage.llm_calls for r in results]
        if made != [3] * n:
            raise SystemExit(f"redline made {sorted(set(made))} calls per item, not 3")
        return made

    return batch


async def _results(batch: Any) -> Any:
    """Results of `abatch`, whether it returns a list or yields them."""
    if hasattr(batch, "__aiter__"):
        async for r in batch:
            yield getattr(r, "result", r)
    else:
        for r in await batch:
            yield getattr(r, "result", r)


async def side_dspy(base_url: str, items: int, calls: int, concurrency: int,
                    ) -> Callable[[int], Awaitable[Any]]:
    import logging

    import dspy

    # Refine logs a type warning for each feedback call; the log lines are not the bench.
    logging.getLogger("dspy").setLevel(logging.ERROR)
    if calls != 3:
        raise SystemExit("the DSPy side makes 3 calls per item (answer, feedback, answer)")
    lm = dspy.LM("openai/bench-model", api_base=base_url, api_key="not-needed",
                 cache=False, num_retries=0, max_tokens=300, temperature=0.0)
    dspy.configure(lm=lm)
    refine = dspy.Refine(dspy.Predict("question -> answer"), N=2,
                         reward_fn=lambda args, pred: 0.3, threshold=1.0)
    parallel = dspy.Parallel(num_threads=concurrency, disable_progress_bar=True)

    async def batch(n: int) -> list[Any]:
        examples = [(refine, dspy.Example(
            question=f"Write one sentence about the sea (task {i}).").with_inputs("question"))
            for i in range(n)]
        return await asyncio.to_thread(parallel, examples)

    return batch


SIDES: dict[str, Callable[..., Awaitable[Callable[[int], Awaitable[Any]]]]] = {
    "bare-httpx": side_bare_httpx, "bare-openai": side_bare_openai,
    "redline": side_redline, "dspy": side_dspy}
async def side_bare_aiohttp(base_url: str, items: int, calls: int, concurrency: int,
                            ) -> Callable[[int], Awaitable[Any]]:
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), headers={
        "Authorization": "Bearer not-needed"})

    async def item(i: int) -> int:
        for step in range(calls):
            body: dict[str, Any] = {"model": "bench-model", "messages": _messages(i, step % 3),
                                    "max_tokens": 300, "temperature": 0.0}
            if step % 3 == 1:
                body["response_format"] = _JSON_FORMAT
            async with session.post(f"{base_url}/chat/completions", json=body) as response:
                response.raise_for_status()
                text = (await response.json())["choices"][0]["message"]["content"]
        return len(text) and calls

    return lambda n: _pooled(n, concurrency, item)


async def side_raw(base_url: str, items: int, calls: int, concurrency: int,
                   ) -> Callable[[int], Awaitable[Any]]:
    host, _, rest = base_url.removeprefix("http://").partition("/")
    address, port = host.split(":")
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(body: bytes) -> bytes:
        reader, writer = idle.pop() if idle else await asyncio.open_connection(
            address, int(port))
        writer.write(b"POST /%s/chat/completions HTTP/1.1\r\nHost: %s\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (rest.encode(), host.encode(), len(body), body))
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        data = await reader.readexactly(length)
        idle.append((reader, writer))
        return data

    async def item(i: int) -> int:
        for step in range(calls):
            body: dict[str, Any] = {"model": "bench-model", "messages": _messages(i, step % 3),
                                    "max_tokens": 300, "temperature": 0.0}
            if step % 3 == 1:
                body["response_format"] = _JSON_FORMAT
            reply = json.loads(await post(json.dumps(body).encode()))
            text = reply["choices"][0]["message"]["content"]
        return len(text) and calls

    return lambda n: _pooled(n, concurrency, item)


SIDES["raw"] = side_raw
SIDES["redline-before"] = side_redline
SIDES["bare-aiohttp"] = side_bare_aiohttp
LABELS = {"ideal": "ideal (server latency only)",
          "raw": "raw asyncio streams, no HTTP library (the server's limit)",
          "redline-before": "redline `Runner` at --before-src (an earlier checkout)",
          "bare-httpx": "bare `httpx.AsyncClient` (one pool)",
          "bare-aiohttp": "bare `aiohttp.ClientSession`",
          "bare-openai": "bare `openai.AsyncOpenAI`",
          "redline": "redline `Runner` (OpenAIChat, LLMJudge, Reviser)",
          "dspy": "DSPy `Refine` via `dspy.Parallel`"}


async def run_side(side: str, base_url: str, items: int, calls: int, concurrency: int,
                   memory: bool, go: bool = False) -> dict[str, Any]:
    batch = await SIDES[side](base_url, items, calls, concurrency)
    await batch(min(items, concurrency))  # warm-up: connections, imports, caches
    if go:  # one of several processes: start when the driver says so, all at once
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
    before = server_requests(base_url)
    started = time.perf_counter()
    await batch(items)
    wall = time.perf_counter() - started
    sent = server_requests(base_url) - before
    out: dict[str, Any] = {"wall": wall, "requests": sent}
    if memory:
        # Untimed: tracemalloc slows allocation several times over.
        n = min(items, 4 * concurrency)
        tracemalloc.start()
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        await batch(n)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["peak_per_1000"] = (peak - base) / min(n, concurrency) * 1000
    return out


# -- the driver --------------------------------------------------------------------------


def _split(cmd: list[str], env: dict[str, str], args: argparse.Namespace, base_url: str,
           ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """One side as ``--processes`` processes, each with its share of the items and of
    the concurrency, started together once all are warm; the wall time is the slowest
    one's, the requests are the server's count over the whole."""
    k = args.processes
    share = [*cmd[:cmd.index("--items")], "--items", str(args.items // k), "--calls",
             str(args.calls), "--concurrency", str(args.concurrency // k),
             *cmd[cmd.index("--concurrency") + 2:], "--go"]
    procs = [subprocess.Popen(share, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(k)]
    failed = None
    for proc in procs:
        line = proc.stdout.readline() if proc.stdout else ""
        if line.strip() != "ready":
            failed = proc
    before = server_requests(base_url)
    for proc in procs:
        if proc.stdin and proc.poll() is None:
            proc.stdin.write("go\n")
            proc.stdin.flush()
    outs = [(p, *p.communicate()) for p in procs]
    bad = failed or next((p for p, _, _ in outs if p.returncode != 0), None)
    if bad is not None:
        err = next(e for p, _, e in outs if p is bad)
        return subprocess.CompletedProcess(cmd, 1, "", err), {}
    walls = [json.loads(out.strip().splitlines()[-1])["wall"] for _, out, _ in outs]
    return (subprocess.CompletedProcess(cmd, 0, "", ""),
            {"wall": max(walls), "requests": server_requests(base_url) - before})


def main(args: argparse.Namespace) -> None:
    proc, base_url = start_server(args.latency)
    sides = [s for s in args.sides.split(",") if s]
    if args.before_src and "redline-before" not in sides:
        sides.insert(sides.index("redline") if "redline" in sides else len(sides),
                     "redline-before")
    walls: dict[str, list[float]] = {s: [] for s in sides}
    memory: dict[str, float] = {}
    try:
        for repeat in range(args.repeats):
            for side in sides:
                python = args.dspy_python if side in ("dspy", "bare-aiohttp") and \
                    args.dspy_python else sys.executable
                src = args.before_src if side == "redline-before" else "src"
                cmd = [python, __file__, "--side", side, "--base-url", base_url,
                       "--items", str(args.items), "--calls", str(args.calls),
                       "--concurrency", str(args.concurrency)]
                if args.loop != "asyncio":
                    cmd += ["--loop", args.loop]
                env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                    filter(None, [src, os.environ.get("PYTHONPATH")]))}
                if args.processes > 1:
                    done, result = _split(cmd, env, args, base_url)
                else:
                    if repeat == 0:
                        cmd.append("--memory")
                    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    result = json.loads(done.stdout.strip().splitlines()[-1]) \
                        if done.returncode == 0 else {}
                if done.returncode != 0:
                    print(f"# {side} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                    walls.pop(side, None)
                    continue
                if side not in walls:
                    continue
                expected = args.items * args.calls
                if result["requests"] != expected:
                    print(f"# {side}: the server saw {result['requests']} requests, "
                          f"expected {expected}", file=sys.stderr)
                walls[side].append(result["wall"])
                if "peak_per_1000" in result:
                    memory[side] = result["peak_per_1000"]
                print(f"# repeat {repeat + 1} {side}: {result['wall']:.3f} s",
                      file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait()

    ideal = args.items * args.calls * args.latency / args.concurrency
    bare = statistics.median(walls["bare-openai"]) if walls.get("bare-openai") else None
    print(f"# {args.items} items x {args.calls} calls, {args.concurrency} at a time, "
          f"{args.latency * 1000:g} ms latency; median of {args.repeats}; "
          f"python {platform.python_version()}, {platform.machine()} {platform.system()}, "
          f"{os.cpu_count()} CPUs; event loop {args.loop}; "
          f"{args.processes} process{'es' * (args.processes > 1)} a side")
    print("| side | wall s | / ideal | / bare AsyncOpenAI | peak MiB per 1,000 in flight |")
    print("|---|---|---|---|---|")
    print(f"| {LABELS['ideal']} | {ideal:.3f} | 1.00x | | |")
    for side, runs in walls.items():
        if not runs:
            continue
        wall = statistics.median(runs)
        vs_bare = f"{wall / bare:.2f}x" if bare else ""
        mem = f"{memory[side] / 2**20:.1f}" if side in memory else ""
        print(f"| {LABELS[side]} | {wall:.3f} | {wall / ideal:.2f}x | {vs_bare} | {mem} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per request")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sides",
                        default="raw,bare-httpx,bare-aiohttp,bare-openai,redline,dspy")
    parser.add_argument("--dspy-python", default="",
                        help="an interpreter with dspy (and aiohttp, which it brings) "
                             "installed, for the sides dspy and bare-aiohttp")
    parser.add_argument("--before-src", default="",
                        help="the src/ of an earlier checkout: adds the side redline-before")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio",
                        help="the clients' event loop")
    parser.add_argument("--processes", type=int, default=1,
                        help="run each side as this many processes at once, each with its "
                             "share of --items and --concurrency (no memory pass)")
    parser.add_argument("--go", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        def ready(port: int) -> None:
            print(port, flush=True)
        asyncio.run(_serve(args.latency, ready))
    elif args.side:
        run: Callable[[Any], Any] = asyncio.run
        if args.loop == "uvloop":
            import uvloop

            run = uvloop.run
        print(json.dumps(run(run_side(args.side, args.base_url, args.items, args.calls,
                                      args.concurrency, args.memory, args.go))))
    else:
        main(args)
