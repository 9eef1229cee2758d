"""What every reward source returns, and the protocol it implements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["Reward", "RewardSource"]


@dataclass(frozen=True)
class Reward:
    """One raw reward, with how its input was fed to the model and where it came from."""

    raw: float
    """The model's un-normalised reward (a logit: higher is better, any scale)."""
    tokens: int | None = None
    """Tokens the model read (None when the source cannot tell, as a server)."""
    truncated: bool | None = None
    """Whether the input was cut to fit the model (None when the source cannot tell)."""
    dropped: Mapping[str, int] = field(default_factory=dict)
    """Tokens cut from the ``"prompt"`` and the ``"answer"`` when it was truncated."""
    origin: Mapping[str, object] = field(default_factory=dict)
    """What a critique cites as the reward's source: ``{"model": FOLDER_OR_ID}``, or
    ``{"server": URL, "protocol": "vllm"}``."""


@runtime_checkable
class RewardSource(Protocol):
    """Anything that gives raw rewards to ``(prompt, answer)`` pairs.

    One method is required. A source may also offer, and the reward-model critic uses
    when present:

    - ``async def detailed_rewards(pairs) -> list[Reward]``: the rewards with the
      tokens read, the truncation and the origin, for the critique's evidence;
    - ``deterministic: bool``: the same pair always gets the same reward;
    - ``async def preflight() -> None``: raise `redline.errors.ConfigError` when the
      source cannot work at all (a model that does not load, a server that is down);
    - ``async def aclose() -> None``: release connections.

    Two ship: `TransformersRewardModel` (in this process) and `ServedRewardModel`
    (vLLM or text-embeddings-inference over HTTP).
    """

    async def rewards(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """The raw reward of each ``(prompt, answer)`` pair, in order.

        Raises:
            FeedbackSourceError: the source could not answer (a server down, ...).
            CriticError: the source answered with something that is not a reward.
        """
        ...
