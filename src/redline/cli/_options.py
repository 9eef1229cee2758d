"""Command-line values checked once: server URLs, key files, and the run's settings."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from redline._files import read_config_text
from redline.errors import ConfigError
from redline.types import Budget

__all__ = ["check_base_url", "read_key_file", "settings_of"]


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


def settings_of(opts: dict[str, Any], model: Any, budget: Budget) -> dict[str, Any]:
    """How a run was configured, for the ``--json`` document (never a secret)."""
    return {
        "model": {"name": model.model, "class": type(model).__name__,
                  "base_url": getattr(model, "base_url", None),
                  "price": model.price.model_dump() if model.price else None},
        "critics": list(opts["critic_specs"]) or ["judge"],
        "threshold": opts["threshold"],
        "budget": budget.model_dump(),
        "drafts": opts["drafts"],
        "revise": opts["revise"],
        "revise_when": opts["revise_when"],
        "system": opts["system"],
        "temperature": opts["temperature"],
        "seed": opts["seed"],
        "preset": None,
    }
