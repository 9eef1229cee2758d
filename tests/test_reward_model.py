"""RewardModelCritic on tiny reward models built and saved by the test (no download)."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import random
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import hf_tiny
import pytest

import redline
from redline.critics.reward_model import (
    CALIBRATION_FILE,
    Calibration,
    RewardModelCritic,
    calibrate,
    rm_critic,
)
from redline.errors import ConfigError, CriticError
from redline.plugins import build_critic
from redline.testing import ScriptedChat, acheck_critic
from redline.types import Candidate, StopReason, Task

pytestmark = pytest.mark.rm

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

SPECIAL = ["<unk>", "<pad>", "<eos>", "<cls>", "<sep>", "<|user|>", "<|assistant|>"]
TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<eos>{% endfor %}"
TASK = Task(prompt="What is the capital of France?", id="capital")
ANSWERS = ["Paris.", "The capital of France is Paris.", "Rome is the capital of Italy.",
           "I do not know.", "Paris is the capital of France; Rome is the capital of Italy. " * 3,
           "one two three", "def square(x): return x * x", "The lazy dog."]


def build_tokenizer(chat_template: str | None):
    return hf_tiny.build_tokenizer(SPECIAL, chat_template=chat_template, pair_markers=True)


def build_reward_model(folder: Path, *, chat: bool = True, causal: bool = False) -> Path:
    """A tiny one-output classifier: a Llama with a chat template, or a BERT text-pair
    model (``chat=False``); ``causal=True`` saves a causal LM instead (not a reward model)."""
    tokenizer = build_tokenizer(TEMPLATE if chat else None)
    torch.manual_seed(0)
    if chat or causal:
        config = transformers.LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=512, num_labels=1, initializer_range=0.2,
            pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
        cls = transformers.LlamaForCausalLM if causal else \
            transformers.LlamaForSequenceClassification
        model = cls(config)
    else:
        config = transformers.BertConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128,
            num_labels=1, initializer_range=0.2, pad_token_id=tokenizer.pad_token_id)
        model = transformers.BertForSequenceClassification(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_reward_model(tmp_path_factory.mktemp("tiny-rm-chat"))


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_reward_model(tmp_path_factory.mktemp("tiny-rm-pair"), chat=False)


@pytest.fixture(scope="module")
def critic(chat_dir: Path) -> RewardModelCritic:
    return RewardModelCritic(chat_dir, batch_size=8).load()


def reference_reward(folder: Path, prompt: str, answer: str) -> float:
    """The reward by hand: the model card's recipe, one unpadded input."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    if tokenizer.chat_template:
        enc = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
            tokenize=True, return_dict=True, return_tensors="pt")
    else:
        enc = tokenizer(prompt, answer, return_tensors="pt")
    with torch.inference_mode():
        return float(model(**enc).logits[0, 0])


async def test_scores_match_the_model_card_recipe_for_both_input_formats(
        chat_dir: Path, pair_dir: Path) -> None:
    for folder in (chat_dir, pair_dir):
        critic = RewardModelCritic(folder)
        got = await critic.critique(TASK, Candidate(text=ANSWERS[1]))
        assert got.raw == pytest.approx(reference_reward(folder, TASK.prompt, ANSWERS[1]),
                                        abs=1e-5)
        assert got.critic == "rm" and got.passed is None
        assert got.evidence["truncated"] is False and got.evidence["tokens"] > 5


async def test_scores_are_deterministic_and_pass_the_conformance_check(
        critic: RewardModelCritic) -> None:
    first = [await critic.critique(TASK, Candidate(text=a)) for a in ANSWERS]
    again = [await critic.critique(TASK, Candidate(text=a)) for a in ANSWERS]
    assert first == again
    assert len({c.raw for c in first}) == len(ANSWERS)  # the model tells them apart
    await acheck_critic(critic, [(TASK, a) for a in ANSWERS], concurrency=32)


async def test_batched_rewards_equal_one_at_a_time(chat_dir: Path, pair_dir: Path) -> None:
    for folder in (chat_dir, pair_dir):
        single = RewardModelCritic(folder, batch_size=1)
        alone = [(await single.critique(TASK, Candidate(text=a))).raw for a in ANSWERS]
        assert single.forward_passes == len(ANSWERS)
        batched = RewardModelCritic(folder, batch_size=len(ANSWERS))
        together = await batched.critique_many(TASK, [Candidate(text=a) for a in ANSWERS])
        assert batched.forward_passes == 1
        for a, b in zip(alone, together, strict=True):
            assert b.raw == pytest.approx(a, abs=1e-5)


async def test_32_concurrent_critiques_share_forward_passes(chat_dir: Path) -> None:
    critic = RewardModelCritic(chat_dir, batch_size=8, max_wait_ms=20)
    samples = [Candidate(text=f"{ANSWERS[i % len(ANSWERS)]} #{i}") for i in range(32)]
    got = await asyncio.gather(*(critic.critique(TASK, c) for c in samples))
    assert critic.forward_passes <= math.ceil(32 / 8)
    alone = RewardModelCritic(chat_dir, batch_size=1)
    for c, critique in zip(samples[:4], got, strict=False):
        assert critique.raw == pytest.approx((await alone.critique(TASK, c)).raw, abs=1e-5)


async def test_concurrent_loops_on_other_event_loops_share_the_model(chat_dir: Path) -> None:
    critic = RewardModelCritic(chat_dir, batch_size=4)

    def run() -> list[float]:
        async def main() -> list[float]:
            made = await asyncio.gather(*(critic.critique(TASK, Candidate(text=a))
                                          for a in ANSWERS))
            return [c.raw for c in made]
        return asyncio.run(main())

    results = await asyncio.gather(*(asyncio.to_thread(run) for _ in range(3)))
    assert results[0] == pytest.approx(results[1], abs=1e-5)
    assert results[1] == pytest.approx(results[2], abs=1e-5)


def test_a_finished_event_loop_is_not_kept_alive(critic: RewardModelCritic) -> None:
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def main() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        await critic.critique(TASK, Candidate(text="Paris."))

    asyncio.run(main())
    gc.collect()
    assert loops[0]() is None


@pytest.mark.parametrize("chat", [True, False], ids=["chat-template", "text-pair"])
async def test_a_long_answer_is_truncated_keeping_its_end(chat: bool, chat_dir: Path,
                                                          pair_dir: Path) -> None:
    folder = chat_dir if chat else pair_dir
    critic = RewardModelCritic(folder, max_length=40)
    ending = " The quick brown fox jumps over the lazy dog." * 6 + " In short: Paris."
    long_a = "one two three four five six seven eight nine ten " * 4 + ending
    long_b = "Rome is the capital of Italy. " * 4 + ending
    a, b, short = await critic.critique_many(
        TASK, [Candidate(text=long_a), Candidate(text=long_b), Candidate(text="Paris.")])
    assert a.evidence["truncated"] is True and a.evidence["tokens"] <= 40
    assert a.evidence["dropped_tokens"]["answer"] > 0
    assert a.evidence["dropped_tokens"]["prompt"] == 0
    assert short.evidence["truncated"] is False
    # Only the ends were read, and they are the same; so are the rewards.
    assert a.raw == pytest.approx(b.raw, abs=1e-5)
    changed = await critic.critique(TASK, Candidate(text=long_a[:-len(ending)] + " Rome?"))
    assert changed.raw != pytest.approx(a.raw, abs=1e-4)


async def test_a_long_prompt_keeps_its_start_and_leaves_room_for_the_answer(
        chat_dir: Path) -> None:
    critic = RewardModelCritic(chat_dir, max_length=40)
    task = Task(prompt="Answer briefly. " + "Numbers: one two three four five. " * 20)
    got = await critic.critique(task, Candidate(text="Paris is the capital of France."))
    assert got.evidence["truncated"] is True and got.evidence["tokens"] <= 40
    assert got.evidence["dropped_tokens"]["prompt"] > 0
    assert got.evidence["dropped_tokens"]["answer"] == 0


def test_calibration_maps_monotonically_and_inverts() -> None:
    cal = Calibration(b=1.5, T=0.5)
    grid = [x / 4 for x in range(-40, 41)]
    scores = [cal.score(r) for r in grid]
    assert scores == sorted(scores) and len(set(scores)) == len(scores)
    assert cal.score(1.5) == 0.5
    assert cal.score(cal.raw_at(0.9)) == pytest.approx(0.9)
    assert Calibration().score(0.0) == 0.5 and not Calibration().calibrated
    assert 0.0 <= cal.score(-1e6) < cal.score(1e6) <= 1.0


def test_calibrate_recovers_b_and_t_from_labelled_scores() -> None:
    rng = random.Random(7)
    raw = [rng.gauss(1.0, 2.0) for _ in range(4000)]
    labels = [rng.random() < 1 / (1 + math.exp(-(r - 1.5) / 0.7)) for r in raw]
    cal = calibrate(raw, labels=labels)
    assert cal.method == "labels" and cal.n == 4000 and cal.calibrated
    assert cal.b == pytest.approx(1.5, abs=0.15)
    assert cal.T == pytest.approx(0.7, rel=0.15)
    assert 0.8 < cal.accuracy < 0.95


def test_calibrate_fits_the_scale_of_preference_pairs() -> None:
    rng = random.Random(11)
    raw, pairs = [], []
    for _ in range(3000):
        x, y = rng.gauss(0, 2), rng.gauss(0, 2)
        x_wins = rng.random() < 1 / (1 + math.exp(-(x - y) / 0.5))
        raw += [x, y]
        pairs.append((len(raw) - 2, len(raw) - 1) if x_wins else (len(raw) - 1, len(raw) - 2))
    cal = calibrate(raw, pairs=pairs)
    assert cal.method == "pairs" and cal.n == 3000
    assert cal.T == pytest.approx(0.5, rel=0.15)
    chosen = sorted(raw[c] for c, _ in pairs)
    assert cal.b == pytest.approx((chosen[1499] + chosen[1500]) / 2)
    assert 0.8 < cal.accuracy < 0.95


def test_calibrate_stays_finite_on_separable_data_and_refuses_bad_input() -> None:
    cal = calibrate([2.0, 3.0, -1.0, -2.0], labels=[1, 1, 0, 0])
    assert cal.accuracy == 1.0 and 0 < cal.T < 10 and -1 < cal.b < 2
    assert calibrate([2.0, -1.0, 3.0, 0.0], pairs=[(0, 1), (2, 3)]).accuracy == 1.0
    for kwargs, words in [({}, "labels= or pairs="),
                          ({"labels": [1, 1, 1, 1]}, "all good"),
                          ({"labels": [1, 0]}, "2 labels for 4"),
                          ({"labels": [0, 0, 1, 1]}, "bad labels"),
                          ({"pairs": [(1, 0), (3, 2)]}, "rejected answers get higher"),
                          ({"pairs": [(0, 9), (1, 2)]}, "outside"),
                          ({"labels": [1, 0, 1, 0], "pairs": [(0, 1)]}, "one of them")]:
        with pytest.raises(ConfigError, match=words):
            calibrate([2.0, 3.0, -1.0, -2.0] if "pairs" not in kwargs else
                      [2.0, -1.0, 3.0, 0.0], **kwargs)
    with pytest.raises(ConfigError, match="every raw reward is the same"):
        calibrate([1.0, 1.0], labels=[1, 0])


async def test_the_saved_calibration_is_used_and_shown(chat_dir: Path, tmp_path: Path) -> None:
    import shutil

    folder = Path(shutil.copytree(chat_dir, tmp_path / "rm"))
    plain = await RewardModelCritic(folder).critique(TASK, Candidate(text="Paris."))
    assert plain.score == pytest.approx(1 / (1 + math.exp(-plain.raw)), abs=1e-4)
    assert plain.evidence["calibrated"] is False and "uncalibrated" in plain.feedback
    cal = Calibration(b=plain.raw - 0.1, T=0.05, method="pairs", n=10, accuracy=0.8)
    assert cal.save(folder) == folder / CALIBRATION_FILE
    assert Calibration.load(folder) == cal
    assert Calibration.load(tmp_path) is None
    tuned = await RewardModelCritic(folder).critique(TASK, Candidate(text="Paris."))
    assert tuned.raw == plain.raw and tuned.evidence["calibrated"] is True
    assert tuned.score == pytest.approx(1 / (1 + math.exp(-2)), abs=2e-3)
    assert tuned.feedback.startswith(f"reward model scored {tuned.score:.2f}")
    (folder / CALIBRATION_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        RewardModelCritic(folder)


async def test_the_loop_stops_when_the_reward_passes_the_threshold(chat_dir: Path) -> None:
    scorer = RewardModelCritic(chat_dir)
    first, second = "I do not know.", "The capital of France is Paris."
    r1, r2 = await scorer.rewards([(TASK.prompt, first), (TASK.prompt, second)])
    if r2 < r1:  # the model is random: let the better-rewarded answer come second
        (first, r1), (second, r2) = (second, r2), (first, r1)
    # b halfway between them, T so that the second scores ~0.95 and the first ~0.05.
    cal = Calibration(b=(r1 + r2) / 2, T=(r2 - r1) / 6, method="labels", n=2)
    critic = RewardModelCritic(chat_dir, calibration=cal)
    model = ScriptedChat([first, second, "never used"])
    result = await redline.arefine(TASK, model=model, critics=[critic], threshold=0.9,
                                   budget=redline.Budget(max_rounds=3))
    assert result.stop_reason is StopReason.threshold
    assert result.text == second
    assert [len(r.scored) for r in result.rounds] == [1, 1]
    draft, revised = (r.scored[0] for r in result.rounds)
    assert draft.score < 0.1 and revised.score > 0.9
    assert draft.critiques[0].raw == pytest.approx(r1, abs=1e-5)
    # The reviser saw the reward model's one-line verdict.
    revise_prompt = model.calls[1]["messages"][-1]["content"]
    assert "reward model scored" in revise_prompt


def test_a_missing_or_wrong_model_path_says_what_is_expected(tmp_path: Path,
                                                             chat_dir: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError, match="does not exist") as info:
        RewardModelCritic(missing)
    assert str(missing) in str(info.value) and "config.json" in str(info.value)
    assert "Hub id" in str(info.value) and "network" in str(info.value)
    with pytest.raises(ConfigError, match="expected a directory with config.json"):
        RewardModelCritic(tmp_path)
    with pytest.raises(ConfigError, match="needs a model"):
        rm_critic(None)
    with pytest.raises(ConfigError, match="batch_size"):
        RewardModelCritic(chat_dir, batch_size=0)


async def test_a_model_that_is_not_a_reward_model_is_refused_by_name(tmp_path: Path) -> None:
    folder = build_reward_model(tmp_path / "causal", causal=True)
    critic = RewardModelCritic(folder)
    with pytest.raises(CriticError, match="LlamaForCausalLM, not a reward model") as info:
        await critic.critique(TASK, Candidate(text="Paris."))
    assert str(folder) in str(info.value)
    broken = build_reward_model(tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CriticError, match="could not load the reward model") as info:
        RewardModelCritic(broken).load()
    assert str(broken) in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
async def test_an_unusable_device_is_a_critic_error(chat_dir: Path) -> None:
    with pytest.raises(CriticError, match="device 'cuda'"):
        await RewardModelCritic(chat_dir, device="cuda").critique(TASK, Candidate(text="x"))


def test_the_plugin_builds_it_with_the_command_line_settings(chat_dir: Path) -> None:
    critic = build_critic(f"rm:{chat_dir}", {"rm_device": "cpu", "rm_batch_size": 3,
                                             "unrelated": 1})
    assert isinstance(critic, RewardModelCritic)
    assert (critic.name, critic.device, critic.batch_size) == ("rm", "cpu", 3)
    assert critic.deterministic and not critic.loaded


def test_building_the_critic_does_not_import_torch(chat_dir: Path) -> None:
    code = ("import sys; from redline.plugins import build_critic; "
            f"c = build_critic({'rm:' + str(chat_dir)!r}); "
            "print(type(c).__name__, 'torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "RewardModelCritic False False"


def count_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every reward-model checkpoint load from now on, by folder."""
    loads: list[str] = []
    real = transformers.AutoModelForSequenceClassification.from_pretrained

    def counted(source: Any, *args: Any, **kwargs: Any) -> Any:
        loads.append(str(source))
        return real(source, *args, **kwargs)
    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained",
                        counted)
    return loads


async def test_critics_of_one_model_share_one_loaded_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = build_reward_model(tmp_path / "rm")
    loads = count_loads(monkeypatch)
    first, second = RewardModelCritic(folder).load(), RewardModelCritic(folder, batch_size=2)
    await second.preflight()
    assert len(loads) == 1  # the second critic found the first's copy
    one = await first.critique(TASK, Candidate(text="Paris."))
    two = await second.critique(TASK, Candidate(text="Paris."))
    assert one.score == two.score and second.forward_passes == 1
    RewardModelCritic(folder, dtype="bfloat16").load()
    assert len(loads) == 2  # another dtype is another copy
    # The shared copy lives only while a critic holds it: none leaks.
    del first, second
    await asyncio.sleep(0.01)  # the batches' done callbacks run and let go of them
    gc.collect()
    RewardModelCritic(folder).load()
    assert len(loads) == 3


def test_compare_loads_the_reward_model_once_for_all_its_methods(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from redline.cli import cli
    from redline.testing import OpenAICompatServer

    folder = build_reward_model(tmp_path / "rm")
    items = tmp_path / "items.jsonl"
    items.write_text('{"id": "a", "task": "Capital of France?", "answer": "Paris"}\n'
                     '{"id": "b", "task": "Capital of Italy?", "answer": "Rome"}\n')
    loads = count_loads(monkeypatch)
    with OpenAICompatServer(handler=lambda request: "The answer is Paris.") as server:
        result = CliRunner().invoke(cli, [
            "compare", str(items), "--methods", "best-of-n,self-refine,critic",
            "-c", f"rm:{folder}", "--max-tokens", "4000", "-o", str(tmp_path / "out.jsonl"),
            "--base-url", server.base_url, "--model", server.model, "-q"])
    assert result.exit_code == 0, result.output
    # Before: one load per method (3), two copies in memory from the second method on.
    assert loads == [str(folder)]
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()[1:]]
    assert sorted((x["method"], x["id"]) for x in lines) == [
        (m, i) for m in ("best-of-n", "critic", "self-refine") for i in ("a", "b")]
