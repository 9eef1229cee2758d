"""A run's configuration: `RefineConfig` (typed, frozen, what the graph closes over) and
`RunSpec` (serialisable: what the CLI, a batch worker or a report header writes down).

```
RunSpec (JSON, no secrets) ──build()──▶ RefineConfig (live objects) ──▶ build_refine_graph
```
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from redline.agents.generator import Generator
from redline.agents.reflector import ReflectorLike
from redline.agents.reviser import ReviseMode, Reviser
from redline.critics.base import Critic
from redline.critics.panel import Panel
from redline.errors import ConfigError
from redline.llm import ChatModel
from redline.types import Budget
from redline.workflows._state import Select

__all__ = ["ModelSettings", "OnError", "Policy", "RefineConfig", "ReviseWhen", "RunSpec"]

ReviseWhen = Literal["always", "on_failure"]
OnError = Literal["result", "raise"]


def _config_error(exc: ValidationError, what: str) -> ConfigError:
    """One line from pydantic's errors: the first field and what is wrong with it."""
    first = exc.errors()[0]
    raised = (first.get("ctx") or {}).get("error")
    if isinstance(raised, ConfigError):
        return raised
    where = ".".join(str(p) for p in first["loc"]) or what
    return ConfigError(f"{what}: {where}: {first['msg']}")


class Policy(BaseModel):
    """How a run behaves: the fields `RefineConfig` and `RunSpec` share (declared once)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    threshold: float = Field(default=0.9, ge=0.0, le=1.0)
    """Stop once the best score reaches it with every gate passed."""
    budget: Budget = Budget()
    """Limits on rounds, calls, tokens, cost and seconds."""
    n: int = Field(default=1, ge=1)
    """Drafts generated in parallel in the first round (best-of-n)."""
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    """The drafts' sampling temperature; None: 0.0 for one draft, 0.7 for several (so
    that best-of-n drafts differ)."""
    seed: int | None = None
    """The drafts' sampling seed (draft i uses ``seed + i``)."""
    revise: ReviseMode = "rewrite"
    """``"rewrite"`` the whole answer or ``"edit"`` it with search/replace blocks."""
    revise_when: ReviseWhen = "always"
    """``"on_failure"``: revise only when a critic flags a failure."""
    revise_from: Literal["best", "last"] = "best"
    """Revise the best candidate so far, or the last one."""
    patience: int = Field(default=2, ge=1)
    """Stop as converged after this many rounds without a gain."""
    on_error: OnError = "result"
    """``"result"``: a broken critic or model ends the run with the best so far;
    ``"raise"``: the error propagates."""
    preflight: bool = True
    """Check the model and every critic before any token is spent."""
    select: Select = "score"
    """How the returned candidate is chosen: the best ``"score"``, or ``"vote"``: a
    majority over the candidates' final answers, ties broken by score
    (self-consistency; for tasks with a short final answer)."""


class RefineConfig(Policy):
    """Everything the refine loop needs, validated once: policy and components.

    Build it with keywords (``RefineConfig(model=m, critics=[...], threshold=0.8)``) or
    from a `RunSpec`. Invalid values raise `ConfigError` with one line naming the field.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="forbid",
                              use_attribute_docstrings=True)

    model: ChatModel
    """The chat model that drafts and revises (and judges, for judges without one)."""
    critics: Panel
    """The critics, as a `Panel` (a list of critics or ``@critic`` functions is wrapped;
    None or empty: an `LLMJudge`)."""
    generator: Generator | None = None
    """The drafting agent; None: a `Generator` on `model` with `draft_temperature`."""
    reviser: Reviser | None = None
    """The revising agent; None: a `Reviser` on `model` in mode `revise`."""
    reflector: ReflectorLike | None = None
    """Writes a memory entry on each attempt that did not reach the threshold (a
    `redline.agents.Reflector` for Reflexion, `FeedbackHistory` for Self-Refine); the
    loop keeps the last ``reflector.memory`` entries and the reviser reads them. With
    one, the graph gains a ``reflect`` node between decide and revise."""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _config_error(exc, "RefineConfig") from None

    @model_validator(mode="before")
    @classmethod
    def _components(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        model = data.get("model")
        if model is not None and not isinstance(model, ChatModel):
            raise ConfigError(f"model must be a redline ChatModel, got {type(model).__name__}"
                              " (arefine and RunSpec resolve model strings)")
        critics = data.get("critics")
        if not isinstance(critics, Panel):
            from redline.critics.judge import LLMJudge

            data["critics"] = Panel(list(critics) if critics else [LLMJudge()])
        if data.get("budget") is None:
            data.pop("budget", None)
        return data

    @property
    def panel(self) -> Panel:
        """The critics' panel (the same as `critics`)."""
        return self.critics

    @property
    def draft_temperature(self) -> float:
        """The temperature drafts are sampled at (see `temperature`)."""
        if self.temperature is not None:
            return self.temperature
        return 0.7 if self.n > 1 else 0.0

    @property
    def drafter(self) -> Generator:
        """The generator the loop uses: `generator`, or the default one."""
        return self.generator or Generator(self.model, temperature=self.draft_temperature,
                                           seed=self.seed)

    @property
    def fixer(self) -> Reviser:
        """The reviser the loop uses: `reviser`, or the default one."""
        return self.reviser or Reviser(self.model, mode=self.revise)

    @property
    def recursion_limit(self) -> int:
        """LangGraph's step limit, derived from the budget (which is the real limit)."""
        return 4 * (self.budget.max_rounds + 1) + 10

    @property
    def seconds_margin(self) -> float:
        """Seconds kept back from ``max_seconds`` to stop and finish inside the limit."""
        limit = self.budget.max_seconds
        return 0.0 if limit is None else min(0.25, 0.1 * limit)

    def replace(self, **fields: Any) -> RefineConfig:
        """A copy with some fields changed, validated like a new one."""
        current = {name: getattr(self, name) for name in type(self).model_fields}
        return RefineConfig(**{**current, **fields})


CriticsArg = Sequence[Critic | Callable[..., Any]] | Panel | None


class ModelSettings(BaseModel):
    """Which chat model a `RunSpec` uses: no secrets (keys come from the environment,
    or are given to `RunSpec.build`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    name: str | None = None
    """A model name or spec (``gpt-4o-mini``, ``openai:gpt-4o-mini``, ``ollama:qwen2.5``,
    ``local``); None: ``REDLINE_MODEL``, else the server's or the embedded default."""
    base_url: str | None = None
    """An OpenAI-compatible server; None: ``OPENAI_BASE_URL`` where the provider reads it."""
    model_path: str | None = None
    """A GGUF file for the embedded model."""
    price_in: float | None = Field(default=None, ge=0)
    """Dollars per million prompt tokens (with `price_out`: the model's `Price`)."""
    price_out: float | None = Field(default=None, ge=0)
    """Dollars per million completion tokens."""
    timeout: float | None = Field(default=None, gt=0)
    """Seconds one attempt of an LLM call may take, waiting in the server's queue
    included (a timed-out attempt is retried); None: the client's default (120 s, the
    embedded model 300 s)."""

    def resolve(self, *, api_key: str | None = None) -> ChatModel:
        """The chat model these settings select (`redline.llm.resolve_model`, then the
        price and the timeout); `api_key` is never stored.

        Raises:
            ConfigError: a model that cannot be made, a timeout for a model that takes
                none.
        """
        from redline.llm import Price, resolve_model

        chat = resolve_model(self.name, base_url=self.base_url, api_key=api_key,
                             model_path=self.model_path)
        if self.price_in is not None or self.price_out is not None:
            chat.price = Price(input_per_mtok=self.price_in or 0.0,
                               output_per_mtok=self.price_out or 0.0)
        if self.timeout is not None:
            if not hasattr(chat, "timeout"):
                raise ConfigError(f"an LLM call timeout applies to models reached over "
                                  f"HTTP, not to {type(chat).__name__}")
            chat.timeout = self.timeout
        return chat

    @model_serializer(mode="wrap")
    def _set_timeout_only(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Written only when set, so outputs written before the field existed still
        # match their settings on --resume.
        data = handler(self)
        if isinstance(data, dict) and data.get("timeout") is None:
            data.pop("timeout", None)
        return data


class RunSpec(Policy):
    """A serialisable description of a run: model settings, critic specs as the command
    line writes them, policy and preset. It round-trips through JSON, never holds a
    secret, and `build` turns it into a `RefineConfig`.

    ``redline refine`` is parse → `RunSpec` → `RefineConfig` → run; batch workers and
    report headers use the same description.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    model: ModelSettings = ModelSettings()
    """The chat model."""
    critics: list[str] = Field(default_factory=lambda: ["judge"])
    """Critic specs, ``NAME[:ARG]`` as for ``--critic`` (see `redline.plugins`); with a
    preset and none given, the preset's own."""
    critic_settings: dict[str, Any] = Field(default_factory=dict)
    """Command-line settings passed to critic factories that declare them
    (``rm_device``, ``rm_batch_size``)."""
    system: str | None = None
    """A system prompt for the tasks of the run (a task's own wins)."""
    preset: str | None = None
    """The preset the run is configured by (a ``redline.presets`` name such as
    ``self-debug``; None: plain refine). With a preset, `critics` fill its critic
    argument, and only the policy fields set explicitly override the preset's."""
    preset_options: dict[str, Any] = Field(default_factory=dict)
    """The preset's own arguments (``memory``, ``explain``, ``rubric``)."""
    reviser_model: ModelSettings | None = None
    """A second model that revises (a cascade: `model` drafts, this one fixes); None:
    `model` revises. Its unset `base_url` and `timeout` are `model`'s; presets that do not
    revise (``best-of-n``, ``single``) refuse it. Written only when set."""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _config_error(exc, "RunSpec") from None

    @model_serializer(mode="wrap")
    def _given_fields_only(self, handler: SerializerFunctionWrapHandler,
                           info: SerializationInfo) -> Any:
        data = handler(self)
        if not isinstance(data, dict):
            return data
        if self.reviser_model is None:
            # Written only when set, so outputs written before the field existed still
            # match their settings on --resume.
            data.pop("reviser_model", None)
        if self.preset is None:
            return data
        # With a preset, a policy field left unset means "the preset's value": keep it
        # unset in the JSON, so the spec read back builds the same run.
        for name in (*Policy.model_fields, "critics"):
            if name not in self.model_fields_set:
                data.pop(name, None)
        if "budget" in data:
            data["budget"] = self.budget.model_dump(mode=info.mode, exclude_unset=True)
        return data

    def chat_model(self, *, api_key: str | None = None) -> ChatModel:
        """The chat model these settings select (`api_key` is never stored)."""
        return self.model.resolve(api_key=api_key)

    def reviser_chat_model(self, *, api_key: str | None = None) -> ChatModel | None:
        """The chat model `reviser_model` selects (None without one): its `base_url` and
        `timeout`, when unset, are the main model's; `api_key` is used only when the
        reviser is served at the main model's base URL (elsewhere its key comes from the
        environment, as for any model)."""
        reviser = self.reviser_model
        if reviser is None:
            return None
        inherited = {name: getattr(self.model, name) for name in ("base_url", "timeout")
                     if getattr(reviser, name) is None}
        reviser = reviser.model_copy(update=inherited)
        server, own = ((s.base_url or "").rstrip("/") for s in (self.model, reviser))
        return reviser.resolve(api_key=api_key if own == server else None)

    def build(self, *, api_key: str | None = None, model: ChatModel | None = None
              ) -> RefineConfig:
        """The `RefineConfig` this spec describes: the model resolved (`model` when
        given), the reviser's model too (see `reviser_chat_model`), each critic built
        through the plugin registry.

        Raises:
            ConfigError: an unknown critic, a bad argument, a model that cannot be made,
                a reviser model with a preset that does not revise, a cost budget with a
                model (or reviser model) that has no price.
        """
        from redline.plugins import build_critic, load_preset

        settings = {k: v for k, v in self.critic_settings.items() if v is not None}
        if self.preset is None:
            critics = [build_critic(spec, settings) for spec in self.critics or ["judge"]]
            policy = {name: getattr(self, name) for name in Policy.model_fields}
            chat = model or self.chat_model(api_key=api_key)
            reviser = self.reviser_chat_model(api_key=api_key)
            fixer = None if reviser is None else Reviser(reviser, mode=self.revise)
            return self._priced(RefineConfig(model=chat, critics=critics, reviser=fixer,
                                             **policy))
        preset = load_preset(self.preset)
        given = self.model_fields_set
        critics = [build_critic(spec, settings) for spec in self.critics] \
            if "critics" in given else []
        policy = {name: getattr(self, name) for name in Policy.model_fields if name in given}
        return self._priced(preset.build(
            model or self.chat_model(api_key=api_key), critics, options=self.preset_options,
            reviser_model=self.reviser_chat_model(api_key=api_key), **policy))

    def _priced(self, config: RefineConfig) -> RefineConfig:
        """`config`, once every model a cost budget would count has a price (a model
        without one counts as free: the budget would never stop it)."""
        if self.budget.max_cost_usd is None:
            return config
        if config.model.price is None:
            raise ConfigError("--max-cost needs the model's price: add --price IN:OUT "
                              "(dollars per million input:output tokens)")
        if config.fixer.model.price is None:
            raise ConfigError("--max-cost needs the reviser's price too: add "
                              "--reviser-price IN:OUT (dollars per million input:output "
                              "tokens of --reviser-model)")
        return config
