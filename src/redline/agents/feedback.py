"""How the critics' feedback on a candidate reads to the reviser.

`render_feedback` is the default; a preset that wants the reviser to read feedback
differently (Self-Debug's explanation first, only the failing critics, a score table)
passes its own function as ``Reviser(model, feedback=...)``.
"""

from __future__ import annotations

from collections.abc import Callable

from redline.types import ScoredCandidate

__all__ = ["FeedbackRenderer", "render_feedback"]

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
