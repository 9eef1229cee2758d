"""The reward-model critic: best-of-N's scorer, over any reward source.

A learned reward model gives one raw number per (prompt, answer) pair: higher is
better, on a scale of its own. `RewardCritic` asks a `RewardSource` for it (a model in
this process, a vLLM or TEI server, or anything else that implements the protocol),
keeps it in `Critique.raw`, and maps it to [0, 1] with a `Calibration`. Two thin
constructors build the shipped sources: `RewardModelCritic` (transformers, in this
process; the ``rm`` critic) and `RemoteRewardCritic` (served; ``rm-remote``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, Self

from redline.critics._calibration import CALIBRATION_FILE, Calibration, calibrate
from redline.critics.base import Critic
from redline.errors import ConfigError, CriticError
from redline.feedback_sources.rewards import Reward, RewardSource, TransformersRewardModel
from redline.types import Candidate, Critique, Task

__all__ = ["CALIBRATION_FILE", "Calibration", "RewardCritic", "RewardModelCritic", "calibrate",
           "rm_critic"]

_SCORE_DECIMALS = 4
"""The score is computed from the reward rounded to this many decimals: in float32 the
shape of the batch a candidate lands in moves its reward by ~1e-7, and a candidate must
get the same score whichever batch it was in."""


class RewardCritic(Critic):
    """Scores answers with a reward model: any `RewardSource`, calibrated to [0, 1].

    The task is the prompt and the candidate the answer. The raw reward is kept in
    `Critique.raw`; the score is ``sigmoid((raw - b) / T)`` with the calibration (see
    `calibrate`), or ``sigmoid(raw)`` uncalibrated, computed from the reward rounded to
    4 decimals so the batch a candidate lands in does not change its score. The
    feedback is one line: a reward model gives no reasons, so the reviser gets those
    from the other critics of the panel (a judge, tests).

    Concurrent critiques are batched by the source (one forward pass, one request).

    Example:
        >>> from redline.feedback_sources.rewards import ServedRewardModel
        >>> critic = RewardCritic(ServedRewardModel("http://gpu-1:8000/classify"),
        ...                       calibration="./rm/redline_calibration.json")  # doctest: +SKIP

    Args:
        source: where the raw rewards come from.
        name: the critic's name.
        calibration: the mapping to [0, 1], a `Calibration` or the path of a folder or
            file holding one (``redline_calibration.json``); None is ``sigmoid(raw)``.
        gate: make it a gate (see `Critic.gate`).
        weight: its weight in a panel.
        deterministic: whether the same answer always gets the same critique; by
            default what the source says (its ``deterministic`` attribute, else False).

    Raises:
        ConfigError: a source that has no ``rewards`` method, or a calibration path
            that holds none.
    """

    def __init__(self, source: RewardSource, *, name: str = "rm",
                 calibration: Calibration | str | os.PathLike[str] | None = None,
                 gate: bool = False, weight: float = 1.0,
                 deterministic: bool | None = None) -> None:
        if not isinstance(source, RewardSource):
            raise ConfigError(f"reward critic {name!r}: {type(source).__name__} is not a "
                              "reward source (it needs `async def rewards(pairs)`)")
        self.source = source
        self.name = name
        self.calibration = _calibration(calibration)
        self.gate = gate
        self.weight = weight
        self.deterministic = bool(getattr(source, "deterministic", False)) \
            if deterministic is None else deterministic

    def __repr__(self) -> str:
        return f"RewardCritic({self.source!r}, name={self.name!r})"

    async def preflight(self) -> None:
        """Check the source when it can be checked (a local model loads, a server is
        asked once)."""
        check = getattr(self.source, "preflight", None)
        if check is not None:
            await check()

    async def aclose(self) -> None:
        """Release the source's connections, when it holds any."""
        close = getattr(self.source, "aclose", None)
        if close is not None:
            await close()

    async def critique(self, task: Task, candidate: Candidate) -> Critique:
        """Judge one candidate (batched with concurrent callers by the source)."""
        (critique,) = await self.critique_many(task, [candidate])
        return critique

    async def critique_many(self, task: Task, candidates: Sequence[Candidate]) -> list[Critique]:
        """Judge candidates in the source's batches (shared with concurrent callers)."""
        rewards = await self._rewards([(task.prompt, c.text) for c in candidates])
        return [self._critique(r) for r in rewards]

    async def rewards(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """The raw rewards of ``(prompt, answer)`` pairs (what `calibrate` fits on)."""
        return [r.raw for r in await self._rewards(pairs)]

    async def _rewards(self, pairs: Sequence[tuple[str, str]]) -> list[Reward]:
        if not pairs:
            return []
        detailed = getattr(self.source, "detailed_rewards", None)
        try:
            if detailed is not None:
                got: list[Any] = list(await detailed(pairs))
            else:
                got = [Reward(raw=float(r)) for r in await self.source.rewards(pairs)]
        except CriticError as exc:
            if exc.critic is None:  # a source does not know the critic's name
                exc.critic = self.name
            raise
        except (TypeError, ValueError) as exc:  # float() of something that is not a number
            raise CriticError(f"reward critic {self.name!r}: the source gave something that "
                              f"is not a reward ({exc})", critic=self.name) from exc
        if len(got) != len(pairs):
            raise CriticError(f"reward critic {self.name!r}: the source gave {len(got)} "
                              f"rewards for {len(pairs)} answers", critic=self.name)
        for r in got:
            if not isinstance(r, Reward) or not math.isfinite(r.raw):
                raise CriticError(f"reward critic {self.name!r}: the source gave "
                                  f"{r!r}, not a finite reward", critic=self.name)
        return got

    def _critique(self, reward: Reward) -> Critique:
        cal = self.calibration
        score = cal.score(round(reward.raw, _SCORE_DECIMALS))
        note = "" if cal.calibrated else ", uncalibrated"
        feedback = (f"reward model scored {score:.2f} (raw {reward.raw:+.2f}{note}); "
                    "it gives no reasons, so improve the answer overall")
        evidence: dict[str, Any] = {"truncated": reward.truncated, "tokens": reward.tokens}
        if reward.dropped:
            evidence["dropped_tokens"] = dict(reward.dropped)
        evidence |= {"calibrated": cal.calibrated, "calibration": cal.model_dump(),
                     **reward.origin}
        return Critique(critic=self.name, score=score, raw=reward.raw, feedback=feedback,
                        evidence=evidence)


def _calibration(value: Calibration | str | os.PathLike[str] | None) -> Calibration:
    if value is None:
        return Calibration()
    if isinstance(value, Calibration):
        return value
    found = Calibration.load(value)
    if found is None:
        raise ConfigError(f"no calibration at {os.fspath(value)!r}: expected "
                          "redline_calibration.json or a folder holding it")
    return found


class RewardModelCritic(RewardCritic):
    """A `RewardCritic` over a reward model run in this process (GPU when present).

    ``RewardModelCritic(model, ...)`` is ``RewardCritic(TransformersRewardModel(model,
    ...))`` with the calibration saved next to a local model (``redline rm calibrate``)
    used by default. The model loads on the first critique, or in `preflight` (which
    `arefine` runs before any token is spent: a Hub id that is not in the local cache
    fails at once). See `TransformersRewardModel` for the input format and truncation;
    each critique's evidence says ``truncated``, ``tokens`` and ``dropped_tokens``.

    Example:
        >>> critic = RewardModelCritic("Skywork/Skywork-Reward-V2-Qwen3-0.6B")  # doctest: +SKIP
        >>> result = await redline.arefine(task, model=chat, critics=[critic])  # doctest: +SKIP

    Args:
        model: a local model folder (with ``config.json``) or a Hugging Face Hub id.
        name: the critic's name.
        device: ``"auto"`` (CUDA when available, else the CPU) or a torch device.
        dtype: ``"auto"`` (bfloat16 on CUDA, float32 on the CPU), ``"float32"``,
            ``"float16"`` or ``"bfloat16"``.
        max_length: the longest input in tokens; by default the model's limit, at most
            4096.
        batch_size: the largest forward pass; concurrent critiques are coalesced up to it.
        max_wait_ms: how long the first critique of an idle model waits for others to
            batch with.
        calibration: the mapping to [0, 1]; by default the one saved next to the model
            (``redline_calibration.json``), else the uncalibrated ``sigmoid(raw)``.
        gate: make it a gate (see `Critic.gate`).
        weight: its weight in a panel.

    Raises:
        ConfigError: a path that is not a model folder (or a Hub id), a bad setting, an
            unreadable saved calibration.
        MissingDependencyError: torch or transformers is not installed.
    """

    source: TransformersRewardModel

    def __init__(self, model: str | os.PathLike[str], *, name: str = "rm",
                 device: str = "auto", dtype: str = "auto", max_length: int | None = None,
                 batch_size: int = 16, max_wait_ms: float = 2.0,
                 calibration: Calibration | None = None, gate: bool = False,
                 weight: float = 1.0) -> None:
        source = TransformersRewardModel(model, device=device, dtype=dtype,
                                         max_length=max_length, batch_size=batch_size,
                                         max_wait_ms=max_wait_ms)
        if calibration is None and source.is_local:
            calibration = Calibration.load(source.model)
        super().__init__(source, name=name, calibration=calibration, gate=gate,
                         weight=weight)

    def __repr__(self) -> str:
        return (f"RewardModelCritic({self.source.model!r}, name={self.name!r}, "
                f"device={self.device!r})")

    @property
    def device(self) -> str:
        """The device asked for (``"auto"``, ``"cpu"``, ``"cuda:1"``)."""
        return self.source.device

    @property
    def batch_size(self) -> int:
        """The largest forward pass (1 for a model without a padding token)."""
        return self.source.batch_size

    @property
    def loaded(self) -> bool:
        """Whether the model and tokenizer are in memory."""
        return self.source.loaded

    @property
    def forward_passes(self) -> int:
        """Forward passes run so far (for tests and benchmarks)."""
        return self.source.forward_passes

    def load(self) -> Self:
        """Load the model now rather than on the first critique (blocking; see
        `TransformersRewardModel.load`)."""
        self.source.load()
        return self


def rm_critic(arg: str | None, *, rm_device: str | None = None,
              rm_batch_size: int | None = None) -> RewardModelCritic:
    """A learned reward model (Hugging Face sequence classifier) scores each answer.

    Argument: the model, a local folder with config.json or a Hugging Face Hub id (Hub
    downloads need network access). The model loads before the run starts, on the GPU
    when there is one; concurrent critiques share batched forward passes. The score is
    calibrated with the redline_calibration.json next to the model (see `redline rm
    calibrate`), else sigmoid(raw reward). --rm-device and --rm-batch-size apply.

    Examples:
        --critic rm:./models/my-reward-model
        --critic rm:Skywork/Skywork-Reward-V2-Qwen3-0.6B --rm-device cuda:1
    """
    if not arg or not arg.strip():
        raise ConfigError("the rm critic needs a model: --critic rm:PATH_ORHUB_ID")
    options: dict[str, Any] = {}
    if rm_device:
        options["device"] = rm_device
    if rm_batch_size:
        options["batch_size"] = rm_batch_size
    return RewardModelCritic(arg.strip(), **options)
