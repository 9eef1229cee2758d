"""The LLM-driven actors of the loop: the generator and the revisers.

`render_feedback` is how the critiques read to the reviser; pass another function as
``Reviser(model, feedback=...)`` to change it (`render_failures`: only what failed).
`DebugReviser` is Self-Debug's reviser: it explains the code and traces a failing test
before it fixes. `Resampler` revises by drawing a new sample of the task, the failure
unseen (the ``resample`` preset). A reflector writes what the loop remembers between
attempts (`Reflector`: Reflexion's verbal reflections; `FeedbackHistory`: Self-Refine's
history of feedback). The prompts themselves live in `redline.prompts`.
"""

from redline.agents.debugger import DebugReviser
from redline.agents.feedback import FeedbackRenderer, render_failures, render_feedback
from redline.agents.generator import Generator
from redline.agents.reflector import FeedbackHistory, Reflector, ReflectorLike
from redline.agents.resampler import Resampler
from redline.agents.reviser import OnRepeat, ReviseMode, Reviser

__all__ = ["DebugReviser", "FeedbackHistory", "FeedbackRenderer", "Generator", "OnRepeat",
           "Reflector", "ReflectorLike", "Resampler", "ReviseMode", "Reviser",
           "render_failures", "render_feedback"]
