"""`RemoteRewardCritic`: the reward-model critic over a model served by vLLM or TEI.

The server holds the model (and batches on its GPU); `ServedRewardModel` speaks its
protocol (its docstring has the wire formats), and `RewardCritic` calibrates what the
server sends.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

from redline.critics._calibration import Calibration
from redline.critics.reward_model import RewardCritic
from redline.errors import ConfigError
from redline.feedback_sources.rewards import ServedRewardModel

__all__ = ["RemoteRewardCritic", "remote_rm_critic"]


class RemoteRewardCritic(RewardCritic):
    """A `RewardCritic` over a reward model served over HTTP by vLLM or TEI.

    ``RemoteRewardCritic(url, ...)`` is ``RewardCritic(ServedRewardModel(url, ...),
    name="rm-remote")``. Transient failures (429, 408, 5xx, timeouts, refused
    connections) are retried with jittered backoff, then raise `FeedbackSourceError`
    naming the URL; a rejected request or an unusable answer is a `CriticError`. It is
    not declared deterministic: the server batches requests its own way, and in
    bfloat16 the batch an input lands in moves its reward.

    Example:
        >>> critic = RemoteRewardCritic("http://gpu-1:8000/classify")       # vLLM
        >>> critic = RemoteRewardCritic("http://gpu-2:8080", protocol="tei")

    Args:
        url: the server, e.g. ``http://host:8000``; a path ending in ``/classify``,
            ``/pooling`` or ``/predict`` names the endpoint (else ``/classify`` for
            vLLM, ``/predict`` for TEI).
        protocol: ``"vllm"`` or ``"tei"``; by default read from the URL's endpoint
            (vLLM when it names none).
        model: the served model's name (vLLM; the server's only model when None).
        render: turns ``(prompt, answer)`` into the model's input text, for batched
            completion-style requests (see `ServedRewardModel`).
        calibration: the mapping to [0, 1], a `Calibration` or the path of a folder or
            file holding one (``redline_calibration.json``); fit one with `calibrate`
            on `rewards`.
        name: the critic's name.
        batch_size: the most inputs in one batched request (TEI's default limit is 32).
        max_wait_ms: how long the first critique waits for others to batch with.
        truncate: ask the server to cut inputs longer than the model's limit, keeping
            their end (where the reward is read).
        timeout: seconds allowed for one HTTP attempt.
        max_attempts: attempts per request, the first included.
        max_wait: the longest pause between attempts, in seconds.
        api_key: sent as ``Authorization: Bearer`` (vLLM and TEI ``--api-key``).
        gate: make it a gate (see `Critic.gate`).
        weight: its weight in a panel.

    Raises:
        ConfigError: a URL that is not http(s), an unknown protocol, or one that does
            not serve the URL's endpoint, a bad setting, or a calibration path that
            holds none.
    """

    source: ServedRewardModel

    def __init__(self, url: str, *, protocol: Literal["vllm", "tei"] | None = None,
                 model: str | None = None,
                 render: Callable[[str, str], str] | None = None,
                 calibration: Calibration | str | os.PathLike[str] | None = None,
                 name: str = "rm-remote", batch_size: int = 32, max_wait_ms: float = 2.0,
                 truncate: bool = True, timeout: float = 30.0, max_attempts: int = 4,
                 max_wait: float = 10.0, api_key: str | None = None, gate: bool = False,
                 weight: float = 1.0) -> None:
        source = ServedRewardModel(url, protocol=protocol, model=model,
                                   render=render, batch_size=batch_size,
                                   max_wait_ms=max_wait_ms, truncate=truncate,
                                   timeout=timeout, max_attempts=max_attempts,
                                   max_wait=max_wait, api_key=api_key)
        super().__init__(source, name=name, calibration=calibration, gate=gate,
                         weight=weight)

    def __repr__(self) -> str:
        return f"RemoteRewardCritic({self.url!r}, protocol={self.protocol!r})"

    @property
    def url(self) -> str:
        """The endpoint's URL (``.../classify``, ``.../pooling`` or ``.../predict``)."""
        return self.source.url

    @property
    def protocol(self) -> str:
        """``"vllm"`` or ``"tei"``."""
        return self.source.protocol

    @property
    def model(self) -> str | None:
        """The served model's name (vLLM), or None for the server's only model."""
        return self.source.model

    @property
    def batch_size(self) -> int:
        """The most inputs in one batched request."""
        return self.source.batch_size


def remote_rm_critic(arg: str | None, *, rm_batch_size: int | None = None
                     ) -> RemoteRewardCritic:
    """A reward model served by vLLM (/classify, /pooling) or TEI (/predict) scores answers.

    Argument: the server's URL, then optional KEY=VALUE settings separated by spaces:
    protocol=vllm|tei (by default from the URL's endpoint, else vllm), model=NAME (the
    served model, vLLM) and calibration=PATH (a redline_calibration.json or its folder).
    Concurrent critiques are batched; --rm-batch-size applies.

    Examples:
        --critic rm-remote:http://gpu-1:8000/classify
        --critic "rm-remote:http://gpu-2:8080/predict calibration=./rm/"
        --critic "rm-remote:http://gpu-1:8000 protocol=vllm model=skywork-rm"
    """
    words = (arg or "").split()
    if not words:
        raise ConfigError("the rm-remote critic needs a URL: --critic rm-remote:URL")
    options: dict[str, Any] = {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep or key not in ("protocol", "model", "calibration") or not value:
            raise ConfigError(f"rm-remote: cannot read {word!r}; expected protocol=vllm|tei, "
                              "model=NAME or calibration=PATH after the URL")
        options[key] = value
    if rm_batch_size:
        options["batch_size"] = rm_batch_size
    return RemoteRewardCritic(words[0], **options)
