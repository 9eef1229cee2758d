"""BM25 search latency over a 10,000-passage corpus (`redline.feedback_sources.BM25Index`).

The corpus is synthetic and deterministic (no downloads): a vocabulary of pronounceable
made-up words drawn with a Zipf distribution, as natural text is, ``--words`` words per
passage. Queries are 3 to 8 words, half taken from a random passage (they match it) and
half drawn from the vocabulary at large. The script measures:

- build: tokenizing and indexing the passages (`BM25Index.from_documents`);
- save and load of the index directory;
- query latency, one query at a time: `search_sync`, and `await search` both inline and
  offloaded to a worker thread (what indexes of ``offload_min_docs`` passages or more do),
  reported as p50 / p95 / max over ``--queries`` queries after a warm-up.

    python bench/bm25.py --docs 10000 --queries 500
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import statistics
import tempfile
import time
from importlib.metadata import version

from redline.feedback_sources import BM25Index, Document

SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]


def vocabulary(size: int, rng: random.Random) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def corpus(docs: int, words: int, vocab: list[str], rng: random.Random) -> list[Document]:
    weights = [1 / (rank + 1) ** 1.07 for rank in range(len(vocab))]
    cumulative = list(_accumulate(weights))
    return [Document(id=f"doc-{i}", title=f"Document {i}",
                     text=" ".join(rng.choices(vocab, cum_weights=cumulative, k=words)))
            for i in range(docs)]


def queries(n: int, documents: list[Document], vocab: list[str],
            rng: random.Random) -> list[str]:
    out = []
    for i in range(n):
        length = rng.randint(3, 8)
        if i % 2:
            source = rng.choice(documents).text.split()
            out.append(" ".join(rng.sample(source, length)))
        else:
            out.append(" ".join(rng.sample(vocab, length)))
    return out


def _accumulate(values: list[float]):
    total = 0.0
    for v in values:
        total += v
        yield total


def summary(seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"{statistics.median(ms):.3f} | {p95:.3f} | {ms[-1]:.3f}"


async def timed_async(index: BM25Index, qs: list[str], k: int) -> list[float]:
    out = []
    for q in qs:
        started = time.perf_counter()
        await index.search(q, k)
        out.append(time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--words", type=int, default=150, help="words per passage")
    parser.add_argument("--vocab", type=int, default=30_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    vocab = vocabulary(args.vocab, rng)
    started = time.perf_counter()
    documents = corpus(args.docs, args.words, vocab, rng)
    generated = time.perf_counter() - started
    qs = queries(args.queries, documents, vocab, rng)

    started = time.perf_counter()
    index = BM25Index.from_documents(documents)
    built = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        index.save(directory)
        saved = time.perf_counter() - started
        started = time.perf_counter()
        loaded = BM25Index.load(directory)
        load_s = time.perf_counter() - started
    assert loaded.search_sync(qs[1], args.k) == index.search_sync(qs[1], args.k)

    for q in qs[:50]:  # warm-up
        index.search_sync(q, args.k)
    sync = []
    hits = 0
    for q in qs:
        t0 = time.perf_counter()
        hits += len(index.search_sync(q, args.k))
        sync.append(time.perf_counter() - t0)
    index.offload_min_docs = len(index) + 1
    inline = asyncio.run(timed_async(index, qs, args.k))
    index.offload_min_docs = 0
    offloaded = asyncio.run(timed_async(index, qs, args.k))

    print(f"Python {platform.python_version()}, bm25s {version('bm25s')}, "
          f"numpy {version('numpy')}, {platform.machine()} {platform.system()}")
    print(f"corpus: {args.docs} passages x {args.words} words, vocabulary {args.vocab}, "
          f"generated in {generated:.2f} s; {args.queries} queries, k={args.k}, "
          f"{hits / len(qs):.2f} hits per query")
    print(f"build {built:.2f} s | save {saved:.2f} s | load {load_s:.2f} s")
    print("| search | p50 ms | p95 ms | max ms |")
    print("|---|---|---|---|")
    print(f"| `search_sync` | {summary(sync)} |")
    print(f"| `await search`, inline | {summary(inline)} |")
    print(f"| `await search`, worker thread | {summary(offloaded)} |")


if __name__ == "__main__":
    main()
