"""Throughput of the reward-model critic under concurrent loops, against two baselines.

A reward model of a few million parameters (a 4-layer Llama sequence classifier with a
BPE tokenizer and a chat template) is built and saved in a temporary folder: nothing is
downloaded. The same (prompt, answer) samples are scored three ways, for short answers
(8 to 32 words, about 15 to 55 tokens with the prompt) and long ones (32 to 160 words,
about 40 to 180 tokens):

- critic: `RewardModelCritic` (a `RewardCritic` over a `TransformersRewardModel`) under
  ``--loops`` concurrent asyncio loops, each critiquing its share of the samples one
  after the other (as refine loops do); the source's micro-batcher coalesces them into
  forward passes of up to ``--batch-size``;
- (a) one forward pass per sample: the same critic with ``batch_size=1`` (forward passes
  one after the other in its worker thread);
- (a') naive: one forward pass per critique, each in its own worker thread
  (``asyncio.to_thread`` per call, as a critic without a batcher would do); shown for
  context, the target is against (a);
- (b) bare batched forward: transformers alone, chat template + tokenizer + padded forward
  passes of ``--batch-size`` samples in input order, in one thread, no asyncio.

Tokenisation is counted on every side. Each repeat times each side once, in turn (after
a warm-up). The table gives each side's best repeat (interference from other jobs only
slows a run down, so the best is the steadiest figure, as ``timeit`` reasons) and its
median; the ratios are of the best. Targets: critic >= 4x (a), and >= 0.9x (b).

    python bench/reward_model.py --samples 256 --loops 32 --batch-size 32 --repeats 7
    python bench/reward_model.py --device cuda            # bf16 on a GPU
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from redline.critics.reward_model import RewardModelCritic
from redline.types import Candidate, Task

TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<eos>{% endfor %}"
WORDS = ("the a model answer question critic score reward loop batch padding token fast "
         "slow paris france capital river mountain city number prime square root code "
         "python function return value error test pass fail good bad better best worse "
         "because therefore however simply clearly first second third finally").split()


def build_model(folder: Path, seed: int = 0) -> int:
    """Save a ~4M-parameter reward model and its tokenizer in `folder`; return its size."""
    rng = random.Random(seed)
    corpus = [" ".join(rng.choices(WORDS, k=30)) for _ in range(400)]
    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=4000, special_tokens=["<unk>", "<pad>", "<eos>", "<|user|>", "<|assistant|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")
    tokenizer.chat_template = TEMPLATE
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=256, intermediate_size=688,
        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=1024, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = transformers.LlamaForSequenceClassification(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


PROFILES = {"short answers": (8, 32), "long answers": (32, 160)}


def make_samples(n: int, words: tuple[int, int], seed: int = 1) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(" ".join(rng.choices(WORDS, k=rng.randint(5, 20))) + "?",
             " ".join(rng.choices(WORDS, k=rng.randint(*words))) + ".") for _ in range(n)]


async def critic_side(critic: RewardModelCritic, samples: list[tuple[str, str]],
                      loops: int) -> tuple[float, list[float]]:
    """Seconds for `loops` concurrent loops to critique every sample, and the rewards."""
    raws: list[float] = [0.0] * len(samples)

    async def loop(k: int) -> None:
        for i in range(k, len(samples), loops):
            prompt, answer = samples[i]
            critique = await critic.critique(Task(prompt=prompt, id=f"t{i}"),
                                             Candidate(text=answer))
            raws[i] = critique.raw  # type: ignore[assignment]

    started = time.perf_counter()
    await asyncio.gather(*(loop(k) for k in range(loops)))
    return time.perf_counter() - started, raws


async def naive_side(model: torch.nn.Module, tokenizer: object,
                     samples: list[tuple[str, str]], loops: int) -> float:
    """Seconds for `loops` concurrent loops whose every critique runs its own forward pass
    in a worker thread."""
    lock = threading.Lock()  # a tokenizer must not be used by two threads at once

    def one(prompt: str, answer: str) -> float:
        with lock:
            enc = tokenizer.apply_chat_template(  # type: ignore[attr-defined]
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                tokenize=True, return_dict=True, return_tensors="pt")
        with torch.inference_mode():
            return float(model(**enc.to(next(model.parameters()).device)).logits[0, 0])

    async def loop(k: int) -> None:
        for i in range(k, len(samples), loops):
            await asyncio.to_thread(one, *samples[i])

    started = time.perf_counter()
    await asyncio.gather(*(loop(k) for k in range(loops)))
    return time.perf_counter() - started


def bare_side(model: torch.nn.Module, tokenizer: object,
              samples: list[tuple[str, str]], batch_size: int,
              device: torch.device) -> tuple[float, list[float]]:
    """Seconds for plain transformers to score the samples in padded batches, in order."""
    out: list[float] = []
    started = time.perf_counter()
    for start in range(0, len(samples), batch_size):
        texts = [tokenizer.apply_chat_template(  # type: ignore[attr-defined]
            [{"role": "user", "content": p}, {"role": "assistant", "content": a}],
            tokenize=False) for p, a in samples[start:start + batch_size]]
        enc = tokenizer(texts, padding=True, add_special_tokens=False,  # type: ignore[operator]
                        return_tensors="pt").to(device)
        with torch.inference_mode():
            out += model(**enc).logits[:, 0].float().cpu().tolist()
    return time.perf_counter() - started, out


def run_profile(args: argparse.Namespace, batched: RewardModelCritic,
                single: RewardModelCritic, samples: list[tuple[str, str]]) -> dict[str, float]:
    """Samples/s of each side (medians over the repeats), plus run facts."""
    # The same weights, loaded once.
    model, tokenizer = batched.source._hf_model, batched.source._tokenizer
    device = next(model.parameters()).device
    warm = samples[:args.batch_size]
    asyncio.run(critic_side(batched, warm, args.loops))
    asyncio.run(critic_side(single, warm, args.loops))
    bare_side(model, tokenizer, warm, args.batch_size, device)
    asyncio.run(naive_side(model, tokenizer, warm, args.loops))
    times: dict[str, list[float]] = {"critic": [], "single": [], "naive": [], "bare": []}
    passes, drift = 0, 0.0
    for _ in range(args.repeats):  # the sides take turns, so load drift hits them alike
        before = batched.forward_passes
        seconds, ours = asyncio.run(critic_side(batched, samples, args.loops))
        times["critic"].append(seconds)
        passes = batched.forward_passes - before
        times["single"].append(asyncio.run(critic_side(single, samples, args.loops))[0])
        times["naive"].append(asyncio.run(naive_side(model, tokenizer, samples, args.loops)))
        seconds, theirs = bare_side(model, tokenizer, samples, args.batch_size, device)
        times["bare"].append(seconds)
        drift = max(drift, *(abs(a - b) for a, b in zip(ours, theirs, strict=True)))
    rate = {k: len(samples) / min(v) for k, v in times.items()}
    rate |= {f"{k}~": len(samples) / statistics.median(v) for k, v in times.items()}
    lengths = [len(tokenizer.apply_chat_template(
        [{"role": "user", "content": p}, {"role": "assistant", "content": a}],
        tokenize=True, return_dict=True)["input_ids"]) for p, a in samples]
    return rate | {"passes": passes, "drift": drift, "tokens": statistics.fmean(lengths),
                   "min": min(lengths), "max": max(lengths)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--loops", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        params = build_model(folder)
        batched = RewardModelCritic(folder, device=args.device, dtype=args.dtype,
                                    batch_size=args.batch_size).load()
        single = RewardModelCritic(folder, device=args.device, dtype=args.dtype,
                                   batch_size=1).load()
        results = {name: run_profile(args, batched, single,
                                     make_samples(args.samples, words))
                   for name, words in PROFILES.items()}
        model = batched.source._hf_model

    print(f"{platform.processor() or platform.machine()}, {platform.system()}, "
          f"Python {platform.python_version()}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), transformers {transformers.__version__}")
    print(f"model: {params / 1e6:.1f}M parameters on {next(model.parameters()).device} "
          f"({model.dtype}); {args.samples} samples, {args.loops} loops, "
          f"batch size {args.batch_size}, {args.repeats} repeats")
    for name, r in results.items():
        print(f"\n{name}: {r['min']}-{r['max']} tokens (mean {r['tokens']:.0f}); critic "
              f"forward passes per run: {r['passes']}; max |critic - bare| reward: "
              f"{r['drift']:.1e}\n")
        print("| side | samples/s, best | median |")
        print("|---|---|---|")
        for key, label in [("critic", f"critic, micro-batched, {args.loops} concurrent loops"),
                           ("single", f"(a) one forward pass per sample, {args.loops} "
                                      "concurrent loops"),
                           ("naive", "(a') naive: a forward pass per critique, each in a "
                                     "worker thread"),
                           ("bare", "(b) bare batched transformers forward")]:
            print(f"| {label} | {r[key]:.1f} | {r[key + '~']:.1f} |")
        print(f"| **critic / (a)** (target >= 4) | **{r['critic'] / r['single']:.2f}x** | |")
        print(f"| critic / (a') | {r['critic'] / r['naive']:.2f}x | |")
        print(f"| **critic / (b)** (target >= 0.9) | **{r['critic'] / r['bare']:.2f}x** | |")


if __name__ == "__main__":
    main()
