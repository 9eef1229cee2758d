"""Command-line values checked once (server URLs, prices, key files) and turned into the
fields of a `RunSpec`."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

from redline._files import read_config_text
from redline.errors import ConfigError
from redline.types import Budget

__all__ = ["check_base_url", "parse_price", "read_key_file", "spec_fields"]


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


def parse_price(text: str) -> tuple[float, float]:
    """``IN:OUT`` dollars per million input and output tokens.

    Raises:
        ConfigError: not two finite numbers >= 0.
    """
    try:
        values = [float(p) for p in text.split(":")]
    except ValueError:
        values = []
    if len(values) != 2 or not all(math.isfinite(v) and v >= 0 for v in values):
        raise ConfigError(f"--price {text!r}: expected IN:OUT, dollars per million input "
                          "and output tokens, e.g. 0.15:0.60")
    return values[0], values[1]


def spec_fields(opts: dict[str, Any], budget: Budget) -> dict[str, Any]:
    """The `RunSpec` fields the ``refine`` options describe (no secret among them)."""
    price_in, price_out = parse_price(opts["price"]) if opts["price"] else (None, None)
    if opts["base_url"]:
        check_base_url(opts["base_url"])
    return {
        "model": {"name": opts["model"], "base_url": opts["base_url"],
                  "model_path": opts["model_path"], "price_in": price_in,
                  "price_out": price_out},
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
