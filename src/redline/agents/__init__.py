"""The LLM-driven actors of the loop: the generator and the reviser.

`render_feedback` is how the critiques read to the reviser; pass another function as
``Reviser(model, feedback=...)`` to change it. The prompts themselves live in
`redline.prompts`.
"""

from redline.agents.feedback import FeedbackRenderer, render_feedback
from redline.agents.generator import Generator
from redline.agents.reviser import ReviseMode, Reviser

__all__ = ["FeedbackRenderer", "Generator", "ReviseMode", "Reviser", "render_feedback"]
