"""Choosing a chat model from a spec (an object or a model string) and the environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from redline.errors import ConfigError
from redline.llm._base import ChatModel

__all__ = ["DEFAULT_OPENAI_MODEL", "PROVIDERS", "resolve_model"]

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"

PROVIDERS = ("local", "ollama", "openai", "transformers", "vllm")
"""The providers a model string may start with (``"ollama:qwen2.5"``)."""

_VLLM_URL = "http://127.0.0.1:8000/v1"
_OLLAMA_PORT = 11434


def resolve_model(model: Any = None, *, base_url: str | None = None,
                  api_key: str | None = None, model_path: str | Path | None = None,
                  ) -> ChatModel:
    """The chat model that a spec, then the environment, then the defaults select.

    Specs (a model string is ``PROVIDER:NAME``, as LangChain's ``init_chat_model`` and
    pydantic-ai write them; only the text before the first colon is the provider, so
    ``"ollama:qwen2.5:7b"`` keeps its tag):

    - ``None``: ``$REDLINE_MODEL``, itself a spec; else as a bare name without a name.
    - a `ChatModel`: itself.
    - a LangChain chat model: wrapped in `LangChainChat` (``redline[langchain]``).
    - ``"NAME"`` (no provider): with a base URL or an API key (the arguments, else
      ``$OPENAI_BASE_URL`` / ``$OPENAI_API_KEY``) and no ``model_path``,
      ``OpenAIChat(NAME)`` on that server (no name: ``gpt-4o-mini`` on OpenAI's API, the
      server's default elsewhere); otherwise the embedded `LocalModel` (NAME unused).
      A name whose prefix is no provider (an Ollama tag such as ``llama3.2:1b``) counts
      as a bare name when a server is configured.
    - ``"openai:NAME"``: ``OpenAIChat(NAME)`` at the base URL, else OpenAI's API; key
      ``api_key`` / ``$OPENAI_API_KEY``.
    - ``"vllm:NAME"``: ``OpenAIChat(NAME)`` at the base URL, else
      ``http://127.0.0.1:8000/v1`` (``vllm serve``'s default); key ``api_key`` /
      ``$OPENAI_API_KEY``, else none.
    - ``"ollama:NAME"``: ``OpenAIChat(NAME)`` at the ``base_url`` argument, else
      ``$OLLAMA_HOST`` + ``/v1``, else ``http://127.0.0.1:11434/v1``; key the
      ``api_key`` argument, else none (``$OPENAI_*`` are not read: they name another
      server).
    - ``"local"``, ``"local:PATH"``: the embedded `LocalModel` serving the GGUF at PATH,
      else ``model_path``, else ``$REDLINE_MODEL_PATH``, else the bundled SmolLM2.
    - ``"transformers:ID"``: ``TransformersChat(ID)``, a Hub id or a model folder run in
      process (``redline[rm]``).

    Example:
        >>> resolve_model("ollama:qwen2.5")
        OpenAIChat(model='qwen2.5', base_url='http://127.0.0.1:11434/v1')

    Args:
        model: the spec.
        base_url: the OpenAI-compatible server of ``openai:``, ``vllm:``, ``ollama:`` and
            bare names.
        api_key: that server's key.
        model_path: the embedded model's GGUF, for ``local`` and bare names; other
            providers ignore it.

    Raises:
        ConfigError: an unknown provider (naming the known ones), a provider without a
            model name, ``openai:`` with neither a key nor a base URL, a bad URL or model
            path, or a spec of another type.
        MissingDependencyError: the model needs an extra that is not installed
            (``local``, ``rm`` or ``langchain``).
    """
    if model is None or model == "":
        model = os.environ.get("REDLINE_MODEL") or None
    if isinstance(model, ChatModel):
        return model
    if model is not None and not isinstance(model, str):
        if hasattr(model, "ainvoke"):
            from redline.llm.langchain import LangChainChat

            return LangChainChat(model)
        raise ConfigError(
            f"model must be a ChatModel, a LangChain chat model or a model string such as "
            f"'openai:gpt-4o-mini'; got {type(model).__name__}")
    if isinstance(model, str) and model.partition(":")[0] == "ollama":
        # Ollama has an address of its own; the OpenAI variables name another server.
        return _ollama(model, base_url, api_key)
    base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
    api_key = api_key or os.environ.get("OPENAI_API_KEY") or None
    provider, sep, name = (model or "").partition(":")
    if not sep:
        if model == "local":
            return _local(model_path)
        return _bare(model or None, base_url, api_key, model_path)
    if provider not in PROVIDERS:
        if base_url or api_key:
            return _bare(model, base_url, api_key, model_path)
        raise ConfigError(
            f"model {model!r}: unknown provider {provider!r}; known: "
            f"{', '.join(PROVIDERS)} (e.g. 'ollama:{name or 'qwen2.5'}'). A model name that "
            "contains a colon needs a server: set base_url / OPENAI_BASE_URL")
    if provider == "local":
        return _local(name or model_path)
    if not name:
        raise ConfigError(f"model {model!r} names no model; write e.g. "
                          f"'{provider}:{_EXAMPLES[provider]}'")
    if provider == "transformers":
        from redline.llm.transformers import TransformersChat

        return TransformersChat(name)
    from redline.llm.openai import OpenAIChat

    if provider == "openai":
        if not (base_url or api_key):
            raise ConfigError(f"model {model!r} needs OpenAI's API key: set OPENAI_API_KEY "
                              "(or OPENAI_BASE_URL for another OpenAI-compatible server)")
        return OpenAIChat(name, base_url=base_url, api_key=api_key)
    return OpenAIChat(name, base_url=base_url or _VLLM_URL, api_key=api_key)  # vllm


_EXAMPLES = {"openai": DEFAULT_OPENAI_MODEL, "vllm": "Qwen/Qwen2.5-7B-Instruct",
             "ollama": "qwen2.5", "transformers": "HuggingFaceTB/SmolLM2-360M-Instruct"}


def _bare(name: str | None, base_url: str | None, api_key: str | None,
          model_path: str | Path | None) -> ChatModel:
    if model_path is None and (base_url or api_key):
        from redline.llm.openai import OpenAIChat

        name = name or (DEFAULT_OPENAI_MODEL if not base_url else "default")
        return OpenAIChat(name, base_url=base_url, api_key=api_key)
    return _local(model_path)


def _local(model_path: str | Path | None) -> ChatModel:
    from redline.llm.local import LocalModel

    return LocalModel(model_path or None)


def _ollama(spec: str, base_url: str | None, api_key: str | None) -> ChatModel:
    from redline.llm.openai import OpenAIChat

    name = spec.partition(":")[2]
    if not name:
        raise ConfigError(f"model {spec!r} names no model; write e.g. 'ollama:qwen2.5'")
    # An explicit placeholder: OpenAIChat would otherwise send $OPENAI_API_KEY.
    return OpenAIChat(name, base_url=base_url or _ollama_url(), api_key=api_key or "ollama")


def _ollama_url() -> str:
    """``$OLLAMA_HOST`` read as Ollama's clients read it, + ``/v1``.

    ``host`` and ``host:port`` mean http on port 11434 by default; a URL keeps its
    scheme's default port.
    """
    host = os.environ.get("OLLAMA_HOST", "").strip()
    if not host:
        return f"http://127.0.0.1:{_OLLAMA_PORT}/v1"
    parts = urlsplit(host if "://" in host else f"http://{host}")
    try:
        port = parts.port or (None if "://" in host else _OLLAMA_PORT)
    except ValueError as exc:
        raise ConfigError(f"$OLLAMA_HOST {host!r} has a bad port") from exc
    hostname = parts.hostname or "127.0.0.1"
    # A server told to listen on every interface is reached on loopback.
    if hostname in ("0.0.0.0", "::"):
        hostname = "127.0.0.1"
    if ":" in hostname:
        hostname = f"[{hostname}]"
    path = parts.path.rstrip("/")
    if not path.endswith("/v1"):
        path += "/v1"
    netloc = f"{hostname}:{port}" if port else hostname
    return f"{parts.scheme}://{netloc}{path}"
