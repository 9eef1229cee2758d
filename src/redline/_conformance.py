"""The conformance check for critics (exported from `redline.testing`)."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

from redline._aio import run_sync
from redline.critics.base import Critic
from redline.errors import ConfigError, RedlineError
from redline.types import Candidate, Critique, Task, Usage

__all__ = ["CriticReport", "GateWarning", "acheck_critic", "check_critic"]


class GateWarning(UserWarning):
    """A gate critic that cannot fail (or did not fail on any sample checked)."""

Sample = str | tuple[Task | str, Candidate | str]

_GENERIC_TASK = Task(prompt="Answer the user's request.", id="check-critic")


@dataclass
class CriticReport:
    """What `check_critic` observed: the critiques of each sample, and any problems."""

    critic: str
    critiques: list[Critique] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Doubts that are not contract breaches (a gate that never failed), also issued
    as `GateWarning`."""
    concurrent_calls: int = 0

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def _pairs(samples: Iterable[Sample]) -> list[tuple[Task, Candidate]]:
    pairs = []
    for sample in samples:
        task, candidate = (_GENERIC_TASK, sample) if isinstance(sample, str) else sample
        task = task if isinstance(task, Task) else Task(prompt=task)
        candidate = candidate if isinstance(candidate, Candidate) else Candidate(text=candidate)
        pairs.append((task, candidate))
    if not pairs:
        raise ConfigError("check_critic needs at least one sample")
    return pairs


async def acheck_critic(critic: Critic, samples: Iterable[Sample], *,
                        concurrency: int = 32, raise_on_problem: bool = True) -> CriticReport:
    """Check that a critic keeps redline's critic contract.

    It checks that every critique names the critic, has a score in [0, 1] and, when it
    fails (``passed=False``), says why; it warns (`GateWarning`) about a gate that
    can never fail (a pass mark of 0) or that failed none of the samples; that a
    critic declared ``deterministic`` gives the same verdict twice; that `concurrency`
    simultaneous calls all succeed (and agree with one-at-a-time calls when
    deterministic); and that errors are redline
    exceptions, never bare ``ValueError`` or ``KeyError``.

    Args:
        critic: the critic under test.
        samples: candidate texts (judged for a generic task) or ``(task, candidate)``
            pairs, each a string or the redline type.
        concurrency: simultaneous calls in the concurrency check.
        raise_on_problem: raise `AssertionError` listing every problem (for tests).

    Returns:
        The report (when there were no problems, or ``raise_on_problem=False``).
    """
    pairs = _pairs(samples)
    report = CriticReport(critic=getattr(critic, "name", type(critic).__name__))
    if not isinstance(critic, Critic):
        report.problems.append(f"{critic!r} is not a redline Critic")
        return _finish(report, raise_on_problem)
    if not isinstance(critic.name, str) or not critic.name or ":" in critic.name:
        report.problems.append(f"name {critic.name!r} must be a non-empty string without ':'")

    async def judge(task: Task, candidate: Candidate) -> Critique | None:
        try:
            made = await critic.critique(task, candidate)
        except RedlineError:
            raise
        except Exception as exc:
            report.problems.append(
                f"raised {type(exc).__name__}: {exc}; a broken critic must raise a redline "
                "error (CriticError, FeedbackSourceError, ...)")
            return None
        _check_one(critic, made, candidate, report)
        return made if isinstance(made, Critique) else None

    first = [await judge(t, c) for t, c in pairs]
    report.critiques = [c for c in first if c is not None]
    _check_gate(critic, report)
    if critic.deterministic:
        again = [await judge(t, c) for t, c in pairs]
        for (_, cand), a, b in zip(pairs, first, again, strict=True):
            if a and b and not _agree(a, b):
                report.problems.append(f"declared deterministic but judged {cand.text[:40]!r} "
                                       f"differently twice: {_verdict(a)} vs {_verdict(b)}")
    load = [pairs[i % len(pairs)] for i in range(concurrency)]
    outcomes = await asyncio.gather(*(judge(t, c) for t, c in load), return_exceptions=True)
    report.concurrent_calls = len(outcomes)
    for i, outcome in enumerate(outcomes):
        if isinstance(outcome, BaseException):
            report.problems.append(f"concurrent call {i} raised {type(outcome).__name__}: "
                                   f"{outcome}")
        elif critic.deterministic and outcome and first[i % len(pairs)] and \
                not _agree(outcome, first[i % len(pairs)]):  # type: ignore[arg-type]
            report.problems.append(f"concurrent call {i} disagreed with the one-at-a-time "
                                   "verdict: the critic is not safe under concurrency")
    return _finish(report, raise_on_problem)


def check_critic(critic: Critic, samples: Iterable[Sample], **kwargs: object) -> CriticReport:
    """`acheck_critic` from synchronous code (e.g. a plain pytest test), on the thread's
    event loop (see `refine`)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run_sync(acheck_critic(critic, samples, **kwargs))  # type: ignore[arg-type]
    raise ConfigError("check_critic() cannot run inside a running event loop: "
                      "use `await acheck_critic(...)`")


def _check_one(critic: Critic, made: object, candidate: Candidate, report: CriticReport) -> None:
    where = f"on {candidate.text[:40]!r}"
    if not isinstance(made, Critique):
        report.problems.append(f"returned {type(made).__name__} {where}, not a Critique")
        return
    if made.critic != critic.name:
        report.problems.append(f"critique names critic {made.critic!r} {where}, "
                               f"but the critic is {critic.name!r}")
    if not 0.0 <= made.score <= 1.0:
        report.problems.append(f"score {made.score} outside [0, 1] {where}")
    if made.passed is False and not made.feedback.strip():
        report.problems.append(f"failed {where} without feedback: say what to change")
    if not isinstance(made.usage, Usage) or not isinstance(made.evidence, dict):
        report.problems.append(f"usage/evidence of the wrong type {where}")


def _check_gate(critic: Critic, report: CriticReport) -> None:
    if not critic.gate:
        return
    mark = critic.effective_pass_mark
    if mark is not None and mark <= 0.0:
        report.warnings.append(f"gate with pass mark {mark:g} can never fail: every score "
                               "passes; raise pass_mark or return passed=False")
    elif report.critiques and not any(
            c.passed is False or (c.passed is None and mark is not None and c.score < mark)
            for c in report.critiques):
        report.warnings.append("gate failed none of the samples: check it with a sample "
                               "it must reject (a gate that never fails checks nothing)")
    for message in report.warnings:
        warnings.warn(f"critic {report.critic!r}: {message}", GateWarning, stacklevel=3)


def _verdict(c: Critique) -> tuple[float, bool | None, str]:
    return (c.score, c.passed, c.feedback)


def _agree(a: Critique, b: Critique) -> bool:
    # Scores agree within 1e-6: a batched model's float32 output moves by ~1e-7 with the
    # shape of the batch an input lands in, which is not a change of verdict.
    return abs(a.score - b.score) <= 1e-6 and (a.passed, a.feedback) == (b.passed, b.feedback)


def _finish(report: CriticReport, raise_on_problem: bool) -> CriticReport:
    if report.problems and raise_on_problem:
        lines = "\n".join(f"- {p}" for p in dict.fromkeys(report.problems))
        raise AssertionError(f"critic {report.critic!r} fails the conformance check:\n{lines}")
    return report


