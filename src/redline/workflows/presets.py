"""The research methods as presets: each a function returning a `RefineConfig` for the one
refine graph (no copied loops; Reflexion and Self-Refine add the optional ``reflect``
node through a reflector).

| preset | method | needs |
|---|---|---|
| `self_refine` | Self-Refine (Madaan et al. 2023) | a rubric (the model judges itself) |
| `reflexion` | Reflexion (Shinn et al. 2023) | an evaluator with a verdict |
| `critic` | CRITIC (Gou et al. 2024) | tools: the interpreter, a search fact-check |
| `self_debug` | Self-Debug (Chen et al. 2024) | code; tests (given, doctests or generated) |
| `best_of_n` | best-of-N / self-consistency | a critic (reward model, judge, tests) |
| `resample` | sample until it passes (rejection sampling) | a critic with a verdict |
| `single` | one draft (the baseline) | nothing |

Every preset takes the drafting model first; the revising and judging models may be
others (``reviser_model=``, ``judge_model=``, ...): a small model drafts, a larger one
revises or judges. Any `RefineConfig` policy field (``threshold``, ``budget``, ``seed``,
...) can be given as a keyword; a field the method decides itself (Self-Debug revises only
on a failure, best-of-N never revises) raises `ConfigError` when given another value.

Each preset is also registered as a `Preset` in the ``redline.presets`` entry-point
group, so ``redline refine --preset NAME`` finds it and a package can ship its own.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redline.agents.debugger import DebugReviser
from redline.agents.generator import Generator
from redline.agents.reflector import FeedbackHistory, Reflector
from redline.agents.resampler import Resampler
from redline.agents.reviser import Reviser
from redline.critics.base import Critic
from redline.errors import ConfigError
from redline.llm import ChatModel
from redline.types import Budget
from redline.workflows._state import Select
from redline.workflows.config import RefineConfig

__all__ = ["BEST_OF_N", "CRITIC", "PRESETS", "REFLEXION", "RESAMPLE", "SELF_DEBUG",
           "SELF_REFINE", "SINGLE", "Preset", "best_of_n", "critic", "reflexion", "resample",
           "self_debug", "self_refine", "single"]

CriticsLike = Critic | Callable[..., Any] | Sequence[Critic | Callable[..., Any]]


def _critics(value: CriticsLike | None, what: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, Critic) or callable(value):
        return [value]
    if isinstance(value, str | bytes):
        raise ConfigError(f"{what} must be critics, not a string ({value!r}); build them, "
                          "e.g. with redline.plugins.build_critic")
    return list(value)


def _assemble(name: str, policy: Mapping[str, Any], *, fixed: Mapping[str, Any] = {},
              defaults: Mapping[str, Any] = {}, **components: Any) -> RefineConfig:
    """The preset's `RefineConfig`: its components, its `fixed` policy (a different value
    given is an error), its `defaults` (the caller's `policy` wins)."""
    for key, value in fixed.items():
        if key in policy and policy[key] != value:
            raise ConfigError(f"preset {name!r} sets {key}={value!r} itself (its method "
                              f"needs it); leave {key} out")
    clash = sorted(set(policy) & set(components))
    if clash:
        raise ConfigError(f"preset {name!r}: {clash[0]} is made by the preset; use its own "
                          "arguments instead")
    return RefineConfig(**components, **{**defaults, **policy, **fixed})


def self_refine(model: ChatModel, rubric: str | None = None, *, memory: int = 3,
                judge_model: ChatModel | None = None, reviser_model: ChatModel | None = None,
                **policy: Any) -> RefineConfig:
    """Self-Refine (Madaan et al. 2023): draft → the model's own feedback → refine.

    The same model (or `judge_model`) grades each answer against `rubric` with an
    `LLMJudge` and says what to change; the reviser rewrites the *last* answer reading the
    history of feedback (the last `memory` rounds, kept by a `FeedbackHistory`), so it
    does not undo an earlier fix. The run returns the best answer seen.

    Differs from the paper: the paper's feedback prompt is few-shot and task-specific and
    the loop stops when the feedback says so; here the feedback is a zero-shot rubric
    grade, and the loop stops when the grade reaches ``threshold`` (or the budget, or
    ``patience`` rounds without a gain). Huang et al. (2024) found intrinsic
    self-correction can hurt reasoning answers: prefer a preset with an external verdict
    (`critic`, `self_debug`, `reflexion` with tests) where one exists.

    Args:
        model: drafts (and judges and revises, unless given others).
        rubric: what a good answer is; None: redline's general rubric.
        memory: how many rounds of feedback the reviser reads.
        judge_model: the model that gives feedback (default `model`).
        reviser_model: the model that refines (default `model`).
        **policy: `RefineConfig` policy fields (``threshold``, ``budget``, ...).
    """
    from redline.critics.judge import LLMJudge

    return _assemble(
        "self-refine", policy, defaults={"revise_from": "last"},
        model=model, critics=[LLMJudge(judge_model, rubric=rubric)],
        reviser=Reviser(reviser_model or model, prompt="selfrefine_revise"),
        reflector=FeedbackHistory(memory=memory))


def reflexion(model: ChatModel, evaluator: CriticsLike | None = None, memory: int = 3, *,
              reflector_model: ChatModel | None = None, reviser_model: ChatModel | None = None,
              **policy: Any) -> RefineConfig:
    """Reflexion (Shinn et al. 2023): attempt → evaluate → verbal reflection → retry.

    After each attempt below the threshold, a `Reflector` writes a short reflection on
    what went wrong (reading the attempt and the evaluator's verdict and feedback); the
    last `memory` reflections are kept in the run's state (checkpointed, so a resumed
    run keeps them, and returned in ``result.memory``) and the next attempt is a *fresh*
    answer to the task guided by them, not an edit of the last one. When a fresh attempt
    repeats an earlier one word for word, it is sampled again at a higher temperature.

    Differs from the paper: one episode is one refine run (the paper's trials), memory is
    the reflections only (not the whole trajectory), and the best attempt is returned,
    not the last.

    Args:
        model: makes the attempts (and reflects, unless `reflector_model` is given).
        evaluator: the critic(s) whose verdict says an attempt failed: tests
            (`PythonTestsCritic`, `DoctestCritic`, `GeneratedTestsCritic`), a checker, a
            judge. Required (None raises `ConfigError`).
        memory: how many reflections the next attempt reads (the paper used 1 to 3).
        reflector_model: the model that writes reflections.
        reviser_model: the model that makes the retries (default `model`).
        **policy: `RefineConfig` policy fields.
    """
    critics = _critics(evaluator, "reflexion's evaluator")
    if not critics:
        raise ConfigError("preset 'reflexion' needs an evaluator: a critic with a verdict "
                          "(tests, a checker, a judge)")
    return _assemble(
        "reflexion", policy, fixed={"revise": "rewrite"},
        defaults={"revise_from": "last", "patience": 3},
        model=model, critics=critics,
        reflector=Reflector(reflector_model or model, memory=memory),
        reviser=Reviser(reviser_model or model, prompt="reflexion_attempt", temperature=0.7,
                        on_repeat="resample"))


def critic(model: ChatModel, tools: CriticsLike | None = None, *,
           critic_model: ChatModel | None = None, reviser_model: ChatModel | None = None,
           **policy: Any) -> RefineConfig:
    """CRITIC (Gou et al. 2024): verify the answer with tools, then correct it.

    Each tool is a critic that checks the answer against something outside the model:
    the Python interpreter (`InterpreterCritic`: the model writes a program that computes
    the answer from the question, the sandbox runs it, a disagreement becomes feedback
    with the program and its output) and the search fact-check (`FactCheckCritic`). The
    answer is revised only when a tool flags a problem (``revise_when="on_failure"``); an
    answer every tool agrees with is returned as it is.

    Differs from the paper: the paper interleaves tool calls in one few-shot prompt;
    here each tool is a critic and the correction reads their feedback.

    Args:
        model: drafts and corrects.
        tools: the verifying critics; None: the interpreter.
        critic_model: the model the tools ask (writes the program, extracts claims);
            default `model`.
        reviser_model: the model that corrects (default `model`).
        **policy: `RefineConfig` policy fields.
    """
    checks = _critics(tools, "critic's tools")
    if not checks:
        from redline.critics.interpreter import InterpreterCritic

        checks = [InterpreterCritic(critic_model)]
    return _assemble(
        "critic", policy, fixed={"revise_when": "on_failure"},
        model=model, critics=checks, reviser=Reviser(reviser_model or model))


def self_debug(model: ChatModel, tests: str | CriticsLike | None = None,
               explain: bool = True, *, reviser_model: ChatModel | None = None,
               **policy: Any) -> RefineConfig:
    """Self-Debug (Chen et al. 2024): run the code, explain it, fix it.

    The code is run against tests in the sandbox; on a failure the model first explains
    the code line by line and traces the failing test (the explanation is recorded as
    the revision's `Candidate.explanation`), then writes the fix (`DebugReviser`). A
    draft that passes is never revised (``revise_when="on_failure"``); a fix that
    returns the code unchanged (or changes only its docstrings, comments or layout) is
    sampled again at a higher temperature; the best candidate is returned, so a fix
    never makes the result worse than the draft.

    Differs from the paper: the paper's prompts are few-shot; the tests, when not given,
    are the task's own (``metadata["tests"]``, the ``>>>`` examples of its prompt or of
    the given draft), else tests the model writes from the task alone
    (`GeneratedTestsCritic`), because many tasks carry no example.

    Args:
        model: drafts (and explains and fixes, unless `reviser_model` is given).
        tests: a tests module's source (asserts, ``test_*`` functions, or HumanEval's
            ``check``), test critics, or None: the task's own tests, else generated
            ones (`TaskTestsCritic`).
        explain: explain before fixing (the paper's "explanation" feedback); False is its
            "simple feedback" variant (the failing tests only).
        reviser_model: the model that explains and fixes.
        **policy: `RefineConfig` policy fields.
    """
    from redline.critics.code_tests import PythonTestsCritic
    from redline.critics.task_tests import TaskTestsCritic

    if isinstance(tests, str):
        checks: list[Any] = [PythonTestsCritic(tests)]
    else:
        checks = _critics(tests, "self_debug's tests") or [TaskTestsCritic()]
    return _assemble(
        "self-debug", policy, fixed={"revise_when": "on_failure", "revise": "rewrite"},
        defaults={"revise_from": "last", "patience": 3},
        model=model, critics=checks,
        reviser=DebugReviser(reviser_model or model, explain=explain, on_repeat="resample"))


def best_of_n(model: ChatModel, critic: CriticsLike | None = None, n: int = 4, *,
              select: Select = "score", greedy_first: bool = True,
              **policy: Any) -> RefineConfig:
    """Best-of-N: sample `n` drafts, score them, return the best (no revision).

    The first draft is greedy and the other ``n - 1`` are samples (``greedy_first``), and
    ties go to the earliest draft: when the greedy answer (what single-shot returns)
    scores as well as any sample, it is the one returned, so sampling only replaces it
    with an answer the critic ranks higher. (On HumanEval with a 0.5B coder, four
    samples and no greedy draft lost a problem single-shot solved: a sample that passed
    the visible examples as well as the greedy answer did, but not the hidden tests.)

    The compute baseline every other method must beat at a matched budget. With
    ``select="vote"`` it is self-consistency (Wang et al. 2023): the drafts' final answers
    vote, ties broken by score, for tasks with a short final answer (a number, a name).
    The run ends with stop reason ``sampled`` (or ``threshold``), never a budget failure.

    Args:
        model: makes the drafts (the samples at ``temperature`` 0.7 unless given).
        critic: the critic(s) that score the drafts (a reward model, tests, a judge);
            None: an `LLMJudge`.
        n: how many drafts (at least 2 to choose among).
        select: ``"score"`` or ``"vote"``.
        greedy_first: the first draft greedy (temperature 0); False: all `n` sampled,
            the classic best-of-N. (A ``generator`` given in `policy` is used as is.)
        **policy: `RefineConfig` policy fields; revision fields do not apply.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"preset 'best-of-n': n must be a whole number >= 1, got {n!r}")
    if not isinstance(greedy_first, bool):
        raise ConfigError(f"preset 'best-of-n': greedy_first must be true or false, got "
                          f"{greedy_first!r}")
    budget = _no_revision("best-of-n", policy, set())
    config = _assemble("best-of-n", policy, fixed={"n": n, "select": select},
                       model=model, critics=_critics(critic, "best_of_n's critic") or None,
                       budget=budget)
    if not greedy_first or config.generator is not None:  # a generator given is used as is
        return config
    return config.replace(generator=Generator(
        config.model, temperature=config.draft_temperature, seed=config.seed,
        greedy_first=True))


def resample(model: ChatModel, critic: CriticsLike | None = None, n: int = 8, *,
             sample_temperature: float = 0.7, reviser_model: ChatModel | None = None,
             **policy: Any) -> RefineConfig:
    """Sample until it passes: a greedy draft; while the critic flags a failure, a new
    sample of the task (the failure unseen), up to `n` drafts in all; the best returned.

    Rejection sampling, drawn one at a time. At equal compute, new samples fix more code
    than a small model's repairs of its own (Olausson et al. 2024), and AlphaCode kept
    the samples that pass the task's examples; best-of-N draws all `n` up front. Here
    an answer the critic passes ends the run (``verified``, or ``threshold``) after one
    draft, so tokens go to the tasks that fail; and since the greedy draft (single-shot's
    answer) is replaced only when it fails the critic, a good critic makes flips rare.
    The critic must be able to fail an answer: tests (given, the task's examples,
    generated) or a judge with a verdict; a reward model's score alone never fails one.

    A sample that repeats an earlier candidate spends its round without ending the run
    (samples are independent draws; the next round draws with the next seed), so a run
    that fails stops only at `n` drafts or another budget.

    Args:
        model: drafts (greedy unless ``temperature`` is given) and samples.
        critic: the critic(s) whose failure asks for a new sample; None: an `LLMJudge`.
        n: the most drafts in all: the greedy one and up to ``n - 1`` samples (the
            budget's ``max_rounds`` is ``n - 1``).
        sample_temperature: the samples' temperature (above 0).
        reviser_model: the model that samples after the first draft (a cascade); None:
            `model`.
        **policy: `RefineConfig` policy fields; ``revise``, ``revise_when``,
            ``revise_from`` and ``max_rounds`` are the method's own.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"preset 'resample': n must be a whole number >= 1, got {n!r}")
    if isinstance(sample_temperature, bool) or \
            not isinstance(sample_temperature, int | float) or not 0 < sample_temperature <= 2:
        raise ConfigError("preset 'resample': sample_temperature must be a number in (0, 2], "
                          f"got {sample_temperature!r}")
    for key in ("revise", "revise_from"):
        if key in policy:
            raise ConfigError(f"preset 'resample' sets {key} itself; leave it out")
    budget = policy.pop("budget", None) or Budget()
    if "max_rounds" in budget.model_fields_set and budget.max_rounds != n - 1:
        raise ConfigError(f"preset 'resample' draws at most n={n} drafts, so max_rounds is "
                          f"{n - 1}; set n instead of max_rounds={budget.max_rounds}")
    seed = policy.get("seed")
    return _assemble(
        "resample", policy, fixed={"revise_when": "on_failure"},
        defaults={"patience": n},  # samples are independent: no early "no gain" stop
        model=model, critics=_critics(critic, "resample's critic") or None,
        budget=budget.model_copy(update={"max_rounds": n - 1}),
        reviser=Resampler(reviser_model or model, temperature=float(sample_temperature),
                          seed=seed))


_REVISING = frozenset({"revise", "revise_when", "revise_from", "patience"})


def _no_revision(name: str, policy: dict[str, Any], also: set[str]) -> Budget:
    """The budget of a preset that never revises (`policy` loses its ``budget``).

    Raises:
        ConfigError: a revision field (or one of `also`) was given, or ``max_rounds``
            other than 0.
    """
    refused = sorted((_REVISING | also) & set(policy))
    if refused:
        raise ConfigError(f"preset {name!r} makes no revisions: {refused[0]} does not "
                          "apply; leave it out")
    budget = policy.pop("budget", None) or Budget()
    if "max_rounds" in budget.model_fields_set and budget.max_rounds != 0:
        raise ConfigError(f"preset {name!r} makes no revisions: max_rounds="
                          f"{budget.max_rounds} does not apply; leave it out")
    return budget.model_copy(update={"max_rounds": 0})


class _NoCritique(Critic):
    """No critique: every candidate scores 0 with no verdict (the baseline's "critic")."""

    name = "none"
    deterministic = True

    async def critique(self, task: Any, candidate: Any) -> Any:
        from redline.types import Critique

        return Critique(critic=self.name, score=0.0, passed=None,
                        evidence={"note": "no critique (single draft)"})


def single(model: ChatModel, **policy: Any) -> RefineConfig:
    """One draft, no critique, no revision: what the model does alone.

    The baseline `redline compare` measures every method against (with
    ``temperature`` 0 by default: greedy). Its candidate scores 0 with no verdict; the
    run stops ``sampled``.

    Args:
        model: drafts.
        **policy: `RefineConfig` policy fields (``temperature``, ``seed``, ``budget``,
            ...); revision fields and ``n`` do not apply.
    """
    budget = _no_revision("single", policy, {"n", "select"})
    return _assemble("single", policy, model=model, critics=[_NoCritique()], budget=budget)


@dataclass(frozen=True)
class Preset:
    """A preset as ``redline refine --preset NAME`` and the plugin registry see it.

    A package ships a preset by registering a `Preset` in the ``redline.presets``
    entry-point group::

        [project.entry-points."redline.presets"]
        my-method = "my_package:MY_METHOD"
    """

    name: str
    """The command-line name (``self-debug``)."""
    function: Callable[..., RefineConfig]
    """The preset function: the chat model first, keywords for the rest (a preset that
    revises takes ``reviser_model``: the model that revises, when another)."""
    summary: str
    """One line: what the method does."""
    paper: str
    """The method's citation."""
    needs: str
    """What a run needs (a critic with a verdict, tools, tests)."""
    critics_param: str | None = None
    """The function's argument that ``--critic`` fills; None: the preset makes its own
    critics, and ``--critic`` is an error."""
    options: frozenset[str] = field(default_factory=frozenset)
    """Other function arguments the command line may set (``memory``, ``explain``,
    ``rubric``)."""

    @property
    def takes_reviser_model(self) -> bool:
        """Whether the function takes a ``reviser_model`` (the presets that revise do;
        ``best-of-n`` and ``single`` do not)."""
        return "reviser_model" in inspect.signature(self.function).parameters

    def build(self, model: ChatModel, critics: Sequence[Critic] = (), *,
              options: Mapping[str, Any] | None = None,
              reviser_model: ChatModel | None = None, **policy: Any) -> RefineConfig:
        """The preset's `RefineConfig` from command-line pieces.

        Args:
            model: the chat model.
            critics: the ``--critic`` critics (empty: the preset's default).
            options: preset arguments (only those in `options` are accepted).
            reviser_model: the model that revises (a cascade); None: `model`.
            **policy: the policy fields the user set.

        Raises:
            ConfigError: critics for a preset that makes its own, an option it does not
                take, a reviser model for a preset that does not revise, or anything the
                preset function refuses.
        """
        options = {k: v for k, v in (options or {}).items() if v is not None}
        unknown = sorted(set(options) - self.options)
        if unknown:
            takes = ", ".join(sorted(self.options)) or "none"
            raise ConfigError(f"preset {self.name!r} takes no {unknown[0]!r} (its options: "
                              f"{takes})")
        arguments: dict[str, Any] = {**policy, **options}
        if critics:
            if self.critics_param is None:
                raise ConfigError(f"preset {self.name!r} makes its own critic ({self.needs}); "
                                  "leave out --critic")
            arguments[self.critics_param] = list(critics)
        if reviser_model is not None:
            if not self.takes_reviser_model:
                raise ConfigError(f"preset {self.name!r} does not revise, so a reviser model "
                                  "does not apply; leave out --reviser-model")
            arguments["reviser_model"] = reviser_model
        try:
            return self.function(model, **arguments)
        except TypeError as exc:  # a preset function called with what it does not take
            raise ConfigError(f"preset {self.name!r}: {exc}") from exc


SELF_REFINE = Preset(
    "self-refine", self_refine, "draft, the model's own feedback on a rubric, refine",
    "Madaan et al. 2023, Self-Refine", "a rubric (optional)",
    options=frozenset({"rubric", "memory"}))
REFLEXION = Preset(
    "reflexion", reflexion, "attempt, evaluate, reflect in words, retry with the reflections",
    "Shinn et al. 2023, Reflexion", "an evaluator with a verdict (--critic)",
    critics_param="evaluator", options=frozenset({"memory"}))
CRITIC = Preset(
    "critic", critic, "verify with tools (interpreter, search), correct on a failure",
    "Gou et al. 2024, CRITIC", "tools (--critic; default: interpreter)",
    critics_param="tools")
SELF_DEBUG = Preset(
    "self-debug", self_debug, "run the code's tests, explain the code, fix it",
    "Chen et al. 2024, Self-Debug",
    "code; tests (--critic; default: tests, the task's own else generated)",
    critics_param="tests", options=frozenset({"explain"}))
BEST_OF_N = Preset(
    "best-of-n", best_of_n, "n drafts (one greedy), return the best (or the majority answer)",
    "best-of-N sampling; Wang et al. 2023, self-consistency",
    "a critic to score drafts (--critic; default: judge)",
    critics_param="critic")

RESAMPLE = Preset(
    "resample", resample, "a greedy draft; on a failure, new samples (the failure unseen) "
    "until one passes", "rejection sampling; Olausson et al. 2024, Is Self-Repair a Silver "
    "Bullet for Code Generation?", "a critic with a verdict (--critic; default: judge)",
    critics_param="critic")
SINGLE = Preset(
    "single", single, "one draft, no critique, no revision (the baseline)",
    "the model alone", "nothing")

PRESETS: dict[str, Preset] = {p.name: p for p in (SELF_REFINE, REFLEXION, CRITIC,
                                                   SELF_DEBUG, BEST_OF_N, RESAMPLE, SINGLE)}
"""The built-in presets by command-line name."""
