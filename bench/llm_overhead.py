"""What `OpenAIChat.complete` adds to a bare `openai` call, per call.

Both sides call the same loopback server (`OpenAICompatServer`, which answers at once)
with the same messages and parameters, one call at a time:

- bare: ``openai.AsyncOpenAI(max_retries=0).chat.completions.create``;
- redline: ``OpenAIChat.complete`` inside an active `Meter` whose budget never binds, so
  the budget check, the retry wrapper and the usage accounting are all measured.

The two sides alternate call by call (the pair's order alternating too), so drift in
the machine's load hits both alike. Each repeat gives each side's median call latency;
the figures are the medians of those over the repeats.

    python bench/llm_overhead.py --calls 300 --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time

import openai

from redline._testing_server import OpenAICompatServer
from redline.llm import Meter
from redline.llm.openai import OpenAIChat
from redline.types import Budget

MESSAGES = [
    {"role": "system", "content": "You are a careful assistant."},
    {"role": "user", "content": "Write one sentence about the sea."},
]
MAX_TOKENS = 64
REPLY = "The sea is wide, grey and never quite still."
WARMUP = 20


async def one_repeat(client: openai.AsyncOpenAI, chat: OpenAIChat,
                     calls: int) -> tuple[float, float]:
    """Median seconds per call of the bare client and of redline over `calls` pairs."""
    bare: list[float] = []
    ours: list[float] = []

    async def bare_call() -> None:
        started = time.perf_counter()
        await client.chat.completions.create(
            model=chat.model, messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0.0)
        bare.append(time.perf_counter() - started)

    async def redline_call() -> None:
        started = time.perf_counter()
        await chat.complete(MESSAGES, max_tokens=MAX_TOKENS, temperature=0.0)
        ours.append(time.perf_counter() - started)

    with Meter(Budget(max_tokens=10**9, max_llm_calls=10**6)).active():
        for i in range(calls):
            first, second = (bare_call, redline_call) if i % 2 else (redline_call, bare_call)
            await first()
            await second()
    return statistics.median(bare), statistics.median(ours)


async def main(calls: int, repeats: int) -> float:
    """Run the benchmark, print the figures and return the ratio redline / bare."""
    with OpenAICompatServer(handler=lambda request: REPLY) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="not-needed",
                                    max_retries=0)
        chat = OpenAIChat(server.model, base_url=server.base_url)
        await one_repeat(client, chat, WARMUP)
        results = [await one_repeat(client, chat, calls) for _ in range(repeats)]
        await client.close()
        await chat.aclose()

    bare_ms = statistics.median(bare for bare, _ in results) * 1e3
    ours_ms = statistics.median(ours for _, ours in results) * 1e3
    ratio = ours_ms / bare_ms
    print(f"# {calls} calls per side x {repeats} repeats, alternating call by call; "
          f"python {platform.python_version()}, openai {openai.__version__}, "
          f"{platform.machine()} {platform.system()}")
    print("| client | ms per call (median) |")
    print("|---|---|")
    print(f"| bare `openai.AsyncOpenAI` | {bare_ms:.3f} |")
    print(f"| redline `OpenAIChat.complete`, metered | {ours_ms:.3f} |")
    print(f"| overhead per call | {ours_ms - bare_ms:+.3f} |")
    print(f"| **ratio redline / bare** (target <= 1.25) | **{ratio:.3f}** |")
    return ratio


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per side per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="repeats (median taken)")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.repeats))
