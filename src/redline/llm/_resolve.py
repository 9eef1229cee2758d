"""Choosing a chat model from arguments and the environment."""

from __future__ import annotations

import os
from pathlib import Path

from redline.llm._base import ChatModel

__all__ = ["DEFAULT_OPENAI_MODEL", "resolve_model"]

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"


def resolve_model(model: str | None = None, *, base_url: str | None = None,
                  api_key: str | None = None, model_path: str | Path | None = None,
                  ) -> ChatModel:
    """The chat model that arguments, then the environment, then the defaults select.

    Order: explicit arguments, then ``REDLINE_MODEL``, ``OPENAI_BASE_URL`` and
    ``OPENAI_API_KEY``. With a base URL or an API key, an `OpenAIChat` (model
    ``REDLINE_MODEL``, else ``gpt-4o-mini`` on OpenAI's API, else the server's own
    default for local servers). With neither, the embedded `LocalModel` (a GGUF from
    ``model_path`` or ``REDLINE_MODEL_PATH``, else SmolLM2-135M-Instruct).

    Raises:
        ConfigError: a bad URL or model path.
        MissingDependencyError: the embedded model is needed but ``redline[local]`` is
            not installed.
    """
    model = model or os.environ.get("REDLINE_MODEL") or None
    base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
    api_key = api_key or os.environ.get("OPENAI_API_KEY") or None
    if model_path is None and (base_url or api_key):
        from redline.llm.openai import OpenAIChat

        name = model or (DEFAULT_OPENAI_MODEL if not base_url else "default")
        return OpenAIChat(name, base_url=base_url, api_key=api_key)
    from redline.llm.local import LocalModel

    return LocalModel(model_path)
