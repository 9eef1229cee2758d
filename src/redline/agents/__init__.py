"""The LLM-driven actors of the loop: the generator and the reviser."""

from redline.agents.generator import Generator
from redline.agents.reviser import ReviseMode, Reviser

__all__ = ["Generator", "ReviseMode", "Reviser"]
