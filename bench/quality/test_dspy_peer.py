"""bench/quality/dspy_peer.py (DSPy's Refine as the quality benchmark's peer) against a
scripted loopback server: the counts, the draft, the hidden tests kept hidden, resume.

DSPy is no redline dependency, so this test lives with the benchmark, outside the test
suite (whose CI fails on a skip); run it with a Python that has DSPy:
``/tmp/dspyenv/bin/python -m pytest -q bench/quality/test_dspy_peer.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("dspy")

from redline.testing import OpenAICompatServer  # noqa: E402

SCRIPT = Path(__file__).resolve().parent / "dspy_peer.py"
INSTRUCTION = ("Complete the following Python function. Reply with the whole function, "
               "imports included, in one ```python code block.")
HIDDEN = "HIDDEN-CHECK"  # in every hidden test; must reach no request

PROMPTS = {
    "add": 'def add(a: int, b: int) -> int:\n    """Add two numbers.\n'
           '    >>> add(2, 3)\n    5\n    """\n',
    "mul": 'def mul(a: int, b: int) -> int:\n    """Multiply two numbers.\n'
           '    >>> mul(2, 3)\n    6\n    """\n',
}
TESTS = {
    "add": f"def check(candidate):\n    assert candidate(2, 3) == 5  # {HIDDEN}\n"
           "    assert candidate(-1, 1) == 0\n",
    "mul": f"def check(candidate):\n    assert candidate(2, 3) == 6  # {HIDDEN}\n"
           "    assert candidate(0, 7) == 0\n",
}
CODE = {
    ("add", "wrong"): "def add(a: int, b: int) -> int:\n    return a - b",
    ("add", "right"): "def add(a: int, b: int) -> int:\n    return a + b",
    ("mul", "right"): "def mul(a: int, b: int) -> int:\n    return a * b",
}


def answer(fields: dict[str, str]) -> str:
    """A reply in DSPy's ChatAdapter format."""
    body = "".join(f"[[ ## {name} ## ]]\n{value}\n\n" for name, value in fields.items())
    return body + "[[ ## completed ## ]]"


def which(request: dict[str, Any]) -> str:
    """The item a request is about (the feedback call quotes the task too)."""
    text = json.dumps(request["messages"])
    return "add" if "def add(" in text else "mul"


class Script:
    """The model: `add`'s first attempt is wrong, the hinted retry right; `mul` right.

    Stateless per request (a retry is told by DSPy's hint field), so a resumed run gets
    the same answers.
    """

    def __init__(self) -> None:
        self.replies: list[tuple[str, str]] = []  # (item, reply), in any order

    def __call__(self, request: dict[str, Any]) -> str:
        system = request["messages"][0]["content"]
        name = which(request)
        if "`advice`" in system:  # Refine's OfferFeedback call
            reply = answer({"discussion": "The write module subtracted.",
                            "advice": json.dumps({"write": "Add, do not subtract."})})
        else:
            retry = "hint_" in request["messages"][-1]["content"]
            kind = "wrong" if name == "add" and not retry else "right"
            reply = answer({"code": f"```python\n{CODE[name, kind]}\n```"})
        self.replies.append((name, reply))
        return reply


def words(text: str) -> int:
    return len(text.split())


def run_peer(server: OpenAICompatServer, data: Path, out: Path, *extra: str
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(data), "--base-url", server.base_url,
         "--model", server.model, "-o", str(out), "--n", "4", "--concurrency", "2",
         "--max-tokens", "512", *extra],
        capture_output=True, text=True, timeout=300)


def lines(out: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    header, *rest = [json.loads(raw) for raw in out.read_text().splitlines() if raw.strip()]
    return header, {line["id"]: line for line in rest}


def test_refine_peer_counts_draft_and_fix(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(
        json.dumps({"id": f"t/{name}", "task": f"{INSTRUCTION}\n\n```python\n{prompt}```",
                    "metadata": {"entry_point": name}, "hidden_tests": TESTS[name]}) + "\n"
        for name, prompt in PROMPTS.items()))
    out = tmp_path / "out.jsonl"
    script = Script()
    with OpenAICompatServer(handler=script) as server:
        done = run_peer(server, data, out)
        assert done.returncode == 0, done.stderr
        requests = server.requests

        header, got = lines(out)
        assert header["dspy_peer"] == 1
        assert {k: header["spec"][k] for k in ("model", "base_url", "n", "max_tokens")} == \
            {"model": server.model, "base_url": server.base_url, "n": 4, "max_tokens": 512}
        add, mul = got["t/add"], got["t/mul"]
        # add: a wrong draft (fails its example), feedback, a right retry.
        assert (add["method"], add["draft_correct"], add["correct"]) == \
            ("dspy-refine", False, True)
        assert add["rewards"] == [0.0, 1.0] and add["stop_reason"] == "threshold"
        assert "a - b" in add["draft"] and "a + b" in add["text"]
        assert (mul["draft_correct"], mul["correct"], mul["rewards"]) == (True, True, [1.0])
        assert "error" not in add and "error" not in mul
        # Per-item counts from the server's side: calls, and its word-count tokens.
        for name, line in (("add", add), ("mul", mul)):
            mine = [r for r in requests if which(r) == name]
            assert line["usage"]["llm_calls"] == len(mine) == (3 if name == "add" else 1)
            assert line["usage"]["input_tokens"] == sum(
                words(str(m.get("content") or "")) for r in mine for m in r["messages"])
            assert line["usage"]["output_tokens"] == sum(
                words(reply) for item, reply in script.replies if item == name)
            assert line["usage"]["seconds"] > 0
        assert all(r.get("max_tokens") == 512 for r in requests)
        # The hidden tests never reach the model.
        assert not any(HIDDEN in json.dumps(r) or "check(candidate)" in json.dumps(r)
                       for r in requests)
        assert "pass@1 2/2" in done.stdout and "flips 0, fixes 1" in done.stdout
        assert "| dspy-refine | 2/2 (100%) |" in done.stdout

        # A crash tore the last line: --resume drops it and runs that item alone.
        text = out.read_text()
        torn_id = json.loads(text.splitlines()[-1])["id"]
        out.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 1] + text.splitlines()[-1][:40])
        again = run_peer(server, data, out, "--resume")
        assert again.returncode == 0, again.stderr
        new = server.requests[len(requests):]
        assert {which(r) for r in new} == {torn_id.removeprefix("t/")}
        _, resumed = lines(out)
        assert set(resumed) == {"t/add", "t/mul"} and resumed[torn_id]["correct"] is True
        assert "pass@1 2/2" in again.stdout
