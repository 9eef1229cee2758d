"""The items' data embedded in the report: one JSON object per item id, drawn lazily by
the page's script (only the rows of the page shown, only the item opened).

Each candidate carries the line diff from its parent (`difflib.unified_diff`), computed
here so that the page needs no diff code of its own.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from redline.report._load import Entry, Results
from redline.report._stats import best_score, draft_score, reached, solved
from redline.types import Candidate, Critique, ScoredCandidate, Usage

__all__ = ["embed_json", "line_diff", "page_data"]


def page_data(results: Results) -> dict[str, Any]:
    """The JSON the page reads: the methods, and the items with their runs, in the order
    their ids first appear in the file."""
    items: dict[str, list[dict[str, Any]]] = {}
    for entry in results.entries:
        items.setdefault(entry.id, []).append(_entry(entry))
    return {"kind": results.kind, "methods": results.method_names,
            "items": [{"id": item_id, "e": runs} for item_id, runs in items.items()]}


def embed_json(value: Any) -> str:
    """`value` as JSON that is safe inside a ``<script type="application/json">`` element:
    ``<``, ``>`` and ``&`` are written as ``\\u003c``... (JSON.parse reads them back), so
    no text in it can close the element (``</script>``) or open a comment."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _usage(usage: Usage) -> dict[str, Any]:
    return {"in": usage.input_tokens, "out": usage.output_tokens, "calls": usage.llm_calls,
            "cost": usage.cost_usd, "s": round(usage.seconds, 3)}


def _entry(entry: Entry) -> dict[str, Any]:
    result = entry.result
    texts = {s.candidate.id: s.candidate.text for r in result.rounds for s in r.scored}
    if result.task.draft is not None:
        texts.setdefault(Candidate(text=result.task.draft).id, result.task.draft)
    return {
        "m": entry.method, "stop": result.stop_reason.value, "detail": result.stop_detail,
        "limit": result.budget_limit, "error": result.error, "thr": result.threshold,
        "draft": draft_score(result), "best": best_score(result), "ok": solved(entry),
        "reached": reached(result), "correct": entry.correct, "dc": entry.draft_correct,
        "usage": _usage(result.usage), "prompt": result.task.prompt,
        "given": result.task.draft, "memory": list(result.memory),
        "bestId": result.best.candidate.id if result.best else None,
        "finalId": result.final.candidate.id if result.final else None,
        "rounds": [{"i": r.index, "usage": _usage(r.usage), "refl": r.reflection,
                    "cands": [_candidate(s.candidate, s, texts) for s in r.scored]}
                   for r in result.rounds],
    }


def _candidate(candidate: Candidate, scored: ScoredCandidate, texts: dict[str, str]
               ) -> dict[str, Any]:
    parent = texts.get(candidate.parent) if candidate.parent else None
    return {"id": candidate.id, "parent": candidate.parent, "origin": candidate.origin,
            "text": candidate.text, "expl": candidate.explanation,
            "score": scored.score, "gates": scored.gates_passed, "failed": scored.failed,
            "unscored": scored.unscored, "usage": _usage(candidate.usage),
            "diff": None if parent is None else line_diff(parent, candidate.text),
            "crit": [_critique(c) for c in scored.critiques]}


def _critique(critique: Critique) -> dict[str, Any]:
    return {"critic": critique.critic, "score": critique.score, "passed": critique.passed,
            "feedback": critique.feedback, "raw": critique.raw,
            "ev": critique.evidence or None, "usage": _usage(critique.usage)}


def line_diff(old: str, new: str) -> str:
    """The unified line diff from `old` to `new`: its hunks (``@@ ... @@``, then lines
    starting with ``' '``, ``-`` or ``+``), without the file header; empty when the
    texts have the same lines."""
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=3)
    return "\n".join(line for k, line in enumerate(lines) if k >= 2)
