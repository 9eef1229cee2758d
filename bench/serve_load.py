"""``redline serve`` under load: what the HTTP server adds to the same refine in-process,
and a soak with a failing upstream.

A loopback OpenAI-compatible upstream (stdlib asyncio, its own process; the minimal part
of ``bench/batch_overhead.py``'s server, plus failure injection) answers every chat
request after ``--latency`` seconds; with ``--fail-rate`` it answers that fraction of
calls with a 500 instead (the client retries them). The refine is 3 calls: a draft, an
`LLMJudge` verdict (3/10, so the loop revises), one revision
(``Budget(max_rounds=1, max_llm_calls=3)``; the revision's verdict is refused by the
budget).

- **in-process**: one `redline.serve.RunTable` (one `Runner`), ``--requests`` tasks,
  ``--concurrency`` at a time, in a fresh interpreter;
- **server**: ``redline serve`` with the same run (``--concurrency`` slots), and a load
  generator process of ``--concurrency`` httpx clients posting chat requests.

Each side's wall time, throughput and per-request latency (p50, p99) are printed; the
server's ratio to in-process is the overhead (target <= 1.10). ``--soak N`` then sends N
requests with ``--fail-rate`` (default 0.1) and reports the statuses, every error body's
shape and the server's RSS before and after.

    python bench/serve_load.py --requests 2000 --concurrency 64 --latency 0.05 --soak 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

VERDICT = json.dumps({"score": 3, "feedback": "Name one concrete example."})
DRAFT = "The sea is wide, grey and never quite still; it keeps its own time."
MODEL = "bench-model"
LOOP = "asyncio"  # the event loop of every redline side and the load generator (--loop)

# -- the upstream ------------------------------------------------------------------------


async def _serve(latency: float, fail_rate: float, ready: Callable[[int], None]) -> None:
    rng = random.Random(7)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
                status = b"200 OK"
                if method == "GET":
                    out: Any = {"object": "list", "data": [
                        {"id": MODEL, "object": "model", "created": 0, "owned_by": "bench"}]}
                else:
                    request = json.loads(body)
                    await asyncio.sleep(latency)
                    if rng.random() < fail_rate:
                        status = b"500 Internal Server Error"
                        out = {"error": {"message": "injected", "type": "server_error"}}
                    else:
                        out = _completion(request)
                data = json.dumps(out).encode()
                writer.write(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (status, len(data), data))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=2048)
    ready(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def _completion(request: dict[str, Any]) -> dict[str, Any]:
    messages = request.get("messages") or []
    if request.get("response_format"):
        text = VERDICT
    else:  # a revision differs from its draft (else the judge's cache serves it)
        last = str(messages[-1].get("content") or "") if messages else ""
        text = f"{DRAFT} ({zlib.crc32(last.encode()) % 1000})"
    prompt = sum(len(str(m.get("content") or "").split()) for m in messages)
    words = len(text.split())
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
            "model": request.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": words,
                      "total_tokens": prompt + words}}


def start_upstream(latency: float, fail_rate: float) -> tuple[subprocess.Popen[str], str]:
    """The upstream in a child process, and its API root."""
    proc = subprocess.Popen([sys.executable, __file__, "--upstream", "--latency", str(latency),
                             "--fail-rate", str(fail_rate)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, f"http://127.0.0.1:{int(proc.stdout.readline())}/v1"


# -- the two sides -----------------------------------------------------------------------


def _question(i: int) -> str:
    return f"Write one sentence about the sea (task {i})."


async def _pooled(n: int, concurrency: int, one: Callable[[int], Any]) -> list[Any]:
    """Run ``one(i)`` for i < n, `concurrency` at a time; each outcome with its seconds."""
    queue = iter(range(n))
    out: list[Any] = [None] * n

    async def worker() -> None:
        for i in queue:
            started = time.perf_counter()
            outcome = await one(i)
            out[i] = (outcome, time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


async def in_process(base_url: str, n: int, concurrency: int, ceilings: bool = True
                     ) -> dict[str, Any]:
    """The same run as the server's, in this process: with ``ceilings``, the budget
    ceilings ``redline serve`` puts on every run by default (100,000 tokens, 300 s)."""
    from redline import Budget, LLMJudge
    from redline.llm import OpenAIChat
    from redline.serve import RunTable
    from redline.types import Task
    from redline.workflows import RefineConfig

    config = RefineConfig(model=OpenAIChat(MODEL, base_url=base_url), critics=[LLMJudge()],
                          budget=Budget(max_rounds=1, max_llm_calls=3))
    limits = {"token_ceiling": 100_000, "seconds_ceiling": 300.0} if ceilings else {}
    runs = RunTable({"refine": config}, **limits)
    await runs.preflight()

    async def one(i: int) -> int:
        result = await runs.run("refine", Task(prompt=_question(i)))
        return int(result.usage.llm_calls)

    await _pooled(concurrency, concurrency, one)  # warm-up, untimed
    started, cpu = time.perf_counter(), time.process_time()
    outcomes = await _pooled(n, concurrency, one)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    calls = Counter(o for o, _ in outcomes)
    return {"wall": wall, "cpu": cpu, "latencies": [s for _, s in outcomes],
            "calls": dict(calls)}


async def load(base_url: str, n: int, concurrency: int, warm: bool,
               client: str = "raw") -> dict[str, Any]:
    """`n` chat requests, `concurrency` at a time, each answer checked.

    ``client="raw"`` writes HTTP/1.1 by hand on kept-alive asyncio streams (the cheapest
    client there is: the clients of a real server run on other machines, so the load
    generator should take as little of these two cores as it can); ``"httpx"`` uses one
    `httpx.AsyncClient`, which costs ~1.5 ms of CPU a request here.
    """
    post = _raw_poster(base_url) if client == "raw" else None
    if client == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=concurrency,
                              max_keepalive_connections=concurrency)
        http = httpx.AsyncClient(base_url=base_url, limits=limits, timeout=600)

        async def post_httpx(payload: dict[str, Any]) -> tuple[int, Any]:
            response = await http.post("/chat/completions", json=payload)
            return response.status_code, response.json()
        post = post_httpx
    assert post is not None

    async def one(i: int) -> tuple[int, Any]:
        try:
            status, body = await post({"model": "redline/refine",
                                       "messages": [{"role": "user", "content": _question(i)}]})
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            return 0, f"{type(exc).__name__}"
        except Exception as exc:  # httpx's errors, when that client is used
            return 0, f"{type(exc).__name__}"
        if status == 200:
            return 200, body["redline"]["llm_calls"]
        error = body.get("error") or {}
        clear = set(error) == {"message", "type", "param", "code"} and error["message"]
        return status, "clear error" if clear else f"unclear: {body}"

    if warm:
        await _pooled(concurrency, concurrency, one)
    started = time.perf_counter()
    outcomes = await _pooled(n, concurrency, one)
    wall = time.perf_counter() - started
    return {"wall": wall, "latencies": [s for _, s in outcomes],
            "statuses": dict(Counter(o[0] for o, _ in outcomes)),
            "details": dict(Counter(str(o[1]) for o, _ in outcomes))}


def _raw_poster(base_url: str) -> Callable[[dict[str, Any]], Any]:
    """POST JSON to ``{base_url}/chat/completions`` on kept-alive asyncio streams."""
    host, _, root = base_url.removeprefix("http://").partition("/")
    address, port = host.split(":")
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(payload: dict[str, Any]) -> tuple[int, Any]:
        reader, writer = idle.pop() if idle else await asyncio.open_connection(
            address, int(port))
        body = json.dumps(payload).encode()
        writer.write(b"POST /%s/chat/completions HTTP/1.1\r\nHost: %s\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (root.encode(), host.encode(), len(body), body))
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next(int(line.split(b":")[1]) for line in lines
                      if line.lower().startswith(b"content-length"))
        data = await reader.readexactly(length)
        if not any(line.lower() == b"connection: close" for line in lines):
            idle.append((reader, writer))
        return status, json.loads(data)

    return post


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_serve(base_url: str, concurrency: int) -> tuple[subprocess.Popen[bytes], str, Path]:
    log = Path(tempfile.mkstemp(suffix=".log")[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "redline", "serve", "--port", "0", "--upstream", base_url,
             "--model", MODEL, "--max-rounds", "1", "--max-calls", "3", "--concurrency",
             str(concurrency), "--queue", "100000", "--loop", LOOP], stderr=err, env=env)
    deadline = time.monotonic() + 120
    while not (found := re.search(r"on (http://\S+/v1)", log.read_text())):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"redline serve did not start: {log.read_text()}")
        time.sleep(0.05)
    return proc, found.group(1), log


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(args: argparse.Namespace) -> None:
    """One side in this (fresh) interpreter; prints its figures as JSON."""
    factory = None
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        if args.side in ("inprocess", "inprocess-bare"):
            out = runner.run(in_process(args.base_url, args.requests, args.concurrency,
                                        ceilings=args.side == "inprocess"))
        else:
            out = runner.run(load(args.base_url, args.requests, args.concurrency, args.warm,
                                  args.client))
    print(json.dumps(out))


def run_child(side: str, base_url: str, n: int, concurrency: int, warm: bool = True,
              client: str = "raw") -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", side, "--base-url", base_url,
           "--requests", str(n), "--concurrency", str(concurrency), "--client", client,
           "--loop", LOOP]
    out = subprocess.run(cmd + (["--warm"] if warm else []), capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return dict(json.loads(out.stdout.splitlines()[-1]))


def figures(name: str, out: dict[str, Any], n: int) -> str:
    lat = sorted(out["latencies"])
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    return (f"| {name} | {out['wall']:.2f} | {n / out['wall']:.1f} | {p50 * 1000:.0f} | "
            f"{p99 * 1000:.0f} |")


def main(args: argparse.Namespace) -> None:
    if args.repeats:
        compare(args)
    if args.soak:
        soak(args)


def compare(args: argparse.Namespace) -> None:
    """The server against the same run in-process, `args.repeats` times."""
    n, c = args.requests, args.concurrency
    upstream, base_url = start_upstream(args.latency, 0.0)
    try:
        ideal = n * 3 * args.latency / c
        print(f"{n} requests, {c} concurrent, 3 calls each, upstream latency "
              f"{args.latency * 1000:.0f} ms; ideal {ideal:.2f} s\n")
        print(f"load generator: {args.client} client; event loop: {args.loop}\n")
        print("| side | wall s | req/s | p50 ms | p99 ms | CPU ms per request |\n"
              "|---|---|---|---|---|---|")
        walls: dict[str, list[float]] = {"no ceilings": [], "in-process": [], "server": []}
        cpus: dict[str, list[float]] = {"in-process": [], "server": []}
        for _ in range(args.repeats):
            bare = run_child("inprocess-bare", base_url, n, c)
            assert bare["calls"] == {"3": n}, bare["calls"]
            walls["no ceilings"].append(bare["wall"])
            print(figures("in-process, no ceilings", bare, n) + f" {bare['cpu'] / n * 1e3:.1f} |")
            inproc = run_child("inprocess", base_url, n, c)
            assert inproc["calls"] == {"3": n}, inproc["calls"]
            walls["in-process"].append(inproc["wall"])
            cpus["in-process"].append(inproc["cpu"] / n)
            print(figures("in-process, the server's ceilings", inproc, n)
                  + f" {inproc['cpu'] / n * 1e3:.1f} |")
            serve, url, _ = start_serve(base_url, c)
            try:
                run_child("load", url, c, c, warm=False, client=args.client)  # warm-up
                cpu = cpu_seconds(serve.pid)
                served = run_child("load", url, n, c, warm=False, client=args.client)
                cpu = cpu_seconds(serve.pid) - cpu
                assert served["statuses"] == {"200": n}, served["statuses"]
                walls["server"].append(served["wall"])
                cpus["server"].append(cpu / n)
                print(figures("redline serve + HTTP clients", served, n)
                      + f" {cpu / n * 1e3:.1f} |")
            finally:
                serve.terminate()
                serve.wait()
        ratio = statistics.median(walls["server"]) / statistics.median(walls["in-process"])
        cpu_ratio = statistics.median(cpus["server"]) / statistics.median(cpus["in-process"])
        ceil = statistics.median(walls["in-process"]) / statistics.median(walls["no ceilings"])
        print(f"\nin-process with / without the ceilings, wall time: {ceil:.3f}")
        print(f"server / in-process wall time (median of {args.repeats}): {ratio:.3f} "
              "(target <= 1.10)")
        print(f"server process / in-process CPU per request (median of {args.repeats}): "
              f"{cpu_ratio:.3f}")
    finally:
        upstream.terminate()


def soak(args: argparse.Namespace) -> None:
    """`args.soak` requests against an upstream failing `args.fail_rate` of calls."""
    c = args.concurrency
    upstream, base_url = start_upstream(args.latency, args.fail_rate)
    serve, url, log = start_serve(base_url, c)
    try:
        run_child("load", url, c, c, warm=False, client=args.client)  # warm-up
        before = rss_mb(serve.pid)
        samples: list[float] = []  # the server's RSS every 2 s of the soak
        done = threading.Event()

        def sample() -> None:
            while not done.wait(2.0):
                samples.append(rss_mb(serve.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            soak = run_child("load", url, args.soak, c, warm=False, client=args.client)
        finally:
            done.set()
            sampler.join()
        after = rss_mb(serve.pid)
        alive = serve.poll() is None
        tenth = max(1, len(samples) // 10)
        print(f"\nsoak: {args.soak} requests, upstream failing {args.fail_rate:.0%} of calls: "
              f"{soak['wall']:.1f} s, statuses {soak['statuses']}, details "
              f"{dict(sorted(soak['details'].items(), key=lambda kv: -kv[1])[:5])}, "
              f"server alive {alive}, RSS {before:.0f} MB -> {after:.0f} MB")
        print("server RSS (MB) at each tenth of the soak: "
              + " ".join(f"{m:.0f}" for m in samples[tenth - 1::tenth]))
        print(figures("soak", soak, args.soak))
    finally:
        serve.terminate()
        serve.wait()
        upstream.terminate()
        log.unlink()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of the server-vs-in-process comparison (0: none)")
    parser.add_argument("--soak", type=int, default=0, help="requests of the soak (0: none)")
    parser.add_argument("--fail-rate", type=float, default=0.1)
    parser.add_argument("--upstream", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", dest="side", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="the event loop of both redline sides and the load generator")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw",
                        help="the load generator's HTTP client (default: raw asyncio streams)")
    parsed = parser.parse_args()
    LOOP = parsed.loop
    if parsed.upstream:
        asyncio.run(_serve(parsed.latency, parsed.fail_rate,
                           lambda port: print(port, flush=True)))
    elif parsed.side:
        child(parsed)
    else:
        main(parsed)
