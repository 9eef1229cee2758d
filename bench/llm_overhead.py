"""What `OpenAIChat.complete` adds to a bare `openai` call, per call.

Both sides call the same loopback server (`OpenAICompatServer`, which answers at once)
with the same messages, sequentially. The two loops alternate over several repeats and
the median of each side is reported, so that drift in the machine's load hits both.

    python bench/llm_overhead.py --calls 300 --repeats 5

The redline side runs inside an active `Meter` with a budget that never binds, so the
budget reservation and accounting are part of what is measured.
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


async def bare_loop(client: openai.AsyncOpenAI, model: str, calls: int) -> float:
    """Seconds for `calls` sequential bare client calls."""
    started = time.perf_counter()
    for _ in range(calls):
        await client.chat.completions.create(
            model=model, messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0.0)
    return time.perf_counter() - started


async def redline_loop(chat: OpenAIChat, calls: int) -> float:
    """Seconds for `calls` sequential `OpenAIChat.complete` calls inside a metered run."""
    with Meter(Budget(max_tokens=10**9, max_llm_calls=10**6)).active():
        started = time.perf_counter()
        for _ in range(calls):
            await chat.complete(MESSAGES, max_tokens=MAX_TOKENS, temperature=0.0)
        return time.perf_counter() - started


async def main(calls: int, repeats: int) -> float:
    """Run the benchmark, print the figures and return the ratio redline / bare."""
    with OpenAICompatServer(handler=lambda request: REPLY) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="not-needed",
                                    max_retries=0)
        chat = OpenAIChat(server.model, base_url=server.base_url)
        await bare_loop(client, server.model, WARMUP)
        await redline_loop(chat, WARMUP)
        bare: list[float] = []
        ours: list[float] = []
        for i in range(repeats):
            # Alternate which side goes first, so neither always runs on a warmer machine.
            if i % 2 == 0:
                bare.append(await bare_loop(client, server.model, calls))
                ours.append(await redline_loop(chat, calls))
            else:
                ours.append(await redline_loop(chat, calls))
                bare.append(await bare_loop(client, server.model, calls))
        await client.close()
        await chat.aclose()

    bare_ms = statistics.median(bare) / calls * 1e3
    ours_ms = statistics.median(ours) / calls * 1e3
    ratio = ours_ms / bare_ms
    print(f"# {calls} calls x {repeats} alternating repeats, median; "
          f"python {platform.python_version()}, openai {openai.__version__}, "
          f"{platform.machine()} {platform.system()}")
    print("| client | ms per call |")
    print("|---|---|")
    print(f"| bare openai.AsyncOpenAI | {bare_ms:.3f} |")
    print(f"| redline OpenAIChat.complete (metered) | {ours_ms:.3f} |")
    print(f"| ratio redline / bare (target <= 1.25) | {ratio:.3f} |")
    print(f"| overhead per call | {ours_ms - bare_ms:+.3f} ms |")
    return ratio


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per repeat (300)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating repeats (5)")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.repeats))
