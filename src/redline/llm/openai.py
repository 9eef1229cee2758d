"""`OpenAIChat`: any OpenAI-compatible chat server (OpenAI, vLLM, llama.cpp, Ollama).

Transient failures (429, 408, 5xx, timeouts, refused connections) are retried here and
nowhere else, with jittered exponential backoff or the server's ``Retry-After``; when
they outlast the retries the call raises `LLMUnavailableError`. Other HTTP errors raise
`LLMError` at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import openai
from tenacity import (
    RetryCallState,
    RetryError,
)

from redline._retry import is_transient_status, retrying, root_cause
from redline.errors import ConfigError, LLMError, LLMResponseError, LLMUnavailableError
from redline.llm._base import ChatModel, Completion, Message, Price
from redline.types import Usage

__all__ = ["OpenAIChat"]

_log = logging.getLogger("redline.llm")

_OPENAI_URL = "https://api.openai.com/v1"
_PLACEHOLDER_KEY = "not-needed"
"""Local servers (vLLM, llama.cpp) ignore the key, but the client insists on one."""


class OpenAIChat(ChatModel):
    """A chat model served over the OpenAI chat completions API.

    Example:
        >>> chat = OpenAIChat("qwen2.5-7b-instruct", base_url="http://127.0.0.1:8000/v1")

    Args:
        model: the model's name as the server knows it.
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``; defaults to
            ``$OPENAI_BASE_URL``, then to OpenAI's own API.
        api_key: defaults to ``$OPENAI_API_KEY``; may be omitted for a local server
            (a placeholder is sent).
        price: the model's price, to account ``cost_usd``; None when calls are free or
            the price is unknown.
        timeout: seconds allowed for one HTTP attempt (the ``timeout`` attribute; None
            when a ``client`` with a structured timeout was passed in).
        max_attempts: attempts per call, the first included, before transient failures
            raise `LLMUnavailableError`.
        max_wait: the longest pause between attempts, in seconds (it also caps
            ``Retry-After``).
        client: an `openai.AsyncOpenAI` to use instead of building one (its own retries
            are turned off); ``base_url``, ``api_key`` and ``timeout`` are then ignored
            and `aclose` leaves it open.

    Raises:
        ConfigError: no API key and no base URL, a base URL that is not http(s), or a
            non-positive ``timeout`` / ``max_attempts``.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        price: Price | None = None,
        timeout: float = 120.0,
        max_attempts: int = 5,
        max_wait: float = 30.0,
        client: openai.AsyncOpenAI | None = None,
    ) -> None:
        if not model:
            raise ConfigError("OpenAIChat needs a model name, e.g. OpenAIChat('gpt-4o-mini')")
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, got {max_attempts}")
        if timeout <= 0 or max_wait < 0:
            raise ConfigError(
                f"timeout must be > 0 and max_wait >= 0, got timeout={timeout}, "
                f"max_wait={max_wait}")
        self.model = model
        self.price = price
        if client is not None:
            self._owns_client = False
            self._client = client if client.max_retries == 0 else client.with_options(
                max_retries=0)
            self.base_url = str(client.base_url).rstrip("/")
            self.timeout = client.timeout if isinstance(client.timeout, int | float) else None
        else:
            self._owns_client = True
            self.base_url, self._key = _resolve_endpoint(base_url, api_key)
            self.timeout = timeout
            self._client = self._new_client()
        self._client_loop: asyncio.AbstractEventLoop | None = None
        # A template: each call runs a copy, since tenacity keeps per-run state on it.
        self._retrying = retrying(transient=_is_transient, headers_of=_headers_of,
                                  max_attempts=max_attempts, max_wait=max_wait,
                                  before_sleep=self._log_retry)

    def __repr__(self) -> str:
        return f"OpenAIChat(model={self.model!r}, base_url={self.base_url!r})"

    async def _complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float,
        stop: Sequence[str] | None,
        seed: int | None,
        response_format: dict[str, Any] | None,
    ) -> Completion:
        # Sampling parameters are always explicit: server defaults differ (vLLM reads
        # generation_config.json), and a run must mean the same thing on every server.
        params: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if stop is not None:
            params["stop"] = list(stop)
        if seed is not None:
            params["seed"] = seed
        if response_format is not None:
            params["response_format"] = response_format
        try:
            response = await self._retrying.copy()(self._create, params)
        except RetryError as exc:
            attempts, last = exc.last_attempt.attempt_number, exc.last_attempt.exception()
            status = last.status_code if isinstance(last, openai.APIStatusError) else None
            raise LLMUnavailableError(
                f"model {self.model!r} at {self.base_url} failed {attempts} times; "
                f"last error: {_describe(last, self.timeout)}",
                attempts=attempts, last_status=status) from last
        except openai.APIStatusError as exc:
            raise LLMError(self._rejected(exc), status=exc.status_code) from exc
        except openai.APIResponseValidationError as exc:
            raise LLMResponseError(
                f"model {self.model!r} at {self.base_url} sent a malformed response: "
                f"{exc.message}") from exc
        return self._completion(response, messages, max_tokens)

    async def _create(self, params: dict[str, Any]) -> Any:
        # A coroutine function of our own: tenacity awaits only what it sees as one, and
        # the client's `create` hides behind a plain decorator.
        return await self._loop_client().chat.completions.create(**params)

    def _new_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self._key,
                                  timeout=self.timeout, max_retries=0)

    def _loop_client(self) -> openai.AsyncOpenAI:
        """The client for the running event loop: its connections belong to one loop, and
        each `refine()` call runs a new loop, so an owned client is rebuilt per loop."""
        loop = asyncio.get_running_loop()
        if self._owns_client and self._client_loop is not loop:
            if self._client_loop is not None:
                self._client = self._new_client()
            self._client_loop = loop
        return self._client

    def _completion(self, response: Any, messages: Sequence[Message],
                    max_tokens: int) -> Completion:
        if not response.choices:
            raise LLMResponseError(
                f"model {self.model!r} at {self.base_url} returned no choices")
        choice = response.choices[0]
        text = choice.message.content
        if text is None:
            refusal = getattr(choice.message, "refusal", None)
            why = f"refusal: {refusal}" if refusal else f"finish_reason={choice.finish_reason!r}"
            raise LLMResponseError(
                f"model {self.model!r} at {self.base_url} returned no text ({why})")
        usage = response.usage
        if usage is None:
            # Budgets need a number: over-estimate rather than under-count. A token is
            # at least one UTF-8 byte, and the server cannot pass max_tokens.
            _log.debug("model %r at %s reported no usage; estimating it",
                       self.model, self.base_url)
            tokens = Usage(input_tokens=self.estimate_input_tokens(messages),
                           output_tokens=min(max_tokens, len(text.encode("utf-8"))))
        else:
            tokens = Usage(input_tokens=usage.prompt_tokens or 0,
                           output_tokens=usage.completion_tokens or 0)
        return Completion(text=text, usage=tokens, finish_reason=choice.finish_reason,
                          model=response.model or self.model)

    def _rejected(self, exc: openai.APIStatusError) -> str:
        message = (f"model {self.model!r} at {self.base_url} rejected the request: "
                   f"HTTP {exc.status_code}: {_server_message(exc)}")
        if exc.status_code == 401:
            message += " (check OPENAI_API_KEY or --api-key)"
        elif exc.status_code == 404:
            message += " (check the model name and that base_url ends in /v1)"
        return message

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        _log.warning(
            "model %r at %s: attempt %d failed (%s); retrying in %.2f s",
            self.model, self.base_url, state.attempt_number, _describe(exc, self.timeout),
            state.upcoming_sleep)

    async def aclose(self) -> None:
        """Close the HTTP connections (not those of a client passed in)."""
        if self._owns_client:
            await self._client.close()


def _resolve_endpoint(base_url: str | None, api_key: str | None) -> tuple[str, str]:
    """Argument, then environment, then an error that says what to set."""
    base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
    api_key = api_key or os.environ.get("OPENAI_API_KEY") or None
    if base_url is None and api_key is None:
        raise ConfigError(
            "OpenAIChat needs a server: pass base_url= (or set OPENAI_BASE_URL) for a "
            "local OpenAI-compatible server, or api_key= (or set OPENAI_API_KEY) for "
            "OpenAI's API")
    if base_url is not None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"base_url {base_url!r} is not an http(s) URL; expected something like "
                "'http://127.0.0.1:8000/v1'")
    return (base_url or _OPENAI_URL).rstrip("/"), api_key or _PLACEHOLDER_KEY


def _headers_of(exc: BaseException) -> Mapping[str, str] | None:
    return exc.response.headers if isinstance(exc, openai.APIStatusError) else None


def _is_transient(exc: BaseException) -> bool:
    """Whether trying again may succeed: overload, server faults, the network."""
    if isinstance(exc, openai.APIStatusError):
        return is_transient_status(exc.status_code)
    # APITimeoutError is an APIConnectionError.
    return isinstance(exc, openai.APIConnectionError)


def _describe(exc: BaseException | None, timeout: float | None) -> str:
    """One line on a failed attempt, for logs and error messages."""
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {_server_message(exc)}"
    if isinstance(exc, openai.APITimeoutError):
        return f"no answer within the {timeout:g} s timeout" if timeout else "timed out"
    if isinstance(exc, openai.APIConnectionError):
        root = root_cause(exc)
        if root is exc:
            return f"connection failed ({exc.message})"
        return f"connection failed ({type(root).__name__}: {root})"
    return repr(exc)


def _server_message(exc: openai.APIStatusError) -> str:
    """The server's own error message, without the client's wrapping."""
    body = exc.body
    if isinstance(body, Mapping) and body.get("message"):
        return str(body["message"])
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return exc.message
