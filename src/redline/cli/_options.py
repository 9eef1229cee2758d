"""The options every command that runs the loop takes (``refine``, ``batch``): declared
once (`run_options`), checked once (server URLs, prices, key files, budgets) and turned
into one `RunSpec` (`spec_from_options`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import click

from redline._files import read_config_text
from redline.errors import ConfigError
from redline.types import Budget

if TYPE_CHECKING:
    from redline.workflows import RunSpec

__all__ = ["api_key_from", "check_base_url", "explicit_options", "parse_price", "read_key_file",
           "reviser_settings", "run_options", "spec_fields", "spec_from_options"]

F = TypeVar("F", bound=Callable[..., Any])


def check_base_url(url: str) -> str:
    """`url` when it is an http(s) URL with a host and a valid port.

    Raises:
        ConfigError: one line saying what is wrong, with an example.
    """
    example = "expected something like 'http://127.0.0.1:8000/v1'"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for 'abc' or 99999
    except ValueError as exc:
        raise ConfigError(f"base URL {url!r} is malformed ({exc}); {example}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"base URL {url!r} is not an http(s) URL with a host; {example}")
    if port == 0:
        raise ConfigError(f"base URL {url!r} has port 0; {example}")
    return url


def read_key_file(path: str) -> str:
    """The API key in `path` (its first line, stripped).

    Raises:
        ConfigError: the file is unreadable, empty, or holds more than one line.
    """
    lines = [line.strip() for line in read_config_text(path, "API key file").splitlines()
             if line.strip()]
    if len(lines) != 1:
        raise ConfigError(f"API key file {path!r} must hold the key on one line")
    return lines[0]


def parse_price(text: str, *, flag: str = "--price") -> tuple[float, float]:
    """``IN:OUT`` dollars per million input and output tokens (`flag` names the option
    in the error).

    Raises:
        ConfigError: not two finite numbers >= 0.
    """
    try:
        values = [float(p) for p in text.split(":")]
    except ValueError:
        values = []
    if len(values) != 2 or not all(math.isfinite(v) and v >= 0 for v in values):
        raise ConfigError(f"{flag} {text!r}: expected IN:OUT, dollars per million input "
                          "and output tokens, e.g. 0.15:0.60")
    return values[0], values[1]


def reviser_settings(opts: dict[str, Any]) -> dict[str, Any] | None:
    """The reviser's `ModelSettings` fields from --reviser-model and --reviser-base-url
    (None without them).

    Raises:
        ConfigError: --reviser-base-url without --reviser-model, or a bad URL.
    """
    name, base_url, price = (opts["reviser_model"], opts["reviser_base_url"],
                             opts["reviser_price"])
    if name is None:
        for flag, value in (("--reviser-base-url", base_url), ("--reviser-price", price)):
            if value is not None:
                raise ConfigError(f"{flag} needs --reviser-model: name the model that "
                                  "revises")
        return None
    settings: dict[str, Any] = {
        "name": name, "base_url": None if base_url is None else check_base_url(base_url)}
    if price is not None:
        settings["price_in"], settings["price_out"] = parse_price(price, flag="--reviser-price")
    return settings


def spec_fields(opts: dict[str, Any], budget: Budget) -> dict[str, Any]:
    """The `RunSpec` fields the ``refine`` options describe (no secret among them)."""
    price_in, price_out = parse_price(opts["price"]) if opts["price"] else (None, None)
    if opts["base_url"]:
        check_base_url(opts["base_url"])
    return {
        "model": {"name": opts["model"], "base_url": opts["base_url"],
                  "model_path": opts["model_path"], "price_in": price_in,
                  "price_out": price_out, "timeout": opts["llm_timeout"]},
        "reviser_model": reviser_settings(opts),
        "critics": list(opts["critic_specs"]) or ["judge"],
        "critic_settings": {"rm_device": opts["rm_device"],
                            "rm_batch_size": opts["rm_batch_size"]},
        "threshold": opts["threshold"],
        "budget": budget,
        "n": opts["drafts"],
        "temperature": opts["temperature"],
        "seed": opts["seed"],
        "revise": opts["revise"],
        "revise_when": opts["revise_when"],
        "revise_from": opts["revise_from"],
        "patience": opts["patience"],
        "select": opts["select"],
        "system": opts["system"],
    }


# The options of a run, in the order `--help` shows them.
_RUN_OPTIONS = [
    click.option("-c", "--critic", "critic_specs", multiple=True, metavar="NAME[:ARG]",
                 help="A critic, repeatable: judge, judge:RUBRIC_FILE, or any plugin's name "
                      "(see `redline critics list`). Default: judge."),
    click.option("-t", "--threshold", type=float, default=0.9, show_default=True,
                 help="Stop once the best score reaches this (0 to 1)."),
    click.option("--max-rounds", type=int, default=3, show_default=True,
                 help="Revisions after the first draft."),
    click.option("--max-tokens", type=int, help="Token budget of the whole run, critics included."),
    click.option("--max-seconds", type=float, help="Time budget of the whole run."),
    click.option("--max-calls", type=int, help="LLM call budget of the whole run."),
    click.option("--max-cost", type=float, metavar="USD",
                 help="Money budget of the whole run (needs --price)."),
    click.option("--price", metavar="IN:OUT",
                 help="The model's price in dollars per million input:output tokens, "
                      "e.g. 0.15:0.60."),
    click.option("-n", "--drafts", type=int, default=1, show_default=True,
                 help="Drafts generated in parallel in the first round (best-of-n); with "
                      "--preset resample, the most drafts drawn in all."),
    click.option("--revise", type=click.Choice(["rewrite", "edit"]), default="rewrite",
                 show_default=True, help="Rewrite the answer, or edit it with search/replace."),
    click.option("--revise-when", type=click.Choice(["always", "on_failure"]), default="always",
                 show_default=True, help="on_failure: revise only when a critic flags a failure."),
    click.option("--revise-from", type=click.Choice(["best", "last"]), default="best",
                 show_default=True, help="Revise the best candidate so far, or the last one."),
    click.option("--patience", type=int, default=2, show_default=True,
                 help="Stop as converged after this many rounds without a gain."),
    click.option("--preset", metavar="NAME",
                 help="A research method's configuration: self-refine, reflexion, critic, "
                      "self-debug, best-of-n, resample, single (see `redline presets "
                      "list`). -c fills its critic; flags you give override its settings."),
    click.option("--select", type=click.Choice(["score", "vote"]), default="score",
                 show_default=True,
                 help="Return the best-scored answer, or the majority final answer (vote)."),
    click.option("--memory", type=int, metavar="K",
                 help="Reflections (reflexion) or rounds of feedback (self-refine) kept."),
    click.option("--no-explain", is_flag=True,
                 help="self-debug: fix from the failing tests alone, without explaining first."),
    click.option("--rubric", "rubric_file", metavar="FILE",
                 help="self-refine: the rubric the model judges its answers by."),
    click.option("--system", metavar="TEXT", help="A system prompt for drafting and revising."),
    click.option("--temperature", type=float,
                 help="Sampling temperature of drafts (default 0, or 0.7 with -n > 1)."),
    click.option("--seed", type=int, help="Sampling seed of drafts (draft i uses SEED + i)."),
    click.option("--model", envvar="REDLINE_MODEL", metavar="NAME",
                 help="Model name on the server, or provider:name (openai:gpt-4o-mini, "
                      "ollama:qwen2.5, local).  [env: REDLINE_MODEL]"),
    # No envvar= on --base-url / --api-key: resolve_model reads OPENAI_BASE_URL and
    # OPENAI_API_KEY itself, and only for providers that use them (never for ollama:).
    click.option("--base-url", metavar="URL",
                 help="An OpenAI-compatible server (vLLM, Ollama, llama.cpp).  "
                      "[env: OPENAI_BASE_URL]"),
    click.option("--reviser-model", metavar="NAME",
                 help="A second model that revises (a cascade: --model drafts, this one "
                      "fixes), on --base-url's server unless --reviser-base-url. Presets "
                      "that do not revise (best-of-n, single) refuse it; compare and serve "
                      "--config give it to the methods that revise."),
    click.option("--reviser-base-url", metavar="URL",
                 help="The reviser's OpenAI-compatible server (with --reviser-model). "
                      "The key of --base-url's server (--api-key-file) goes to it only "
                      "when it is that server; otherwise its key is $OPENAI_API_KEY, if set."),
    click.option("--reviser-price", metavar="IN:OUT",
                 help="The reviser model's price, like --price (needed with --max-cost and "
                      "--reviser-model)."),
    click.option("--api-key", metavar="KEY",
                 help="API key; prefer the environment or --api-key-file (a command line is "
                      "visible to every process on the host).  [env: OPENAI_API_KEY]"),
    click.option("--api-key-file", metavar="FILE", help="Read the API key from this file."),
    click.option("--llm-timeout", type=float, metavar="SECONDS",
                 help="Seconds one LLM call may take, queueing at the server included "
                      "(default 120; the embedded model 300). Raise it for a slow local "
                      "server that many loops share."),
    click.option("--model-path", envvar="REDLINE_MODEL_PATH", metavar="GGUF",
                 help="A GGUF file for the embedded llama.cpp model.  [env: REDLINE_MODEL_PATH]"),
    click.option("--rm-device", metavar="DEVICE",
                 help="Device of reward-model critics (rm:): auto, cpu, cuda, cuda:1."),
    click.option("--rm-batch-size", type=int, metavar="N",
                 help="Largest forward pass of reward-model critics."),
]


def run_options(command: F) -> F:
    """Add the options of a run (critics, preset, budgets, model, ...) to a command."""
    for option in reversed(_RUN_OPTIONS):
        command = option(command)
    return command


def spec_from_options(opts: dict[str, Any], explicit: set[str] | None = None, *,
                      only_given: bool = False) -> RunSpec:
    """The `RunSpec` the run options describe.

    Args:
        opts: the command's parameters.
        explicit: the options the user gave; None: asked from the current click context.
        only_given: hold only the policy the user gave, as with a preset (for a command
            that applies the spec to presets itself: ``redline compare``).

    Raises:
        ConfigError: an option out of range, or a preset's option without --preset.
    """
    from redline.workflows import RunSpec

    explicit = explicit_options(opts) if explicit is None else explicit
    fields = spec_fields(opts, _budget(opts, explicit, only_given=only_given))
    if opts["preset"] is not None or only_given:
        fields = _preset_fields(opts, fields, explicit)
    else:
        for flag, key in (("--memory", "memory"), ("--no-explain", "no_explain"),
                          ("--rubric", "rubric_file")):
            if key in explicit:
                raise ConfigError(f"{flag} applies to a preset; add --preset NAME (see "
                                  "`redline presets list`)")
    return RunSpec(**fields)


def api_key_from(opts: dict[str, Any]) -> str | None:
    """The API key from --api-key-file or --api-key (which warns: it is visible)."""
    if opts["api_key_file"] is not None:
        return read_key_file(opts["api_key_file"])
    if opts["api_key"] and not opts["quiet"]:
        click.echo("redline: warning: --api-key on the command line is visible to every "
                   "process on this host; set OPENAI_API_KEY or use --api-key-file", err=True)
    return opts["api_key"]


# The RunSpec policy fields and the options that set them.
_POLICY_OPTIONS = {"threshold": "threshold", "n": "drafts", "temperature": "temperature",
                   "seed": "seed", "revise": "revise", "revise_when": "revise_when",
                   "revise_from": "revise_from", "patience": "patience", "select": "select"}
_BUDGET_OPTIONS = {"max_rounds": "max_rounds", "max_tokens": "max_tokens",
                   "max_seconds": "max_seconds", "max_llm_calls": "max_calls",
                   "max_cost_usd": "max_cost"}


def explicit_options(opts: dict[str, Any]) -> set[str]:
    """The options the user gave (not their defaults)."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    return {name for name in opts
            if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)}


def _preset_fields(opts: dict[str, Any], fields: dict[str, Any],
                   explicit: set[str]) -> dict[str, Any]:
    """With --preset, the spec holds only what the user set: the preset decides the rest."""
    from redline._files import read_config_text

    fields = {k: v for k, v in fields.items()
              if k not in _POLICY_OPTIONS or _POLICY_OPTIONS[k] in explicit}
    if not any(opt in explicit for opt in _BUDGET_OPTIONS.values()):
        fields.pop("budget")
    if "critic_specs" not in explicit:
        fields.pop("critics")
    options: dict[str, Any] = {}
    if opts["memory"] is not None:
        options["memory"] = opts["memory"]
    if opts["no_explain"]:
        options["explain"] = False
    if opts["rubric_file"] is not None:
        options["rubric"] = read_config_text(opts["rubric_file"], "rubric file")
    return {**fields, "preset": opts["preset"], "preset_options": options}


def _budget(opts: dict[str, Any], explicit: set[str], *, only_given: bool = False
            ) -> Budget:
    for flag, key in (("--threshold", "threshold"), ("--max-seconds", "max_seconds"),
                      ("--max-cost", "max_cost"), ("--temperature", "temperature"),
                      ("--llm-timeout", "llm_timeout")):
        value = opts[key]
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"{flag} must be a finite number, got {value}")
    threshold = opts["threshold"]
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold {threshold:g} is outside [0, 1]")
    checks = [("--max-rounds", opts["max_rounds"], 0), ("--max-tokens", opts["max_tokens"], 1),
              ("--max-calls", opts["max_calls"], 1), ("--drafts", opts["drafts"], 1),
              ("--patience", opts["patience"], 1)]
    for flag, value, low in checks:
        if value is not None and value < low:
            raise ConfigError(f"{flag} must be at least {low}, got {value}")
    for flag, key in (("--max-seconds", "max_seconds"), ("--max-cost", "max_cost"),
                      ("--llm-timeout", "llm_timeout")):
        if opts[key] is not None and opts[key] <= 0:
            raise ConfigError(f"{flag} must be positive, got {opts[key]:g}")
    if opts["temperature"] is not None and not 0 <= opts["temperature"] <= 2:
        raise ConfigError(f"--temperature must be between 0 and 2, got {opts['temperature']:g}")
    if opts["system"] is not None and not opts["system"].strip():
        raise ConfigError("--system is empty: give a system prompt or leave it out")
    if opts["memory"] is not None and opts["memory"] < 1:
        raise ConfigError(f"--memory must be at least 1, got {opts['memory']}")
    given = {field: opts[option] for field, option in _BUDGET_OPTIONS.items()
             if opts[option] is not None}
    if (opts["preset"] is not None or only_given) and "max_rounds" not in explicit:
        given.pop("max_rounds")  # the preset's own (Budget's default, or none: best-of-n)
    return Budget(**given)
