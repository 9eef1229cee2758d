"""The runs a server (or the drop-in client) serves: each named, each built once.

`RunTable` holds one `redline.workflows.Runner` per named run, made when the table is
made (the loop built once, the preflight once for the table's life). A request's
``max_tokens`` caps its run's token budget: the capped runs are runners of their own,
compiled on first use and kept (a few per run), which skip the preflight their base
already passed. The server's ceilings (``token_ceiling``, ``seconds_ceiling``) cap every
run's budget whatever the request or the run's own configuration asks.

A configuration file (``redline serve --config FILE``) names its runs (`load_specs`),
TOML or JSON, each a `RunSpec`::

    [runs.self-debug]
    preset = "self-debug"
    critics = ["pytest"]
    budget = {max_rounds = 2}

    [runs.judge]
    critics = ["judge"]
    threshold = 0.8
    model = {name = "qwen2.5-7b-instruct", base_url = "http://vllm:8000/v1"}
"""

from __future__ import annotations

import os
import re
import tomllib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redline._files import parse_json, read_config_text
from redline.errors import ConfigError
from redline.types import Budget, RefineResult, Task

if TYPE_CHECKING:
    from redline.workflows import Progress, RefineConfig, Runner, RunSpec

__all__ = ["RUN_NAME", "RunTable", "Upstream", "default_run_name", "load_specs"]

RUN_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
"""What a run's name may be (it is the model name ``redline/<name>``)."""

_VARIANTS = 16  # capped runners kept per run


@dataclass(frozen=True)
class Upstream:
    """Where a run's model is served, for requests passed through untouched."""

    base_url: str
    """The API root (``http://127.0.0.1:8000/v1``)."""
    model: str
    """The model's name there."""
    api_key: str | None
    """Its key (never logged, never echoed)."""

    def __repr__(self) -> str:  # no key in tracebacks or logs
        return f"Upstream(base_url={self.base_url!r}, model={self.model!r})"


def default_run_name(spec: RunSpec) -> str:
    """The name of a run described by the command line: its preset's, else ``refine``."""
    return spec.preset.strip().lower().replace("_", "-") if spec.preset else "refine"


def load_specs(path: str | Path) -> dict[str, RunSpec]:
    """The named runs of a configuration file: ``{"runs": {NAME: RunSpec fields}}`` in
    TOML (``.toml``) or JSON (any other name).

    Raises:
        ConfigError: unreadable, not TOML/JSON, no runs, a bad name or a bad field
            (naming the run).
    """
    from redline.workflows import RunSpec

    text = read_config_text(path, "serve config")
    form = "TOML" if str(path).endswith(".toml") else "JSON"
    try:
        data: Any = tomllib.loads(text) if form == "TOML" \
            else parse_json(text, unique_keys=True)
    except RecursionError:  # tomllib recurses per level of nesting (parse_json says so)
        raise ConfigError(f"serve config {str(path)!r} is not {form} redline reads: it is "
                          "nested too deeply") from None
    except ValueError as exc:
        raise ConfigError(f"serve config {str(path)!r} is not valid {form}: {exc}") from None
    runs = data.get("runs") if isinstance(data, dict) else None
    extra = set(data) - {"runs"} if isinstance(data, dict) else set()
    if not isinstance(runs, dict) or not runs or extra:
        raise ConfigError(f"serve config {str(path)!r}: expected a 'runs' table of named runs "
                          "and nothing else, e.g. [runs.self-debug] preset = \"self-debug\"")
    specs = {}
    for name, fields in runs.items():
        if not RUN_NAME.match(name):
            raise ConfigError(f"serve config: run name {name!r}: use lowercase letters, digits, "
                              "'.', '_' and '-' (it becomes the model name redline/<name>)")
        if not isinstance(fields, dict):
            raise ConfigError(f"serve config: run {name!r} must be a table of RunSpec fields")
        try:
            specs[name] = RunSpec(**fields)
        except ConfigError as exc:
            raise ConfigError(f"serve config: run {name!r}: {exc}") from None
    return specs


class RunTable:
    """Named runs, each built once; `run` refines a task with one of them.

    Args:
        runs: run name → its configuration (names as `RUN_NAME` says).
        token_ceiling: the most tokens any one request may spend (None: no ceiling).
        seconds_ceiling: the most seconds any one request's loop may take.
        upstream_key: the key sent with passed-through requests (default
            ``$OPENAI_API_KEY``; never logged).

    Raises:
        ConfigError: no runs, a bad name.
    """

    def __init__(self, runs: Mapping[str, RefineConfig], *, token_ceiling: int | None = None,
                 seconds_ceiling: float | None = None, upstream_key: str | None = None) -> None:
        from redline.workflows import Runner

        if not runs:
            raise ConfigError("no run to serve")
        for name in runs:
            if not RUN_NAME.match(name):
                raise ConfigError(f"run name {name!r}: use lowercase letters, digits, '.', '_' "
                                  "and '-' (it becomes the model name redline/<name>)")
        self.token_ceiling = token_ceiling
        self.seconds_ceiling = seconds_ceiling
        self._key = upstream_key
        self._runners: dict[str, Runner] = {}
        self._variants: dict[str, OrderedDict[int, Runner]] = {}
        for name, config in runs.items():
            budget = _capped(config.budget, token_ceiling, seconds_ceiling)
            if budget != config.budget:
                config = config.replace(budget=budget)
            self._runners[name] = Runner(config)
            self._variants[name] = OrderedDict()

    @classmethod
    def from_specs(cls, specs: Mapping[str, RunSpec], *, api_key: str | None = None,
                   **limits: Any) -> RunTable:
        """A table of `RunSpec`s, each built once (`api_key`: the upstream's key)."""
        configs = {}
        for name, spec in specs.items():
            try:
                configs[name] = spec.build(api_key=api_key)
            except ConfigError as exc:
                raise ConfigError(f"run {name!r}: {exc}") from None
        return cls(configs, upstream_key=api_key, **limits)

    @property
    def names(self) -> list[str]:
        """The runs' names, in order."""
        return list(self._runners)

    def config(self, name: str) -> RefineConfig:
        """Run `name`'s configuration (its budget capped by the ceilings)."""
        return self._runners[name].config

    async def preflight(self) -> None:
        """Check every run's model and critics (once for the table's life).

        Raises:
            ConfigError: naming the run and what cannot work.
        """
        for name, runner in self._runners.items():
            try:
                await runner.preflight()
            except ConfigError as exc:
                raise ConfigError(f"run {name!r}: {exc}") from None

    def runner(self, name: str, max_tokens: int | None = None) -> Runner:
        """The runner for run `name`, its token budget capped at `max_tokens`."""
        base = self._runners[name]
        budget = _capped(base.config.budget, max_tokens, None)
        if budget == base.config.budget:
            return base
        assert budget.max_tokens is not None
        variants = self._variants[name]
        runner = variants.get(budget.max_tokens)
        if runner is None:
            from redline.workflows import Runner

            # The base runner's preflight covers it: the same model and critics.
            runner = Runner(base.config.replace(budget=budget, preflight=False))
            variants[budget.max_tokens] = runner
            if len(variants) > _VARIANTS:
                variants.popitem(last=False)
        else:
            variants.move_to_end(budget.max_tokens)
        return runner

    async def run(self, name: str, task: Task, *, max_tokens: int | None = None,
                  on_progress: Callable[[Progress], Any] | None = None) -> RefineResult:
        """Refine `task` with run `name` (its preflight first, once)."""
        await self._runners[name].preflight()
        return await self.runner(name, max_tokens).run(task, on_progress=on_progress)

    def upstream(self, name: str) -> Upstream | None:
        """Where run `name`'s model is served over the OpenAI API (None: it is not, e.g.
        the embedded model or an in-process one)."""
        from redline.llm import OpenAIChat

        model = self.config(name).model
        if not isinstance(model, OpenAIChat):
            return None
        key = self._key if self._key is not None else os.environ.get("OPENAI_API_KEY")
        return Upstream(base_url=model.base_url, model=model.model, api_key=key or None)

    async def aclose(self) -> None:
        """Close the runs' models (their HTTP clients, an embedded server)."""
        seen: set[int] = set()
        for runner in self._runners.values():
            model = runner.config.model
            if id(model) not in seen:
                seen.add(id(model))
                await model.aclose()


def _capped(budget: Budget, max_tokens: int | None, max_seconds: float | None) -> Budget:
    update: dict[str, Any] = {}
    if max_tokens is not None and (budget.max_tokens is None or max_tokens < budget.max_tokens):
        update["max_tokens"] = max_tokens
    if max_seconds is not None and (budget.max_seconds is None
                                    or max_seconds < budget.max_seconds):
        update["max_seconds"] = max_seconds
    return budget.model_copy(update=update) if update else budget
