"""Value types shared by every part of redline.

All are frozen pydantic models: they serialise to JSON and back unchanged, so a trace
can be written, read and compared.
"""

from __future__ import annotations

import hashlib
import uuid
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

__all__ = [
    "Budget",
    "BudgetLimit",
    "RESULT_SCHEMA_VERSION",
    "Candidate",
    "Critique",
    "Price",
    "RefineResult",
    "Round",
    "ScoredCandidate",
    "StopReason",
    "Task",
    "Usage",
    "content_hash",
]


def content_hash(text: str) -> str:
    """The identity of a candidate's content: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class Usage(_Frozen):
    """What some work cost: tokens, LLM calls, money and time. Usages add with ``+``."""

    input_tokens: int = 0
    """Prompt tokens sent to chat models."""
    output_tokens: int = 0
    """Completion tokens received from chat models."""
    llm_calls: int = 0
    """Chat model calls made."""
    cost_usd: float = 0.0
    """Money spent, from the models' price tables (0 for models without a price)."""
    seconds: float = 0.0
    """Wall-clock seconds."""

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            llm_calls=self.llm_calls + other.llm_calls,
            cost_usd=self.cost_usd + other.cost_usd,
            seconds=self.seconds + other.seconds,
        )


class Price(_Frozen):
    """A model's price in US dollars per million tokens."""

    input_per_mtok: float = Field(default=0.0, ge=0)
    """Dollars per million prompt tokens."""
    output_per_mtok: float = Field(default=0.0, ge=0)
    """Dollars per million completion tokens."""

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """The cost of a call with these token counts."""
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


BudgetLimit = Literal["max_rounds", "max_llm_calls", "max_tokens", "max_cost_usd", "max_seconds"]


class Budget(_Frozen):
    """Limits on one run. Each is checked before every LLM call and never exceeded.

    A budget is a value: every run accounts its own spending, nothing drains across runs.
    ``None`` means no limit.
    """

    max_rounds: int = Field(default=3, ge=0)
    """Revisions after the first draft (0: draft and score only, as best-of-N does)."""
    max_llm_calls: int | None = Field(default=None, ge=1)
    """Chat model calls over the whole run, critics' calls included."""
    max_tokens: int | None = Field(default=None, ge=1)
    """Prompt + completion tokens over every LLM call of the run, critics included."""
    max_cost_usd: float | None = Field(default=None, gt=0)
    """Money over the whole run, from the models' price tables."""
    max_seconds: float | None = Field(default=None, gt=0)
    """Wall-clock seconds for the whole run."""


class Task(_Frozen):
    """What to produce: the prompt, and optionally a draft to improve instead of generating."""

    prompt: str
    """The instruction or question."""
    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    """Identifies the task in traces, batches and checkpoints (the LangGraph thread id)."""
    draft: str | None = None
    """A first candidate to improve; when given, no draft is generated."""
    system: str | None = None
    """An optional system prompt for the generator and reviser."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Anything critics need (tests, reference documents, ...), passed through untouched."""

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the task prompt is empty: say what the model should produce")
        return value


class Candidate(_Frozen):
    """One answer the loop produced (or was given)."""

    text: str
    """The answer."""
    round: int = 0
    """The round it was made in: 0 for drafts, k for the k-th revision."""
    origin: Literal["draft", "given", "rewrite", "edit", "edit-fallback"] = "draft"
    """How it was made: generated, given by the user, rewritten, edited, or rewritten
    because an edit did not apply."""
    parent: str | None = None
    """The id of the candidate it revises."""
    usage: Usage = Usage()
    """What producing it cost."""
    explanation: str | None = None
    """What the reviser wrote before this revision, when it was asked to reason first
    (Self-Debug's line-by-line explanation of the code and the failing test); None
    otherwise. Not part of the text, nor of the id."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def id(self) -> str:
        """The content hash: two candidates with the same text have the same id."""
        return content_hash(self.text)

    @model_validator(mode="before")
    @classmethod
    def _drop_derived_id(cls, data: Any) -> Any:
        # ``id`` is written to JSON for readers of a trace; it is derived, not an input.
        if isinstance(data, dict) and "id" in data:
            data = {k: v for k, v in data.items() if k != "id"}
        return data


class Critique(_Frozen):
    """One critic's verdict on one candidate."""

    critic: str
    """Name of the critic."""
    score: float = Field(ge=0.0, le=1.0)
    """Normalised reward in [0, 1]."""
    passed: bool | None = None
    """Hard verdict where the critic has one (tests, compiler); None where it has none."""
    feedback: str = ""
    """What the reviser should change; empty when nothing."""
    raw: float | None = None
    """The un-normalised value (reward-model logit, judge's 0-10 mark, tests passed)."""
    evidence: dict[str, Any] = Field(default_factory=dict)
    """Failing tests, search hits, compiler output, ..."""
    usage: Usage = Usage()
    """Tokens, calls and seconds this critique cost."""


class ScoredCandidate(_Frozen):
    """A candidate with every critique of it and the panel's combined score."""

    candidate: Candidate
    """The candidate."""
    score: float = Field(ge=0.0, le=1.0)
    """Combined score: 0 when a gate failed, else the weighted mean of the critics."""
    gates_passed: bool
    """True when no gate critic failed."""
    failed: bool
    """True when any critic gave the verdict ``passed=False`` (what ``on_failure`` reads)."""
    critiques: list[Critique]
    """Every critic's critique, in panel order."""
    gate_score: float | None = None
    """How close it came to passing its gates: the mean of the gate critics' scores
    (None without gates). Among candidates that all fail a gate, the best is the one
    that came closest."""
    unscored: bool = False
    """True when no critic could score it (the run broke before its critique): its
    ``score`` means nothing, it is returned so that the draft is not lost."""

    @property
    def rank(self) -> tuple[bool, float, float]:
        """What "better" means: gates passed first, then the score, then how close
        the candidate came to passing its gates."""
        return (self.gates_passed, self.score, self.gate_score or 0.0)

    @property
    def feedback(self) -> str:
        """The critics' feedback as the default reviser reads it.

        Kept for compatibility: the text is `redline.agents.render_feedback`'s, which is
        where the reviser's reading of feedback is defined (and replaced by presets).
        """
        from redline.agents.feedback import render_feedback  # the agents own prompt text

        return render_feedback(self)


class Round(_Frozen):
    """One pass of the loop: the draft round (0) or a revision round."""

    index: int
    """0 for the draft round, k for the k-th revision."""
    scored: list[ScoredCandidate] = Field(default_factory=list)
    """The candidates this round produced, each with its critiques."""
    usage: Usage = Usage()
    """What this round cost (generation or revision, plus critiques)."""
    reflection: str | None = None
    """The memory entry written on this round's attempt before the next one (Reflexion's
    reflection, Self-Refine's feedback history); None when none was written."""


class StopReason(str, Enum):
    """Why a run stopped."""

    threshold = "threshold"
    """The best score reached the threshold and every gate passed."""
    budget = "budget"
    """A budget limit was reached (``RefineResult.budget_limit`` says which)."""
    converged = "converged"
    """No score gain for ``patience`` rounds, or the reviser returned a candidate seen before."""
    verified = "verified"
    """``revise_when="on_failure"`` and no critic flagged a failure."""
    sampled = "sampled"
    """No revision was asked for (``max_rounds=0``, best-of-n): the drafts were scored
    and the best (or the vote's winner) returned. Not a budget failure."""
    error = "error"
    """A critic or the model broke; ``RefineResult.error`` says what, and ``best`` is
    still the best candidate seen (or the unscored draft)."""
    interrupted = "interrupted"
    """The run was interrupted (Ctrl-C, a cancelled task); ``best`` is the best so far."""


class RefineResult(_Frozen):
    """Everything a run produced: the best candidate, the last one, and the whole trace."""

    task: Task
    """The task."""
    best: ScoredCandidate | None
    """The best-scored candidate seen (None only when the budget allowed no scored draft)."""
    final: ScoredCandidate | None
    """The last scored candidate."""
    rounds: list[Round]
    """Every round, every candidate, every critique."""
    stop_reason: StopReason
    """Why the run stopped."""
    stop_detail: str = ""
    """A sentence on the stop, e.g. which limit and how much of it was used."""
    budget_limit: BudgetLimit | None = None
    """The limit that stopped the run when ``stop_reason`` is ``budget``."""
    threshold: float
    """The threshold the run aimed at."""
    usage: Usage
    """Total cost of the run."""
    memory: list[str] = Field(default_factory=list)
    """The memory the run ended with: the last entries its reflector kept (Reflexion's
    reflections); each round's own entry is `Round.reflection`."""
    error: str | None = None
    """The error message when ``stop_reason`` is ``error``."""

    @property
    def text(self) -> str | None:
        """The best candidate's text."""
        return self.best.candidate.text if self.best else None

    @property
    def reached_threshold(self) -> bool:
        """True when the run stopped because the threshold was reached."""
        return self.stop_reason is StopReason.threshold

    def document(self, settings: dict[str, Any] | None = None) -> dict[str, Any]:
        """The result as a versioned, self-describing JSON document (``--json``).

        Keys: ``schema_version`` (`RESULT_SCHEMA_VERSION`), ``redline_version``,
        ``settings`` (how the run was configured: model, critics, budget, ...), ``text``
        (the best answer, or null), then every field of the result. Each candidate
        carries its own ``id`` (content hash) and its ``parent``'s.
        """
        from redline._version import __version__

        return {"schema_version": RESULT_SCHEMA_VERSION, "redline_version": __version__,
                "settings": settings or {}, "text": self.text,
                **self.model_dump(mode="json")}

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> RefineResult:
        """Read back a result written by `document`.

        Raises:
            ValueError: a document of a newer schema version, or not a result at all.
        """
        version = document.get("schema_version")
        if not isinstance(version, int) or version > RESULT_SCHEMA_VERSION:
            raise ValueError(f"not a redline result document of schema version <= "
                             f"{RESULT_SCHEMA_VERSION} (schema_version={version!r})")
        meta = {"schema_version", "redline_version", "settings", "text"}
        return cls.model_validate({k: v for k, v in document.items() if k not in meta})


RESULT_SCHEMA_VERSION = 1
"""The version of `RefineResult.document`'s layout; it grows when a field changes meaning
or goes away (new fields do not change it)."""
