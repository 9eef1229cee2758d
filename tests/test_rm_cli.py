"""``redline rm calibrate`` and ``redline rm show`` on a tiny reward model."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from redline.cli import cli

pytestmark = pytest.mark.rm

pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_reward_model import ANSWERS, build_reward_model  # noqa: E402

from redline.critics.reward_model import (  # noqa: E402
    CALIBRATION_FILE,
    Calibration,
    RewardModelCritic,
)

PROMPTS = ["What is the capital of France?", "Name a prime number.", "Square 3."]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_reward_model(tmp_path_factory.mktemp("tiny-rm-cli"))


@pytest.fixture
def model_dir(built: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "rm"))


def rewards(folder: Path, items: list[tuple[str, str]]) -> list[float]:
    return asyncio.run(RewardModelCritic(folder).rewards(items))


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_calibrate_on_preference_pairs(model_dir: Path, tmp_path: Path) -> None:
    # Pairs the model agrees with, but for one in five: accuracy 0.8.
    items = [(p, a) for p in PROMPTS for a in ANSWERS[:4]]
    raw = rewards(model_dir, items)
    rows = []
    for k in range(0, len(items) - 1, 2):
        (p, a), (_, b) = items[k], items[k + 1]
        better, worse = (a, b) if raw[k] > raw[k + 1] else (b, a)
        if len(rows) % 5 == 4:
            better, worse = worse, better
        rows.append({"prompt": p, "chosen": better, "rejected": worse})
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    result = run("rm", "calibrate", str(data), "--model", str(model_dir), "--batch-size", "4")
    assert result.exit_code == 0, result.output
    cal = Calibration.load(model_dir)
    assert cal is not None and cal.method == "pairs" and cal.n == len(rows) == 6
    assert cal.accuracy == pytest.approx(5 / 6)
    out = result.output
    assert "6 preference pairs" in out and "pair accuracy: 0.833" in out
    assert f"wrote {model_dir / CALIBRATION_FILE}" in out
    assert f"{cal.raw_at(0.5):>10.4g}  as good as a typical chosen answer" in out
    assert "preferred over a typical chosen answer 9 times in 10" in out
    # The critic now uses it.
    critic = RewardModelCritic(model_dir)
    assert critic.calibration == cal
    shown = run("rm", "show", str(model_dir))
    assert shown.exit_code == 0 and "calibrated on 6 preference pairs" in shown.output


def test_calibrate_on_labelled_answers(model_dir: Path, tmp_path: Path) -> None:
    items = [(p, a) for p in PROMPTS for a in ANSWERS]
    raw = rewards(model_dir, items)
    middle = sorted(raw)[len(raw) // 2]
    rows = [{"prompt": p, "response": a, "label": int(r >= middle) if k != 3 else r < middle}
            for k, ((p, a), r) in enumerate(zip(items, raw, strict=True))]
    data = write_jsonl(tmp_path / "labels.jsonl", rows)
    result = run("rm", "calibrate", str(data), "--model", str(model_dir))
    assert result.exit_code == 0, result.output
    cal = Calibration.load(model_dir)
    assert cal is not None and cal.method == "labels" and cal.n == len(rows)
    assert f"label accuracy: {cal.accuracy:.3f}" in result.output
    assert "a 70% chance of being labelled good" in result.output


def test_show_an_uncalibrated_model(model_dir: Path) -> None:
    result = run("rm", "show", str(model_dir))
    assert result.exit_code == 0
    assert "not calibrated" in result.output and "b = 0, T = 1" in result.output


@pytest.mark.parametrize(("content", "words"), [
    (None, "cannot read"),
    ("", "has no rows"),
    ('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{oops\n', "line 2: not JSON"),
    ('{"prompt": "p", "chosen": "a"}\n', "missing rejected"),
    ('[1, 2]\n', "expected a JSON object"),
    ('{"prompt": "p", "response": "a", "label": "yes"}\n', "label must be true/false"),
    ('{"prompt": "p", "response": 3, "label": 1}\n', "must be strings"),
    ('{"prompt": "p", "chosen": "a", "rejected": "b"}\n'
     '{"prompt": "p", "response": "a", "label": 1}\n', "line 2: a label row in a file of pairs"),
    ('{"prompt": "p", "response": "a", "label": 1}\n'
     '{"prompt": "p", "response": "b", "label": true}\n', "labels are all good"),
    ('{"prompt": "p", "chosen": "a", "rejected": "b"}\n', "at least 2 preference pairs"),
], ids=["missing-file", "empty", "bad-json", "missing-key", "not-object", "bad-label",
        "not-string", "mixed", "one-class", "one-pair"])
def test_bad_input_is_one_line_and_exit_2(content: str | None, words: str, model_dir: Path,
                                          tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    if content is not None:
        data.write_text(content)
    result = run("rm", "calibrate", str(data), "--model", str(model_dir))
    assert result.exit_code == 2
    assert result.output.startswith("redline: error: ") and words in result.output
    assert result.output.count("\n") == 1
    assert not (model_dir / CALIBRATION_FILE).exists()


def test_a_model_path_that_is_not_a_folder_is_exit_2(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}] * 2)
    result = run("rm", "calibrate", str(data), "--model", str(tmp_path / "nope"))
    assert result.exit_code == 2 and "is not a folder" in result.output
    result = run("rm", "calibrate", str(data), "--model", str(tmp_path))
    assert result.exit_code == 2 and "config.json" in result.output
    assert run("rm", "show", str(tmp_path / "nope")).exit_code == 2


def test_refine_with_the_rm_critic_stops_at_the_threshold(model_dir: Path) -> None:
    from redline.testing import OpenAICompatServer
    from redline.types import RefineResult

    task = "What is the capital of France?"
    first, second = "I do not know.", "The capital of France is Paris."
    r1, r2 = rewards(model_dir, [(task, first), (task, second)])
    if r2 < r1:
        (first, r1), (second, r2) = (second, r2), (first, r1)
    Calibration(b=(r1 + r2) / 2, T=(r2 - r1) / 6, method="pairs", n=2).save(model_dir)
    with OpenAICompatServer([first, second]) as server:
        result = run("refine", task, "--base-url", server.base_url, "-c", f"rm:{model_dir}",
                     "--rm-device", "cpu", "--rm-batch-size", "2", "-t", "0.9", "--json",
                     "-q")
    assert result.exit_code == 0, result.output
    run_result = RefineResult.from_document(json.loads(result.output[result.output.index("{"):]))
    assert run_result.text == second and run_result.stop_reason.value == "threshold"
    draft, revised = (r.scored[0].critiques[0] for r in run_result.rounds)
    assert draft.critic == "rm" and draft.score < 0.1 < 0.9 < revised.score
    assert revised.evidence["calibrated"] is True


def test_a_model_that_breaks_is_one_line_and_exit_3(tmp_path: Path) -> None:
    folder = build_reward_model(tmp_path / "causal", causal=True)
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}] * 2)
    result = run("rm", "calibrate", str(data), "--model", str(folder))
    assert result.exit_code == 3, result.output
    assert result.output.startswith("redline: error: ") and result.output.count("\n") == 1
    assert "LlamaForCausalLM, not a reward model" in result.output
    assert not (folder / CALIBRATION_FILE).exists()
