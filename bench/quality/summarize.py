"""One table from the quality benchmark's result files (``redline compare`` outputs and
`dspy_peer.py`'s, which have the same line shape), as the markdown bench/README.md
records:

    python bench/quality/summarize.py bench/quality/results/compare-qwen-0.5b-*.jsonl \\
        bench/quality/results/dspy-qwen-0.5b.jsonl --common

Each file's methods are rows (a cascade file's rows are named after its models; a method
that two files hold appears twice, the second named with its file). With
``--common`` every row counts only the problems that every row has, so the rows compare
the same problems while a run is still going; the figures are `redline compare`'s own
(`MethodRow`: Wilson 95 % interval, flips and fixes against each method's first draft).
``--examples KIND[,KIND]`` counts only the problems whose prompt carries that kind of
example, as the `tests` critic reads them: ``doctest`` (``>>>`` examples), else
``prose`` (``f(2) == 4``), else ``io`` (examples that name the arguments: ``Input: x =
2`` / ``Output: 4``, ``For x = 2 the output should be 4``; read since d31a6ea), else
``none`` (the critic runs tests the model writes). The tables made before ``io`` was
read call ``io,none`` "none".
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from redline.critics.code_tests import (
    argument_examples,
    examples_text,
    has_examples,
    prose_examples,
)
from redline.workflows.compare import MethodRow

HERE = Path(__file__).resolve().parent


def examples_kind(prompt: str, function: str) -> str:
    """What examples the `tests` critic finds in a prompt: doctest, prose, io or none."""
    text = examples_text(prompt)
    if has_examples(text):
        return "doctest"
    if prose_examples(text, function):
        return "prose"
    return "io" if argument_examples(text, function) else "none"


KINDS = ("doctest", "prose", "io", "none")


def example_kinds(text: str) -> set[str]:
    """``--examples``'s value: kinds of examples, comma-separated."""
    chosen = {k.strip() for k in text.split(",")}
    if not chosen or not chosen <= set(KINDS):
        raise argparse.ArgumentTypeError(f"{text!r}: give kinds among {', '.join(KINDS)}, "
                                         "comma-separated")
    return chosen


def kinds(data: Path) -> dict[str, str]:
    """Each problem's kind of examples (`examples_kind`), from a compare dataset."""
    out = {}
    for raw in data.read_text(encoding="utf-8").splitlines():
        if raw.strip():
            item = json.loads(raw)
            out[item["id"]] = examples_kind(item["task"], item["metadata"]["entry_point"])
    return out


def read(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Lines by method and id (the header and blank lines skipped; a later line for the
    same method and id wins). A method with a reviser model (a cascade) is named with
    both models, as the header's spec records them."""
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    specs: dict[str, Any] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not raw.strip():
            continue
        line = json.loads(raw)
        if number == 0:
            specs = line.get("spec", {}).get("methods", {})
            continue
        method = line["method"]
        spec = specs.get(method, {})
        if spec.get("reviser_model"):
            method = (f"{method} ({spec['model']['name']} drafts, "
                      f"{spec['reviser_model']['name']} revises)")
        out[method][line["id"]] = line
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--common", action="store_true",
                        help="count only the problems every method has")
    parser.add_argument("--examples", type=example_kinds,
                        help="count only the problems whose prompt has this kind of example "
                             f"(or kinds, comma-separated: {', '.join(KINDS)})")
    parser.add_argument("--data", type=Path, default=HERE / "results" / "humaneval-every1.jsonl",
                        help="the dataset that --examples reads the prompts from")
    args = parser.parse_args()
    methods: dict[str, dict[str, dict[str, Any]]] = {}
    for path in args.files:
        for method, lines in read(path).items():
            if method in methods:  # the same method run twice (another file): both kept
                method = f"{method} [{path.stem}]"
            methods[method] = lines
    ids = set.intersection(*(set(lines) for lines in methods.values())) if args.common \
        else None
    if args.examples:
        kind = kinds(args.data)
        chosen = {i for i, k in kind.items() if k in args.examples}
        ids = chosen if ids is None else ids & chosen
    print("| method | problems | pass@1 (95 % CI) | tokens / problem | calls / problem "
          "| s / problem | flips (of right drafts) | fixes (of wrong drafts) |")
    print("|---|---|---|---|---|---|---|---|")
    for method, lines in methods.items():
        row = MethodRow(method)
        for item_id, line in sorted(lines.items()):
            if ids is None or item_id in ids:
                row.add(line)
        low, high = row.interval
        right = row.drafts_right
        print(f"| {method} | {row.items} | {row.correct}/{row.items} = {row.success:.1%} "
              f"({low:.0%}-{high:.0%}) | {row.per_item(row.tokens):,.0f} | "
              f"{row.per_item(row.calls):.1f} | {row.per_item(row.seconds):.0f} | "
              f"{row.flips} of {right} | {row.fixes} of {row.items - right} |")


if __name__ == "__main__":
    main()
