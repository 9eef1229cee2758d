"""End to end on the real embedded model (SmolLM2-135M via llama.cpp): the library loop
and the `redline` command as a subprocess. SmolLM2 is weak, so these tests assert what
must hold of any trajectory, plus what a deterministic critic makes certain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import redline
from redline import Budget, StopReason, critic
from redline.llm.local import LocalModel

pytestmark = pytest.mark.local

MODEL_ENV = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "REDLINE_MODEL", "REDLINE_MODEL_PATH")


def servers_running() -> list[int]:
    """Pids of llama.cpp servers serving the embedded GGUF."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"SmolLM2-135M-Instruct" in cmd and b"--port" in cmd:
                pids.append(int(proc.name))
    return pids


def check_trajectory(result: redline.RefineResult, max_rounds: int) -> None:
    scored = [s for r in result.rounds for s in r.scored]
    assert scored, "no candidate was scored"
    assert result.best.score == max(s.score for s in scored)   # best-so-far
    assert len(result.rounds) <= max_rounds + 1
    assert result.usage.llm_calls >= 1 and result.usage.output_tokens > 0
    if result.stop_reason is StopReason.threshold:
        assert result.best.score >= result.threshold


@pytest.fixture(scope="module")
def model():
    with LocalModel() as m:
        m.start()
        yield m
    assert not servers_running()


async def test_refine_on_the_embedded_model_with_a_deterministic_critic(model) -> None:
    @critic(gate=True)
    def mentions_paris(text: str) -> bool:
        "The answer must name Paris."
        return "paris" in text.lower()

    result = await redline.arefine(
        "What is the capital of France? Answer in one sentence.", model=model,
        critics=[mentions_paris], budget=Budget(max_rounds=2, max_tokens=4000))
    check_trajectory(result, 2)
    # The critic is deterministic: the verdict matches the text, whatever the model wrote.
    for s in (s for r in result.rounds for s in r.scored):
        assert s.gates_passed == ("paris" in s.candidate.text.lower())
    if result.stop_reason is StopReason.threshold:
        assert "paris" in result.text.lower()
    assert result.usage.total_tokens <= 4000


async def test_revisions_happen_and_the_budget_holds_on_the_embedded_model(model) -> None:
    @critic
    def says_banana(text: str) -> tuple[float, str]:
        return (1.0, "") if "banana" in text.lower() else (0.3, "Mention a banana.")

    events: list[redline.Progress] = []
    result = await redline.arefine(
        "Name a yellow fruit.", model=model, critics=[says_banana], patience=3,
        budget=Budget(max_rounds=2, max_llm_calls=3), on_progress=events.append)
    check_trajectory(result, 2)
    assert result.usage.llm_calls <= 3
    if result.rounds[0].scored[0].score < 1.0:
        # The draft missed: the loop revised (or found the reviser repeating itself).
        assert len(result.rounds) >= 2
        assert "Mention a banana." in json.dumps(result.model_dump(mode="json"))
    assert events[-1].node == "finalize"


async def test_the_llm_judge_runs_on_the_embedded_model(model) -> None:
    result = await redline.arefine("Write one sentence about the sea.", model=model,
                                   budget=Budget(max_rounds=1))
    check_trajectory(result, 1)
    judge = result.rounds[0].scored[0].critiques[0]
    assert judge.critic == "judge" and judge.raw is not None and 0 <= judge.raw <= 10
    assert judge.usage.llm_calls >= 1


def test_the_cli_on_the_embedded_model(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in MODEL_ENV}
    before = set(servers_running())
    target = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "redline", "refine", "Name the three primary colors.",
         "--max-rounds", "1", "--json", "-o", str(target)],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr
    data = redline.RefineResult.from_document(json.loads(target.read_text()))
    assert (proc.returncode == 0) == (data.stop_reason is StopReason.threshold)
    check_trajectory(data, 1)
    assert set(servers_running()) <= before  # its server did not outlive the command


def test_the_cli_with_the_example_plugin_on_the_embedded_model() -> None:
    pytest.importorskip("redline_readability",
                        reason="pip install -e examples/redline-readability")
    env = {k: v for k, v in os.environ.items() if k not in MODEL_ENV}
    before = set(servers_running())
    proc = subprocess.run(
        [sys.executable, "-m", "redline", "refine", "Explain what a cloud is to a child.",
         "--critic", "readability:6", "--max-rounds", "1", "--json"],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr
    data = json.loads(proc.stdout)
    critique = data["rounds"][0]["scored"][0]["critiques"][0]
    assert critique["critic"] == "readability" and critique["raw"] is not None
    assert set(servers_running()) <= before
