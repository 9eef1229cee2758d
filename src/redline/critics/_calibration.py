"""The calibration that maps a reward model's raw reward to a score in [0, 1].

The mapping is ``score = sigmoid((raw - b) / T)``. Uncalibrated, ``b = 0`` and
``T = 1``: a raw reward of 0 scores 0.5 and +2.2 scores 0.9. Raw scales differ from model
to model (some span a few units, others tens), so fit ``b`` and ``T`` with `calibrate`
before trusting a threshold.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from redline._files import atomic_write
from redline.errors import ConfigError

__all__ = ["CALIBRATION_FILE", "Calibration", "calibrate"]

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
        """Write it to ``folder/redline_calibration.json`` (atomically, synced to disk) and
        return the path.

        Raises:
            ConfigError: the file cannot be written.
        """
        path = Path(folder) / CALIBRATION_FILE
        try:
            atomic_write(path, self.model_dump_json(indent=2) + "\n")
        except OSError as exc:
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
