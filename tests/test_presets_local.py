"""Each preset end to end on the embedded model (SmolLM2-135M), as the README's Methods
section writes it: every run ends with a result (exit 0 or 1, an answer written, the
method's steps in the trace). A tiny model fails in ways a scripted one never does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.local

MODEL_ENV = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "REDLINE_MODEL", "REDLINE_MODEL_PATH")
ENV = {k: v for k, v in os.environ.items() if k not in MODEL_ENV}

IS_EVEN = '''def is_even(n):
    """Return True when n is even.

    >>> is_even(4)
    True
    >>> is_even(7)
    False
    """
    return n % 2 == 1
'''
FIX = ["-f", "is_even.py", "--task", "Fix is_even so that its examples pass."]


def redline(*args: str, cwd: Path) -> dict:
    """Run ``redline refine ARGS --json``; the result document."""
    out = subprocess.run([sys.executable, "-m", "redline", "refine", *args, "--json"],
                         cwd=cwd, capture_output=True, text=True, env=ENV, timeout=600)
    assert out.returncode in (0, 1), out.stderr
    doc = json.loads(out.stdout)
    assert doc["text"] and doc["best"]["unscored"] is False
    return doc


def candidates(doc: dict) -> list[dict]:
    return [s["candidate"] for r in doc["rounds"] for s in r["scored"]]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "is_even.py").write_text(IS_EVEN)
    return tmp_path


def test_self_debug(work: Path) -> None:
    doc = redline("--preset", "self-debug", *FIX, "--max-rounds", "1", cwd=work)
    draft = doc["rounds"][0]["scored"][0]
    assert draft["candidate"]["origin"] == "given"
    assert draft["critiques"][0]["critic"] == "tests" and draft["critiques"][0]["passed"] is False
    if doc["stop_reason"] != "error" and len(doc["rounds"]) > 1:  # a revision was made
        assert candidates(doc)[1]["explanation"]


def test_reflexion(work: Path) -> None:
    doc = redline("--preset", "reflexion", "-c", "doctest", *FIX, "--memory", "2",
                  "--max-rounds", "1", cwd=work)
    assert doc["settings"]["preset"] == "reflexion"
    if len(doc["rounds"]) > 1:
        assert doc["rounds"][0]["reflection"] and doc["memory"]


def test_self_refine(work: Path) -> None:
    doc = redline("--preset", "self-refine", "Explain what a hash map is in two sentences.",
                  "--max-rounds", "1", cwd=work)
    assert doc["rounds"][0]["scored"][0]["critiques"][0]["critic"] == "judge"


def test_critic(work: Path) -> None:
    doc = redline("--preset", "critic", "A box holds 12 eggs. How many eggs are in 7 boxes?",
                  "--max-rounds", "1", cwd=work)
    critique = doc["rounds"][0]["scored"][0]["critiques"][0]
    assert critique["critic"] == "interpreter"
    if len(doc["rounds"]) > 1:  # revised only on a failure the interpreter flagged
        assert critique["passed"] is False


def test_best_of_n(work: Path) -> None:
    doc = redline("--preset", "best-of-n", "-n", "3", "--select", "vote",
                  "What is 17 + 25? End with: The answer is N.", cwd=work)
    assert len(doc["rounds"]) == 1 and len(doc["rounds"][0]["scored"]) == 3
    assert doc["stop_reason"] in ("sampled", "threshold")


def test_resample(work: Path) -> None:
    doc = redline("--preset", "resample", "-n", "3", "-c", "doctest", *FIX, cwd=work)
    found = candidates(doc)
    assert found[0]["origin"] == "given" and len(found) <= 3
    assert doc["rounds"][0]["scored"][0]["critiques"][0]["passed"] is False
    assert all(c["origin"] == "draft" and c["parent"] is None for c in found[1:])
    assert doc["stop_reason"] in ("threshold", "verified", "budget", "converged")


def test_the_readmes_python_example_runs_as_written(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    methods = readme[readme.index("## Methods"):readme.index("## Models")]
    block = methods[methods.index("```python\n") + 10:]
    block = block[:block.index("```")]
    out = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True,
                         text=True, env=ENV, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "StopReason.sampled" in out.stdout or "StopReason.threshold" in out.stdout
