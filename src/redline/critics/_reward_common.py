"""What the local and the served reward-model critics share: the calibration that maps a
raw reward to [0, 1], the micro-batcher that coalesces concurrent calls, and the critique.

The mapping is ``score = sigmoid((raw - b) / T)``. Uncalibrated, ``b = 0`` and
``T = 1``: a raw reward of 0 scores 0.5 and +2.2 scores 0.9. Raw scales differ from model
to model (some span a few units, others tens), so fit ``b`` and ``T`` with `calibrate`
before trusting a threshold.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import statistics
import tempfile
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from redline._aio import gather_all
from redline.errors import ConfigError
from redline.types import Critique

__all__ = ["CALIBRATION_FILE", "Calibration", "MicroBatcher", "Reward", "calibrate",
           "reward_critique"]

CALIBRATION_FILE = "redline_calibration.json"
"""The calibration's file name, written next to the model's ``config.json``."""

_RIDGE = 1.0
"""Gaussian prior on the slope (in standardised reward units): it keeps the fit finite
when the data are perfectly separable, and is negligible beside a few dozen examples."""


class Calibration(BaseModel):
    """How a raw reward maps to a score in [0, 1]: ``sigmoid((raw - b) / T)``.

    ``Calibration()`` is the uncalibrated mapping, ``sigmoid(raw)``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    b: float = 0.0
    """The raw reward that scores 0.5."""
    T: float = Field(default=1.0, gt=0)
    """The temperature: raw reward units per unit of log-odds."""
    method: Literal["none", "labels", "pairs"] = "none"
    """How it was fitted: not at all, on labelled answers, or on preference pairs."""
    n: int = Field(default=0, ge=0)
    """Labelled answers or preference pairs it was fitted on."""
    accuracy: float | None = None
    """On those: the share of labels the 0.5 threshold gets right, or of pairs where the
    chosen answer got the higher reward (ties count half)."""

    @property
    def calibrated(self) -> bool:
        """Whether ``b`` and ``T`` were fitted (rather than the default mapping)."""
        return self.method != "none"

    def score(self, raw: float) -> float:
        """The score in [0, 1] of a raw reward."""
        return _sigmoid((raw - self.b) / self.T)

    def raw_at(self, score: float) -> float:
        """The raw reward that scores ``score`` (0 < score < 1): what a threshold means."""
        if not 0.0 < score < 1.0:
            raise ConfigError(f"a threshold must be strictly between 0 and 1, got {score:g}")
        return self.b + self.T * math.log(score / (1.0 - score))

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write it to ``folder/redline_calibration.json`` (atomically) and return the path."""
        path = Path(folder) / CALIBRATION_FILE
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{CALIBRATION_FILE}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.model_dump_json(indent=2) + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise ConfigError(f"cannot write the calibration {str(path)!r}: "
                              f"{exc.strerror}") from exc
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> Calibration | None:
        """The calibration saved in ``folder`` (or in the file ``folder`` names), or None
        when there is none.

        Raises:
            ConfigError: the file exists but is not a calibration.
        """
        path = Path(folder)
        if path.is_dir():
            path = path / CALIBRATION_FILE
        if not path.is_file():
            return None
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValidationError) as exc:
            raise ConfigError(f"the calibration file {str(path)!r} is unreadable: {exc}; "
                              "delete it or run `redline rm calibrate` again") from exc


def calibrate(raw_scores: Sequence[float], labels: Sequence[bool | int] | None = None,
              pairs: Sequence[tuple[int, int]] | None = None) -> Calibration:
    """Fit ``b`` and ``T`` from labelled answers or from preference pairs.

    With ``labels`` (one per raw score, good = True/1), a logistic regression: the score
    is then the probability that an answer with that reward is labelled good.

    With ``pairs`` (``(chosen, rejected)`` indexes into ``raw_scores``), a Bradley-Terry
    fit. Pairs only fix the scale ``T`` (a shift of every reward changes no preference),
    so ``b`` is set to the median reward of the chosen answers: the score is then the
    probability that an answer would be preferred over a typical chosen answer, and a
    threshold of 0.5 means "as good as a typical chosen answer".

    Both fits put a weak prior on the slope, so perfectly separated data give a finite
    ``T``.

    Example:
        >>> rewards = [2.1, -0.3, 1.7, 0.2]     # chosen, rejected, chosen, rejected
        >>> calibrate(rewards, pairs=[(0, 1), (2, 3)]).b
        1.9

    Raises:
        ConfigError: neither or both of labels and pairs, mismatched lengths, bad
            indexes, too few examples, only one class of label, all rewards equal, or
            rewards that rank the bad (rejected) answers higher.
    """
    raw = [float(r) for r in raw_scores]
    if any(not math.isfinite(r) for r in raw):
        raise ConfigError("the raw rewards include NaN or infinity")
    if (labels is None) == (pairs is None):
        raise ConfigError("calibrate needs labels= or pairs= (one of them)")
    if labels is not None:
        return _fit_labels(raw, [_label(v) for v in labels])
    assert pairs is not None
    return _fit_pairs(raw, [(int(c), int(r)) for c, r in pairs])


def _label(value: object) -> bool:
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    raise ConfigError(f"a label must be true/false or 1/0, got {value!r}")


def _spread(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    std = statistics.pstdev(values, mean)
    if std == 0.0:
        raise ConfigError("every raw reward is the same: nothing to calibrate on")
    return mean, std


def _fit_labels(raw: list[float], labels: list[bool]) -> Calibration:
    if len(labels) != len(raw):
        raise ConfigError(f"{len(labels)} labels for {len(raw)} raw rewards")
    if all(labels) or not any(labels):
        raise ConfigError("the labels are all " + ("good" if all(labels) else "bad") +
                          ": calibrating needs both good and bad examples")
    mean, std = _spread(raw)
    z = [(r - mean) / std for r in raw]
    y = [1.0 if v else 0.0 for v in labels]

    def loss(w: float, c: float) -> float:
        return sum(_softplus(w * zi + c) - yi * (w * zi + c) for zi, yi in zip(z, y, strict=True)) \
            + 0.5 * _RIDGE * w * w

    w = c = 0.0
    current = loss(w, c)
    for _ in range(200):  # damped Newton; converges in a handful of steps
        gw, gc, hww, hwc, hcc = _RIDGE * w, 0.0, _RIDGE, 0.0, 1e-9
        for zi, yi in zip(z, y, strict=True):
            p = _sigmoid(w * zi + c)
            s = p * (1.0 - p)
            gw += (p - yi) * zi
            gc += p - yi
            hww += s * zi * zi
            hwc += s * zi
            hcc += s
        det = hww * hcc - hwc * hwc
        dw, dc = (hcc * gw - hwc * gc) / det, (hww * gc - hwc * gw) / det
        step = 1.0
        while step > 1e-6 and loss(w - step * dw, c - step * dc) > current:
            step /= 2
        w, c = w - step * dw, c - step * dc
        current = loss(w, c)
        if abs(step * dw) + abs(step * dc) < 1e-10:
            break
    if w <= 0:
        raise ConfigError("higher rewards go with bad labels in these examples: the reward "
                          "model does not separate them, so no calibration is fitted")
    cal = Calibration(b=mean - c * std / w, T=std / w, method="labels", n=len(raw))
    right = sum((cal.score(r) >= 0.5) == label for r, label in zip(raw, labels, strict=True))
    return cal.model_copy(update={"accuracy": right / len(raw)})


def _fit_pairs(raw: list[float], pairs: list[tuple[int, int]]) -> Calibration:
    if len(pairs) < 2:
        raise ConfigError(f"calibrating needs at least 2 preference pairs, got {len(pairs)}")
    for chosen, rejected in pairs:
        if not (0 <= chosen < len(raw) and 0 <= rejected < len(raw)):
            raise ConfigError(f"pair ({chosen}, {rejected}) indexes outside the "
                              f"{len(raw)} raw rewards")
    _, std = _spread([raw[i] for pair in pairs for i in pair])
    d = [(raw[c] - raw[r]) / std for c, r in pairs]
    s = 0.0
    for _ in range(200):  # Newton on a convex 1-D objective
        g, h = _RIDGE * s, _RIDGE
        for di in d:
            p = _sigmoid(s * di)
            g -= (1.0 - p) * di
            h += p * (1.0 - p) * di * di
        s -= g / h
        if abs(g / h) < 1e-12:
            break
    if s <= 0:
        raise ConfigError("the rejected answers get higher rewards than the chosen ones: "
                          "the reward model does not agree with these preferences")
    wins = sum(1.0 if di > 0 else 0.5 if di == 0 else 0.0 for di in d)
    return Calibration(b=statistics.median(raw[c] for c, _ in pairs), T=std / s,
                       method="pairs", n=len(pairs), accuracy=wins / len(pairs))


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@dataclass(frozen=True)
class Reward:
    """One raw reward and how the input was fed to the model."""

    raw: float
    tokens: int | None = None
    truncated: bool | None = None
    dropped: dict[str, int] = field(default_factory=dict)


_SCORE_DECIMALS = 4
"""The score is computed from the reward rounded to this many decimals: in float32 the
shape of the batch a candidate lands in moves its reward by ~1e-7, and a candidate must
get the same score whichever batch it was in."""


def reward_critique(name: str, reward: Reward, calibration: Calibration,
                    evidence: dict[str, object]) -> Critique:
    """The critique of a reward: the calibrated score, the raw reward, a one-line feedback.

    A reward model gives no reasons; the reviser gets those from the other critics of
    the panel (a judge, tests), whose feedback it sees alongside this line.
    """
    score = calibration.score(round(reward.raw, _SCORE_DECIMALS))
    note = "" if calibration.calibrated else ", uncalibrated"
    feedback = (f"reward model scored {score:.2f} (raw {reward.raw:+.2f}{note}); "
                "it gives no reasons, so improve the answer overall")
    return Critique(critic=name, score=score, raw=reward.raw, feedback=feedback,
                    evidence={"truncated": reward.truncated, "tokens": reward.tokens,
                              **({"dropped_tokens": reward.dropped} if reward.dropped else {}),
                              "calibrated": calibration.calibrated,
                              "calibration": calibration.model_dump(), **evidence})


ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


@dataclass
class _LoopQueue(Generic[ItemT, ResultT]):
    pending: list[tuple[ItemT, asyncio.Future[ResultT]]] = field(default_factory=list)
    full: asyncio.Event = field(default_factory=asyncio.Event)
    drain: asyncio.Task[None] | None = None
    slots: asyncio.Semaphore | None = None
    running: set[asyncio.Task[None]] = field(default_factory=set)


class MicroBatcher(Generic[ItemT, ResultT]):
    """Coalesces concurrent submissions into batches for one ``run`` call each.

    When work arrives and nothing waits, it waits up to ``max_wait`` seconds for a full
    batch (``max_batch`` items), then hands every item pending to ``run``; items arriving
    while ``concurrency`` batches are in flight queue up and go together in the next
    one. So N concurrent submissions take about N / max_batch batches, and ``run`` may
    get more than ``max_batch`` items (it splits them). The queues live on the event
    loop (one per loop; nothing outlives the work, so no task is left when a loop ends).

    Args:
        run: scores a list of items, returning one result per item, in order.
        max_batch: the batch size that is worth waiting for.
        max_wait: seconds to wait for a full batch when the first item arrives.
        concurrency: batches in flight at once.
    """

    def __init__(self, run: Callable[[list[ItemT]], Awaitable[list[ResultT]]], *,
                 max_batch: int, max_wait: float, concurrency: int = 1) -> None:
        self.run = run
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.concurrency = concurrency
        self._queues: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, _LoopQueue[ItemT, ResultT]] = weakref.WeakKeyDictionary()

    async def submit_many(self, items: Sequence[ItemT]) -> list[ResultT]:
        """Queue items and wait for their results (they may share batches with others)."""
        if not items:
            return []
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _LoopQueue(slots=asyncio.Semaphore(self.concurrency))
        futures = [loop.create_future() for _ in items]
        queue.pending.extend(zip(items, futures, strict=True))
        if len(queue.pending) >= self.max_batch:
            queue.full.set()
        if queue.drain is None or queue.drain.done():
            queue.drain = loop.create_task(self._drain(queue))
        return await gather_all(*futures)

    async def _drain(self, queue: _LoopQueue[ItemT, ResultT]) -> None:
        assert queue.slots is not None
        loop = asyncio.get_running_loop()
        while queue.pending:
            if len(queue.pending) < self.max_batch and self.max_wait > 0:
                queue.full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(queue.full.wait(), self.max_wait)
            await queue.slots.acquire()
            batch = [(item, f) for item, f in queue.pending if not f.done()]
            queue.pending.clear()
            if not batch:
                queue.slots.release()
                continue
            task = loop.create_task(self._run(batch))
            queue.running.add(task)
            task.add_done_callback(lambda t: self._finished(loop, queue, t))
        queue.drain = None
        self._forget_if_idle(loop, queue)

    def _finished(self, loop: asyncio.AbstractEventLoop, queue: _LoopQueue[ItemT, ResultT],
                  task: asyncio.Task[None]) -> None:
        queue.running.discard(task)
        assert queue.slots is not None
        queue.slots.release()
        self._forget_if_idle(loop, queue)

    def _forget_if_idle(self, loop: asyncio.AbstractEventLoop,
                        queue: _LoopQueue[ItemT, ResultT]) -> None:
        # An idle queue is dropped: its tasks and primitives refer to the loop, so keeping
        # it would keep every finished loop (one per `refine()` call) alive.
        if not queue.pending and not queue.running and queue.drain is None \
                and self._queues.get(loop) is queue:
            del self._queues[loop]

    async def _run(self, batch: list[tuple[ItemT, asyncio.Future[ResultT]]]) -> None:
        try:
            results = await self.run([item for item, _ in batch])
        except asyncio.CancelledError:  # the loop is closing: free the callers
            for _, f in batch:
                f.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - each caller gets the failure and raises it
            for _, f in batch:
                if not f.done():
                    f.set_exception(exc)
            return
        for (_, f), result in zip(batch, results, strict=True):
            if not f.done():
                f.set_result(result)
