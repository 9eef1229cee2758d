"""The fact-check critic: CRITIC's verify-with-search step (Gou et al. 2024).

1. The chat model lists the candidate's checkable claims, each with a search query (the
   candidate is fenced between random markers as untrusted data, as the judge does).
2. The search source is queried for every claim at once.
3. The chat model judges each claim against its results: supported, refuted or not
   enough evidence, citing the result it relied on.

Score: the fraction of claims supported. Verdict: ``passed=False`` when any claim is
refuted. Feedback: each refuted claim with the cited result's title, id and a snippet,
then the claims the sources do not support.

An answer in which no checkable claim was found is *unchecked*, not verified: it scores
`UNCHECKED_SCORE` (0.5) with ``passed=None`` and ``evidence["unchecked"] == True``. A
claim-free answer (a poem) and a failure to find the claims ("The Eiffel Tower is in
Berlin (1925)" read by a small model) look the same from here, and neither is evidence
that the answer is right.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from redline._aio import gather_all
from redline.critics._ask import Fence, ask_json, critic_model
from redline.critics._json import find_json
from redline.critics.base import Critic
from redline.errors import ConfigError
from redline.feedback_sources.search import BM25Index, Hit, HttpSearch, SearchSource
from redline.llm import ChatModel, Message
from redline.prompts import render
from redline.types import Candidate, Critique, Task

__all__ = ["UNCHECKED_SCORE", "FactCheckCritic", "factcheck_critic"]

SUPPORTED, REFUTED, UNKNOWN = "supported", "refuted", "not enough evidence"

UNCHECKED_SCORE = 0.5
"""The score of an answer in which no checkable claim was found: neither supported nor
refuted, so half-way, below any sensible threshold and above a refuted answer."""

_CLAIMS_SCHEMA: dict[str, Any] = {
    "title": "claims", "type": "object", "additionalProperties": False,
    "required": ["claims"],
    "properties": {"claims": {"type": "array", "items": {
        "type": "object", "additionalProperties": False, "required": ["claim", "query"],
        "properties": {"claim": {"type": "string"}, "query": {"type": "string"}}}}},
}
_VERDICTS_SCHEMA: dict[str, Any] = {
    "title": "verdicts", "type": "object", "additionalProperties": False,
    "required": ["verdicts"],
    "properties": {"verdicts": {"type": "array", "items": {
        "type": "object", "additionalProperties": False,
        "required": ["claim", "verdict", "evidence", "explanation"],
        "properties": {
            "claim": {"type": "integer"},
            "verdict": {"type": "string", "enum": [SUPPORTED, REFUTED, UNKNOWN]},
            "evidence": {"type": "string"},
            "explanation": {"type": "string"}}}}},
}
_VERDICTS = {
    "supported": SUPPORTED, "support": SUPPORTED, "true": SUPPORTED,
    "refuted": REFUTED, "refute": REFUTED, "contradicted": REFUTED, "false": REFUTED,
    "not enough evidence": UNKNOWN, "not enough info": UNKNOWN,
    "not enough information": UNKNOWN, "insufficient evidence": UNKNOWN, "unknown": UNKNOWN,
}

class FactCheckCritic(Critic):
    """Checks an answer's factual claims against a search source (CRITIC).

    The score is the fraction of claims the evidence supports, and the critique fails
    (``passed=False``) when any claim is refuted. A verdict must cite one of the results
    shown to the model; one that cites none counts as not enough evidence, and a claim
    whose query found nothing is not enough evidence without asking the model. An
    answer in which no checkable claim was found is unchecked: it scores
    `UNCHECKED_SCORE` with ``passed=None``, feedback saying so, ``evidence["claims"] ==
    []`` and ``evidence["unchecked"] == True``. An unusable model reply is re-asked once, then the
    critic raises `CriticError`; a search source that cannot answer raises
    `FeedbackSourceError`.

    ``raw`` is the number of supported claims; ``evidence`` holds every claim with its
    query, verdict, the id of the result cited, the model's explanation and the hits,
    the counts per verdict, and whether claims beyond `max_claims` were dropped.

    Args:
        source: where to look for evidence (`BM25Index`, `HttpSearch`, any
            `SearchSource`).
        model: the chat model; None uses the model the run generates with.
        name: the critic's name.
        max_claims: the most claims checked per answer (the model is asked for no more).
        k: search results per claim.
        evidence_chars: each result's text is cut to this many characters in the prompt.
        snippet_chars: the longest snippet quoted in the feedback.
        json_mode: send the replies' JSON schemas to the server (``response_format`` in
            the server's dialect, see `ChatModel.structured_format`); off, the JSON is
            asked for in the prompt only.
    """

    def __init__(self, source: SearchSource, *, model: ChatModel | None = None,
                 name: str = "factcheck", max_claims: int = 8, k: int = 3,
                 evidence_chars: int = 1200, snippet_chars: int = 240,
                 json_mode: bool = True) -> None:
        if max_claims < 1 or k < 1:
            raise ConfigError(f"FactCheckCritic: max_claims and k must be at least 1, got "
                              f"{max_claims} and {k}")
        self.source = source
        self.model = model
        self.name = name
        self.max_claims = max_claims
        self.k = k
        self.evidence_chars = evidence_chars
        self.snippet_chars = snippet_chars
        self.json_mode = json_mode

    async def preflight(self) -> None:
        """Check the search source when it can be checked (`HttpSearch` is asked once)."""
        check = getattr(self.source, "preflight", None)
        if check is not None:
            await check()

    async def critique(self, task: Task, candidate: Candidate) -> Critique:
        model = critic_model(self)
        claims, truncated = await self._claims(model, task, candidate)
        if not claims:
            return Critique(
                critic=self.name, score=UNCHECKED_SCORE, passed=None,
                feedback="No checkable factual claim was found in the answer, so none could "
                         "be verified against the sources: state the facts it relies on "
                         "plainly (names, dates, numbers, places).",
                evidence={"claims": [], "unchecked": True,
                          "note": "no checkable claims: unchecked, not verified"})
        queries = list(dict.fromkeys(c["query"] for c in claims))
        # The run's max_seconds bounds these searches too (the loop times each node).
        results = await gather_all(*(self.source.search(q, self.k) for q in queries))
        hits_by_query = dict(zip(queries, results, strict=True))
        for claim in claims:
            claim["hits"] = hits_by_query[claim["query"]][:self.k]
        await self._judge(model, claims)
        counts = {v: sum(c["verdict"] == v for c in claims)
                  for v in (SUPPORTED, REFUTED, UNKNOWN)}
        entries = [{"claim": c["claim"], "query": c["query"], "verdict": c["verdict"],
                    "evidence_id": c["cited"].id if c["cited"] else None,
                    "explanation": c["explanation"],
                    "hits": [h.model_dump() for h in c["hits"]]} for c in claims]
        return Critique(
            critic=self.name, score=counts[SUPPORTED] / len(claims),
            passed=counts[REFUTED] == 0, raw=float(counts[SUPPORTED]),
            feedback=self._feedback(claims),
            evidence={"claims": entries, "supported": counts[SUPPORTED],
                      "refuted": counts[REFUTED], "not_enough_evidence": counts[UNKNOWN],
                      "truncated": truncated})

    async def _claims(self, model: ChatModel, task: Task,
                      candidate: Candidate) -> tuple[list[dict[str, Any]], bool]:
        fence = Fence.new("ANSWER")
        messages: list[Message] = [
            {"role": "system", "content": render("factcheck_claims_system")},
            {"role": "user", "content": render(
                "factcheck_claims_user", task=task.prompt, open=fence.opening, close=fence.closing,
                max_claims=self.max_claims, answer=fence.quote(candidate.text))}]
        data = await ask_json(
            model, messages, parse=_parse_claims,
            reask=lambda problem: render("factcheck_claims_reask", problem=problem),
            schema=_CLAIMS_SCHEMA if self.json_mode else None,
            max_tokens=64 + 80 * self.max_claims, critic=self.name, what="claims")
        return data[:self.max_claims], len(data) > self.max_claims

    async def _judge(self, model: ChatModel, claims: list[dict[str, Any]]) -> None:
        """Fill in each claim's verdict, cited evidence id and explanation."""
        for claim in claims:
            claim.update(verdict=UNKNOWN, cited=None,
                         explanation="the search found nothing for its query")
        asked = [c for c in claims if c["hits"]]
        if not asked:
            return
        fence = Fence.new("DATA")
        labels: dict[str, Hit] = {}
        blocks = []
        for number, claim in enumerate(asked, 1):
            lines = [f"Claim {number}: {claim['claim']}"]
            for hit in claim["hits"]:
                label = next((lb for lb, h in labels.items() if h.id == hit.id),
                             f"E{len(labels) + 1}")
                labels[label] = hit
                lines.append(f"[{label}] {hit.title} ({hit.id})\n"
                             f"{hit.text[:self.evidence_chars]}")
            blocks.append("\n".join(lines))
        messages: list[Message] = [
            {"role": "system", "content": render("factcheck_verify_system")},
            {"role": "user", "content": render(
                "factcheck_verify_user", open=fence.opening, close=fence.closing, n=len(asked),
                claims=fence.quote("\n\n".join(blocks)))}]
        verdicts = await ask_json(
            model, messages, parse=lambda text: _parse_verdicts(text, len(asked)),
            reask=lambda problem: render("factcheck_verify_reask", problem=problem,
                                         n=len(asked)),
            schema=_VERDICTS_SCHEMA if self.json_mode else None,
            max_tokens=64 + 80 * len(asked), critic=self.name, what="verdicts")
        for claim, (verdict, cited, explanation) in zip(asked, verdicts, strict=True):
            hit = _resolve(cited, labels)
            if verdict != UNKNOWN and hit is None:
                # A verdict must rest on a result the model was shown.
                explanation = f"(the model cited no result shown to it) {explanation}".strip()
                verdict = UNKNOWN
            claim.update(verdict=verdict, cited=hit, explanation=explanation)

    def _feedback(self, claims: list[dict[str, Any]]) -> str:
        parts = []
        refuted = [c for c in claims if c["verdict"] == REFUTED]
        if refuted:
            parts.append("These claims are contradicted by the sources; correct them:")
            for c in refuted:
                hit: Hit = c["cited"]  # a refuted verdict always cites a result
                snippet = _snippet(hit.text, c["claim"], self.snippet_chars)
                why = f" ({c['explanation']})" if c["explanation"] else ""
                parts.append(f'- "{c["claim"]}" is refuted by [{hit.id}] "{hit.title}": '
                             f'"{snippet}"{why}')
        unknown = [c for c in claims if c["verdict"] == UNKNOWN]
        if unknown:
            parts.append("The sources do not confirm these claims; check, qualify or remove "
                         "them:")
            parts.extend(f'- "{c["claim"]}"' for c in unknown)
        return "\n".join(parts)


def _parse_claims(text: str) -> tuple[list[dict[str, Any]] | None, str]:
    found, problem = find_json(text, kinds=(dict,))
    if found is None:
        return None, problem
    items = found.value.get("claims")
    if not isinstance(items, list):
        return None, 'the JSON object has no "claims" list'
    claims: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, str):
            item = {"claim": item}
        if not isinstance(item, dict) or not isinstance(item.get("claim"), str):
            return None, f'a claim is {item!r}, not {{"claim": "...", "query": "..."}}'
        claim = item["claim"].strip()
        query = item.get("query")
        query = query.strip() if isinstance(query, str) and query.strip() else claim
        if claim and all(c["claim"] != claim for c in claims):
            claims.append({"claim": claim, "query": query})
    return claims, ""


def _parse_verdicts(text: str, n: int) -> tuple[list[tuple[str, str, str]] | None, str]:
    """(verdict, cited label, explanation) for claims 1..n, or None and the problem."""
    found, problem = find_json(text, kinds=(dict,))
    if found is None:
        return None, problem
    items = found.value.get("verdicts")
    if not isinstance(items, list):
        return None, 'the JSON object has no "verdicts" list'
    by_number: dict[int, tuple[str, str, str]] = {}
    for position, item in enumerate(items, 1):
        if not isinstance(item, dict):
            return None, f"a verdict is {item!r}, not an object"
        try:
            number = int(item.get("claim", position))
        except (TypeError, ValueError):
            number = position
        raw = str(item.get("verdict", "")).strip().lower().replace("_", " ").replace("-", " ")
        verdict = _VERDICTS.get(raw)
        if verdict is None:
            return None, (f'claim {number}: verdict {item.get("verdict")!r} is not one of '
                          '"supported", "refuted", "not enough evidence"')
        by_number[number] = (verdict, str(item.get("evidence") or "").strip(),
                             str(item.get("explanation") or "").strip())
    missing = [str(i) for i in range(1, n + 1) if i not in by_number]
    if missing:
        return None, f"no verdict for claim {', '.join(missing)}"
    return [by_number[i] for i in range(1, n + 1)], ""


def _resolve(cited: str, labels: dict[str, Hit]) -> Hit | None:
    """The result a verdict cites: by label (``E2``, ``[E2]``, ``2``) or by the hit's id."""
    key = cited.strip().strip("[]").strip()
    if key.isdigit():
        key = f"E{key}"
    return labels.get(key.upper()) or next((h for h in labels.values() if h.id == key), None)


def _snippet(text: str, claim: str, limit: int) -> str:
    """The sentence of `text` sharing most words with `claim`, cut to `limit` characters."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if s] or [""]
    wanted = set(re.findall(r"\w\w+", claim.lower()))
    best = max(sentences, key=lambda s: len(wanted & set(re.findall(r"\w\w+", s.lower()))))
    return best if len(best) <= limit else best[:limit - 1].rstrip() + "…"


def factcheck_critic(arg: str | None) -> FactCheckCritic:
    """Fact check (CRITIC): checks the answer's claims against documents or a search API.

    Argument (required): where to look for evidence. A folder, a text or Markdown file
    or a JSONL file (rows with "text", optional "title", "id", "url") is indexed with
    BM25 when the critic is built; a directory holding an index saved with
    `BM25Index.save` is loaded; an http(s) URL is queried as a SearxNG-compatible JSON
    search endpoint. The run's model lists the claims and judges them; the score is
    the fraction supported, and any refuted claim fails the critique.

    Examples:
        --critic factcheck:docs/
        --critic factcheck:corpus.jsonl
        --critic factcheck:index-dir/
        --critic factcheck:http://127.0.0.1:8888/search
    """
    if not arg or not arg.strip():
        raise ConfigError("the factcheck critic needs a documents path or search URL: "
                          "--critic factcheck:DOCS_PATH")
    where = arg.strip()
    if re.match(r"https?://", where):
        return FactCheckCritic(HttpSearch(where))
    path = Path(where).expanduser()
    if BM25Index.is_saved(path):
        return FactCheckCritic(BM25Index.load(path))
    return FactCheckCritic(BM25Index.build(path))
