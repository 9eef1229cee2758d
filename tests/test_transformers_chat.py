"""TransformersChat on a tiny causal LM built and saved by the test (no download)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import hf_tiny
import pytest

import redline
from redline.errors import ConfigError, LLMError
from redline.llm import Meter
from redline.llm.transformers import TransformersChat
from redline.types import Budget

pytestmark = pytest.mark.rm

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

SPECIAL = ["<unk>", "<pad>", "<eos>", "<|system|>", "<|user|>", "<|assistant|>"]
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<eos>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is the capital of France?"}]


def build_tokenizer(chat_template: str | None):
    return hf_tiny.build_tokenizer(SPECIAL, chat_template=chat_template)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = build_tokenizer(TEMPLATE)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=16384, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        # A random model could end its answer at once; these tests want text. With a zero
        # row, <eos> scores 0 while the best of ~300 random logits is all but surely > 0.
        model.lm_head.weight[tokenizer.eos_token_id] = 0.0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def chat(model_dir: Path) -> TransformersChat:
    return TransformersChat(str(model_dir))


def prompt_ids(tokenizer, messages) -> list[int]:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


async def test_loads_lazily_and_generates_deterministically_when_greedy(model_dir: Path):
    chat = TransformersChat(str(model_dir))
    assert not chat.loaded
    assert chat.model == str(model_dir)
    first = await chat.complete(MESSAGES, max_tokens=12)
    assert chat.loaded
    second = await chat.complete(MESSAGES, max_tokens=12)

    assert first.text.strip()
    assert first.text == second.text
    assert first.model == str(model_dir)
    assert first.usage.llm_calls == 1


async def test_usage_counts_are_the_tokenizers_and_max_tokens_is_honoured(
        chat: TransformersChat, model_dir: Path):
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    expected_prompt = len(prompt_ids(tokenizer, MESSAGES))

    completion = await chat.complete(MESSAGES, max_tokens=7)

    assert completion.usage.input_tokens == expected_prompt
    assert completion.usage.output_tokens == 7
    assert completion.finish_reason == "length"
    # Once loaded, the budget estimate is the exact count, not the byte bound.
    assert chat.estimate_input_tokens(MESSAGES) == expected_prompt


async def test_stop_strings_cut_the_text_and_end_generation(chat: TransformersChat):
    full = await chat.complete(MESSAGES, max_tokens=40)
    # A stop string that first occurs in the middle of the greedy answer (letters: the
    # random model's bytes are not all valid UTF-8 on their own).
    runs = [m.group() for m in re.finditer(r"[A-Za-z]{2,}", full.text)
            if full.text.find(m.group()) > 3]
    assert runs, full.text
    stop = runs[len(runs) // 2]
    at = full.text.find(stop)

    cut = await chat.complete(MESSAGES, max_tokens=40, stop=[stop, "never-generated"])

    assert cut.text == full.text[:at]
    assert cut.finish_reason == "stop"
    assert cut.usage.output_tokens < full.usage.output_tokens


async def test_sampling_follows_the_seed(chat: TransformersChat):
    one = await chat.complete(MESSAGES, max_tokens=20, temperature=1.0, seed=7)
    two = await chat.complete(MESSAGES, max_tokens=20, temperature=1.0, seed=7)
    greedy = await chat.complete(MESSAGES, max_tokens=20)
    assert one.text == two.text
    assert one.text != greedy.text  # near-uniform logits: sampling leaves the greedy path


async def test_generation_leaves_the_event_loop_free(chat: TransformersChat):
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.002)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await chat.complete(MESSAGES, max_tokens=150)
    finally:
        task.cancel()
    assert ticks > 5


async def test_a_cancelled_call_stops_generating_and_frees_the_model(chat: TransformersChat):
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await chat.complete(MESSAGES, max_tokens=10_000)  # ~15 s if it went on
    started = time.monotonic()
    quick = await chat.complete(MESSAGES, max_tokens=2)  # waits for the model to be free
    assert quick.usage.output_tokens == 2
    assert time.monotonic() - started < 8  # not the ~15 s the cut-off call would take


async def test_the_run_budget_clamps_max_tokens(chat: TransformersChat):
    await chat.complete(MESSAGES, max_tokens=1)  # loaded: exact prompt counts
    prompt = chat.estimate_input_tokens(MESSAGES)
    with Meter(Budget(max_tokens=prompt + 5)).active() as meter:
        completion = await chat.complete(MESSAGES, max_tokens=100)
    assert completion.usage.output_tokens == 5
    assert meter.spent.total_tokens == prompt + 5


async def test_a_tokenizer_without_chat_template_gets_role_lines(model_dir: Path):
    plain = build_tokenizer(None)
    chat = TransformersChat(str(model_dir), tokenizer=plain)
    completion = await chat.complete(MESSAGES, max_tokens=3)
    expected = plain("system: Be brief.\nuser: What is the capital of France?\nassistant:")
    assert completion.usage.input_tokens == len(expected["input_ids"])


async def test_a_loaded_model_object_can_be_passed(model_dir: Path):
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    by_object = TransformersChat(model, tokenizer=tokenizer)
    by_path = TransformersChat(str(model_dir))
    a = await by_object.complete(MESSAGES, max_tokens=8)
    b = await by_path.complete(MESSAGES, max_tokens=8)
    assert a.text == b.text


async def test_the_refine_loop_runs_on_it(chat: TransformersChat):
    result = await redline.arefine("Q", model=chat, critics=[lambda text: 1.0])
    assert result.best is not None
    assert result.stop_reason is redline.StopReason.threshold
    assert result.usage.llm_calls == 1
    assert result.usage.output_tokens > 0


def test_a_missing_path_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        TransformersChat(str(tmp_path / "no-such-model"))
    with pytest.raises(ConfigError, match="does not exist"):
        TransformersChat(tmp_path / "owner-name")  # a Path is never a Hub id
    with pytest.raises(ConfigError, match="dtype"):
        TransformersChat(str(tmp_path), dtype="float8")


async def test_a_folder_without_a_model_fails_to_load_naming_it(tmp_path: Path):
    (tmp_path / "empty-model").mkdir()
    chat = TransformersChat(str(tmp_path / "empty-model"))
    with pytest.raises(LLMError, match=r"could not load the model .*empty-model"):
        await chat.complete(MESSAGES, max_tokens=2)


def test_importing_redline_does_not_import_torch():
    code = ("import sys, redline, redline.llm, redline.llm.transformers, redline.llm.local\n"
            "redline.llm.TransformersChat\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
