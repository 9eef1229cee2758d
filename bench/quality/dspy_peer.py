"""DSPy's ``Refine`` as the peer method of the quality benchmark: the same HumanEval
items, the same model on the same server, success judged by the same hidden tests as
``redline compare --evaluator tests``.

    /tmp/dspyenv/bin/python bench/quality/dspy_peer.py \\
        --data bench/quality/results/humaneval-every8.jsonl \\
        --base-url http://127.0.0.1:18431/v1 --model qwen-0.5b \\
        -o bench/quality/results/dspy-qwen-0.5b.jsonl

DSPy is not a redline dependency: run this with a Python that has both (``pip install
dspy`` in a virtualenv made with ``--system-site-packages``).

The program is ``dspy.Refine(Solver(), N=4, reward_fn=passes_examples, threshold=1.0)``.
``Solver`` is one ``dspy.Predict`` (task -> code), not ``ChainOfThought``: redline's
single-shot baseline and its presets' drafts ask for the code directly, so a Predict
draft is the like-for-like one; a reasoning field would change the draft prompt and spend
tokens on every attempt. The reward is the share of the prompt's visible examples
(``>>>``, else prose ones such as ``f(2) == 4``, since 09b6a54) the code passes, run in
redline's sandbox by its ``doctest`` critic (the hidden tests are never shown to DSPy; a
problem without examples rewards code that loads with 1.0, as that critic scores it).
DSPy's own logic is left alone: every attempt samples at temperature 1.0, and between
attempts an ``OfferFeedback`` call writes a hint for the next one.

Each output line has the shape of a ``redline compare`` line (``method``, ``id``,
``correct``, ``draft_correct``, ``text``, ``stop_reason``, ``usage``), after the header
``{"dspy_peer": 1, "spec": {...}}``; ``--resume`` skips the ids already written.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, TypeVar

# Offline: DSPy and LiteLLM otherwise fetch a model price table from the internet at
# first use; the bundled one is enough for a loopback server.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "true")

try:
    import dspy
    from dspy.utils.callback import BaseCallback
except ImportError:
    raise SystemExit("dspy_peer: DSPy is not installed in this Python; run it with one that "
                     "has it: python -m venv --system-site-packages /tmp/dspyenv && "
                     "/tmp/dspyenv/bin/pip install dspy") from None

from redline.critics.code_tests import DoctestCritic
from redline.types import Candidate, Task
from redline.workflows._batch_output import BatchOutput
from redline.workflows.batch import read_items
from redline.workflows.compare import CompareItem, MethodRow, make_evaluator

METHOD = "dspy-refine"
T = TypeVar("T")


class WriteCode(dspy.Signature):
    """Write the Python code the task asks for."""

    task: str = dspy.InputField(desc="the task: an instruction and a function stub")
    code: str = dspy.OutputField(desc="the complete Python code")


# Refine shows the model this class's source in every feedback call; given a bare
# Predict it would show dspy.Predict's source (12,000 characters of DSPy internals).
class Solver(dspy.Module):
    """One prediction: task -> code."""

    def __init__(self) -> None:
        super().__init__()
        self.write = dspy.Predict(WriteCode)

    def forward(self, task: str) -> dspy.Prediction:
        return self.write(task=task)


class SandboxLoop:
    """One event loop in a thread of its own, running redline's async sandbox for
    DSPy's synchronous threads.

    DSPy calls the reward function synchronously, in whichever worker thread runs the
    item. `run` hands the coroutine to this loop (``run_coroutine_threadsafe``) and
    blocks only the calling thread until it is done, so every sandbox run shares one
    loop and the sandbox's limit on parallel runs, whatever thread asked.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sandbox-loop",
                                       daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class ItemTally(BaseCallback):
    """What one item's run did, from DSPy's callbacks: LLM calls, and each attempt's
    code in order (None: the attempt produced no parseable answer).

    It is installed with ``dspy.context(callbacks=[...])`` in the thread that runs the
    item, so it sees that item's calls only (concurrent items each have their own).
    """

    def __init__(self) -> None:
        self.calls = 0
        self.attempts: list[str | None] = []
        self._open: dict[str, int] = {}  # call id of an attempt -> its index

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.calls += 1

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        # The writer's Predict (not Refine, Solver, or the OfferFeedback Predict).
        if isinstance(instance, dspy.Predict) and "code" in instance.signature.output_fields:
            self._open[call_id] = len(self.attempts)
            self.attempts.append(None)

    def on_module_end(self, call_id: str, outputs: Any | None,
                      exception: BaseException | None = None) -> None:
        index = self._open.pop(call_id, None)
        if index is not None and outputs is not None and exception is None:
            self.attempts[index] = outputs.code


def solve(item: CompareItem, args: argparse.Namespace, sandbox: SandboxLoop
          ) -> dict[str, Any]:
    """Run Refine on one item in this thread and judge its first and final code."""
    task: Task = item.to_task()  # prompt and entry point only: no hidden tests
    examples = DoctestCritic()
    rewards: list[float] = []

    def passes_examples(args: dict[str, Any], pred: dspy.Prediction) -> float:
        """The share of the task's examples the code passes (0 if it does not load)."""
        critique = sandbox.run(examples.critique(task, Candidate(text=pred.code or "")))
        rewards.append(critique.score)
        return critique.score

    lm = dspy.LM("openai/" + args.model, api_base=args.base_url, api_key="unused",
                 temperature=args.temperature, max_tokens=args.max_tokens, cache=False,
                 # LiteLLM sends max_tokens, which llama_cpp.server reads; DSPy's own
                 # engine sends max_completion_tokens, which it ignores (no limit).
                 engine="litellm", timeout=args.llm_timeout)
    # A Refine per item: its fail_count is instance state that drains across calls.
    program = dspy.Refine(Solver(), N=args.n, reward_fn=passes_examples, threshold=1.0)
    tally = ItemTally()
    final: str | None = None
    error: str | None = None
    start = time.perf_counter()
    # The LM, the callbacks and the usage tracker are this thread's context: concurrent
    # items never mix their counts.
    with dspy.context(lm=lm, callbacks=[tally]), dspy.track_usage() as usage:
        try:
            prediction = program(task=item.task)
        except Exception as exc:  # Refine re-raises its last attempt's failure
            error = f"{type(exc).__name__}: {exc}"
        else:
            if prediction is None:
                error = "no attempt produced an answer"
            else:
                final = prediction.code
    seconds = time.perf_counter() - start
    tokens = {"prompt_tokens": 0, "completion_tokens": 0}
    for totals in usage.get_total_tokens().values():
        for key in tokens:
            tokens[key] += int(totals.get(key) or 0)
    draft = tally.attempts[0] if tally.attempts else None
    evaluator = make_evaluator("tests")  # what redline compare --evaluator tests runs
    right = sandbox.run(evaluator(item, final))
    draft_right = right if draft == final else sandbox.run(evaluator(item, draft))
    stop = "error" if error else "threshold" if rewards and max(rewards) >= 1.0 else "budget"
    return {"method": METHOD, "correct": right, "draft_correct": draft_right, "id": item.id,
            "text": final, "draft": draft, "rewards": rewards, "stop_reason": stop,
            **({"error": error} if error else {}),
            "usage": {"input_tokens": tokens["prompt_tokens"],
                      "output_tokens": tokens["completion_tokens"],
                      "llm_calls": tally.calls, "cost_usd": 0.0,
                      "seconds": round(seconds, 3)}}


def tally_file(path: str) -> MethodRow:
    """The row of every line in the output (this run's and a resumed one's)."""
    import json

    row = MethodRow(METHOD)
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f):
            if number and raw.strip():
                row.add(json.loads(raw))
    return row


def report(row: MethodRow) -> None:
    """A one-line summary and a markdown table row like the bench README's."""
    low, high = row.interval
    tokens, calls = row.per_item(row.tokens), row.per_item(row.calls)
    seconds = row.per_item(row.seconds)
    print(f"dspy_peer: {row.method}: pass@1 {row.correct}/{row.items} ({row.success:.1%}, "
          f"95% CI {low:.1%}-{high:.1%}); drafts right {row.drafts_right}; "
          f"{tokens:,.0f} tokens, {calls:.1f} calls, {seconds:.1f} s per item; "
          f"flips {row.flips}, fixes {row.fixes}, errors {row.errors}")
    print("| method | pass@1 | 95% CI | tokens/item | calls/item | s/item | flips | fixes |")
    print(f"| {row.method} | {row.correct}/{row.items} ({row.success:.0%}) | "
          f"{low:.0%}-{high:.0%} | {tokens:,.0f} | {calls:.1f} | {seconds:.1f} | "
          f"{row.flips} | {row.fixes} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a compare dataset (run.py writes it)")
    parser.add_argument("--base-url", required=True, help="an OpenAI-compatible server")
    parser.add_argument("--model", required=True, help="the model name the server serves")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.jsonl")
    parser.add_argument("--n", type=int, default=4, help="Refine's attempts")
    parser.add_argument("--concurrency", type=int, default=2, help="items in flight")
    parser.add_argument("--max-tokens", type=int, default=512, help="completion tokens per call")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="the LM's temperature (Refine samples its attempts at 1.0 "
                             "whatever this says; its feedback calls use this)")
    parser.add_argument("--llm-timeout", type=float, default=900.0,
                        help="seconds one call may take (llama_cpp.server queues requests)")
    parser.add_argument("--resume", action="store_true", help="continue OUT: skip its ids")
    args = parser.parse_args()
    if args.n < 1 or args.concurrency < 1 or args.max_tokens < 1:
        raise SystemExit("dspy_peer: --n, --concurrency and --max-tokens must be at least 1")

    items = read_items(args.data, model=CompareItem)
    spec = {"model": args.model, "base_url": args.base_url, "n": args.n,
            "max_tokens": args.max_tokens, "temperature": args.temperature,
            "module": "Predict", "dspy": dspy.__version__}
    output = BatchOutput(args.output, spec, resume=args.resume, kind="dspy_peer",
                         key=lambda d: (d.get("method"), d.get("id")))
    todo = [i for i in items if (METHOD, i.id) not in output.done]
    output.start()
    # DSPy imports LiteLLM at the first call; importing it takes seconds of CPU, which
    # would be counted in the first items' seconds.
    import litellm  # noqa: F401

    sandbox = SandboxLoop()
    pool = ThreadPoolExecutor(args.concurrency, thread_name_prefix="dspy-item")
    try:
        futures = [pool.submit(solve, item, args, sandbox) for item in todo]
        for done, future in enumerate(as_completed(futures), 1):
            line = future.result()
            output.write(line)  # only this thread writes
            print(f"dspy_peer: {done}/{len(todo)} {line['id']}: correct={line['correct']} "
                  f"draft={line['draft_correct']}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        raise SystemExit(f"dspy_peer: interrupted; {args.output!r} keeps what finished "
                         "(--resume continues)") from None
    finally:
        pool.shutdown(wait=True)
        sandbox.close()
    report(tally_file(args.output))


if __name__ == "__main__":
    main()
