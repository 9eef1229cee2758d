"""How the critics' feedback on a candidate reads to the reviser.

`render_feedback` is the default; a preset that wants the reviser to read feedback
differently (Self-Debug's explanation first, only the failing critics, a score table)
passes its own function as ``Reviser(model, feedback=...)``. `render_failures` is
Self-Debug's: only what failed, the failing tests with their output.
"""

from __future__ import annotations

from collections.abc import Callable

from redline.types import ScoredCandidate

__all__ = ["FeedbackRenderer", "render_failures", "render_feedback"]

FeedbackRenderer = Callable[[ScoredCandidate], str]
"""A function from a scored candidate to the feedback text the reviser reads ("" when
there is none)."""


def render_feedback(scored: ScoredCandidate) -> str:
    """The critics' feedback, one section per critic that gave any, in panel order.

    Each section reads ``[critic] (score 0.40) what to change``; sections are separated
    by a blank line. "" when no critic said anything.
    """
    parts = [f"[{c.critic}] (score {c.score:.2f}) {c.feedback.strip()}"
             for c in scored.critiques if c.feedback.strip()]
    return "\n\n".join(parts)


def render_failures(scored: ScoredCandidate) -> str:
    """Only what failed: one section per critique with the verdict ``passed=False``, or
    without a verdict and a score below 1, in panel order.

    A tests critic's section is its feedback: each failing test with its assertion
    output or traceback. Critics that passed (or gave no verdict and a full score) say
    nothing, so that a small model reads the failure and not the praise. Each section
    reads ``[critic] what failed``; a failed critique without feedback names the
    failing tests of its ``evidence["failed"]``. "" when nothing failed.
    """
    parts = []
    for c in scored.critiques:
        if c.passed is True or (c.passed is None and c.score >= 1.0):
            continue
        text = c.feedback.strip()
        if not text and c.passed is False:
            failed = c.evidence.get("failed") or []
            text = "failed" + (": " + "; ".join(str(f) for f in failed) if failed else "")
        if text:
            parts.append(f"[{c.critic}] {text}")
    return "\n\n".join(parts)
