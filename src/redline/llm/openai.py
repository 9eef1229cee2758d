"""`OpenAIChat`: any OpenAI-compatible chat server (OpenAI, vLLM, llama.cpp, Ollama).

Transient failures (429, 408, 5xx, timeouts, refused connections, and a 200 whose body
is not a chat completion: truncated JSON, an HTML page from a proxy, no choices, fields
of the wrong type) are retried here and nowhere else, with jittered exponential backoff
or the server's ``Retry-After``; when they outlast the retries the call raises
`LLMUnavailableError`. Other HTTP errors raise `LLMError` at once.

Structured output: `OpenAIChat.structured_format` maps a JSON schema to the server's
dialect (``schema_dialect``). A server that rejects the format (HTTP 400 or 422, or
llama-cpp-python's 500 naming ``response_format``) is asked again with a weaker one
(OpenAI's schema → llama-cpp-python's schema → JSON mode → none), and the instance
remembers what the server refused once the weaker request succeeded.

Transport: requests go out as JSON through redline's own pooled aiohttp client
(`redline.llm._http.PooledClient`) and answers are read as plain JSON: the openai SDK's
request and response machinery cost ~10x the client CPU of the call itself under
concurrency (``bench/batch_overhead.py``). The SDK is used only for a ``client=`` passed in, and is
imported only then.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from tenacity import (
    RetryCallState,
    RetryError,
)

from redline._aio import PerLoop
from redline._retry import is_transient_status, retrying, root_cause
from redline._version import __version__
from redline.errors import ConfigError, LLMError, LLMResponseError, LLMUnavailableError
from redline.llm._base import ChatModel, Completion, Message, json_schema_format
from redline.llm._http import (
    ConnectionFailed,
    PooledClient,
    StatusFailed,
    TimedOut,
)
from redline.types import Price, Usage

if TYPE_CHECKING:
    import openai

__all__ = ["OpenAIChat"]

_log = logging.getLogger("redline.llm")

_OPENAI_URL = "https://api.openai.com/v1"
_PLACEHOLDER_KEY = "not-needed"
"""Local servers (vLLM, llama.cpp) ignore the key, but the client insists on one."""

SchemaDialect = Literal["json_schema", "llama-cpp-python", "json_object", "none"]
"""How a server is asked for JSON matching a schema (see `OpenAIChat`)."""
_REFUSAL_STATUSES = (400, 422)
"""What a server answers to a ``response_format`` it does not support."""


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
        organization: sent as ``OpenAI-Organization``; defaults to ``$OPENAI_ORG_ID``
            (as the openai client reads it), none when unset.
        project: sent as ``OpenAI-Project``; defaults to ``$OPENAI_PROJECT_ID``.
        client: an `openai.AsyncOpenAI` to send through instead of redline's own HTTP
            client (its own retries are turned off); ``base_url``, ``api_key``,
            ``timeout``, ``organization`` and ``project`` are then ignored and `aclose`
            leaves it open.
        schema_dialect: how `complete(json_schema=...)` asks the server for JSON:
            ``"json_schema"`` (OpenAI's structured outputs: OpenAI, vLLM, llama.cpp's
            ``llama-server``, Ollama's ``/v1``), ``"llama-cpp-python"`` (``{"type":
            "json_object", "schema": ...}``, the llama-cpp-python server), ``"json_object"``
            (JSON mode, no schema) or ``"none"`` (ask in the prompt only).

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
        organization: str | None = None,
        project: str | None = None,
        client: openai.AsyncOpenAI | None = None,
        schema_dialect: SchemaDialect = "json_schema",
    ) -> None:
        if not model:
            raise ConfigError("OpenAIChat needs a model name, e.g. OpenAIChat('gpt-4o-mini')")
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, got {max_attempts}")
        if timeout <= 0 or max_wait < 0:
            raise ConfigError(
                f"timeout must be > 0 and max_wait >= 0, got timeout={timeout}, "
                f"max_wait={max_wait}")
        if schema_dialect not in ("json_schema", "llama-cpp-python", "json_object", "none"):
            raise ConfigError(f"schema_dialect must be 'json_schema', 'llama-cpp-python', "
                              f"'json_object' or 'none', got {schema_dialect!r}")
        self.model = model
        self.price = price
        self.schema_dialect: SchemaDialect = schema_dialect
        # response_format kinds this server refused (400/422), learnt per instance.
        self._refused_formats: set[str] = set()
        # The owned HTTP client is made per event loop (its connections belong to one
        # loop), and closed when that loop shuts down; a client passed in is the caller's.
        self._clients: PerLoop[PooledClient] | None = None
        self._sdk: openai.AsyncOpenAI | None = None
        if client is not None:
            self._sdk = client if client.max_retries == 0 else client.with_options(
                max_retries=0)
            self.base_url = str(client.base_url).rstrip("/")
            self.timeout = client.timeout if isinstance(client.timeout, int | float) else None
        else:
            self.base_url, key = _resolve_endpoint(base_url, api_key)
            self.timeout = timeout
            self._headers = _headers(
                key, organization or os.environ.get("OPENAI_ORG_ID") or None,
                project or os.environ.get("OPENAI_PROJECT_ID") or None)
            self._clients = PerLoop(self._new_client, close=PooledClient.aclose)
        self._url = f"{self.base_url}/chat/completions"
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
        refused: list[str] = []
        response_format = self._accepted_format(response_format)
        while True:
            if response_format is not None:
                params["response_format"] = response_format
            else:
                params.pop("response_format", None)
            try:
                response = await self._send(params)
                break
            except LLMError as exc:
                if response_format is None or exc.status not in _REFUSAL_STATUSES:
                    raise
                kind = _format_kind(response_format)
                refused.append(kind)
                response_format = self._accepted_format(_weaker_format(response_format))
                _log.warning("model %r at %s refused response_format %s (%s); asking with %s",
                             self.model, self.base_url, kind, exc,
                             _format_kind(response_format) if response_format else "none")
        # Remembered only once a weaker format worked: a 400 for another reason (a prompt
        # too long) fails again without the format and teaches nothing.
        self._refused_formats.update(refused)
        return self._completion(response, messages, max_tokens)

    def structured_format(self, schema: dict[str, Any]) -> dict[str, Any] | None:
        """The ``response_format`` for `schema` in this server's ``schema_dialect``."""
        if self.schema_dialect == "json_schema":
            return json_schema_format(schema)
        if self.schema_dialect == "llama-cpp-python":
            return {"type": "json_object", "schema": schema}
        if self.schema_dialect == "json_object":
            return {"type": "json_object"}
        return None

    def _accepted_format(self, response_format: dict[str, Any] | None) -> dict[str, Any] | None:
        """`response_format`, weakened past what this server refused before."""
        while response_format is not None and _format_kind(response_format) in \
                self._refused_formats:
            response_format = _weaker_format(response_format)
        return response_format

    async def _send(self, params: dict[str, Any]) -> dict[str, Any]:
        """One call with retries; failures as redline's errors."""
        try:
            try:
                # Most calls succeed at once: no retry machinery for them (tenacity's
                # per-call set-up was a tenth of a batch's CPU).
                return await self._attempt(params)
            except Exception as exc:
                replay = [exc]

            async def attempt(params: dict[str, Any]) -> dict[str, Any]:
                if replay:  # tenacity takes the failed first attempt for its own
                    raise replay.pop()
                return await self._attempt(params)
            return await self._retrying.copy()(attempt, params)
        except RetryError as exc:
            attempts, last = exc.last_attempt.attempt_number, exc.last_attempt.exception()
            status = last.status if isinstance(last, StatusFailed) else None
            raise LLMUnavailableError(
                f"model {self.model!r} at {self.base_url} failed {attempts} times; "
                f"last error: {_describe(last, self.timeout)}",
                attempts=attempts, last_status=status) from last
        except StatusFailed as exc:
            raise LLMError(self._rejected(exc), status=exc.status) from exc

    async def _attempt(self, params: dict[str, Any]) -> dict[str, Any]:
        """One HTTP attempt: the chat completion's JSON, its shape checked."""
        if self._sdk is not None:
            status, content_type, body = await _sdk_post(self._sdk, params)
        else:
            try:
                response = await self._clients_get().request(
                    "POST", self._url, content=json.dumps(params).encode())
            except StatusFailed as exc:
                # llama-cpp-python's server answers a response_format it does not know
                # with a 500 naming the field: a refusal of the format, not an outage.
                if exc.status == 500 and "response_format" in params \
                        and b"response_format" in exc.body:
                    raise StatusFailed(422, exc.headers, exc.body) from exc
                raise
            status, content_type, body = (response.status_code,
                                          response.headers.get("content-type", ""),
                                          response.content)
        try:
            data = json.loads(body)
        except ValueError as exc:  # UnicodeDecodeError is one
            if "json" in content_type.lower():
                raise self._malformed(f"the body is not valid JSON ({exc})") from exc
            text = body.decode("utf-8", "replace")
            raise self._malformed(f"not a chat completion but {content_type or 'a body'} "
                                  f"{text[:80]!r} (HTTP {status})") from exc
        problem = _shape_problem(data)
        if problem:
            raise self._malformed(problem)
        return data

    def _malformed(self, problem: str) -> LLMResponseError:
        # A 200 that is not a chat completion is a proxy's error page or a reply cut in
        # transit far more often than a server that always answers so: retried.
        return LLMResponseError(
            f"model {self.model!r} at {self.base_url} sent a malformed response: {problem}",
            status=200)

    def _new_client(self) -> PooledClient:
        return PooledClient(headers=self._headers, timeout=self.timeout)

    def _clients_get(self) -> PooledClient:
        """The HTTP client for the running event loop."""
        assert self._clients is not None  # only without an SDK client
        return self._clients.get()

    def _completion(self, response: dict[str, Any], messages: Sequence[Message],
                    max_tokens: int) -> Completion:
        choice = response["choices"][0]  # its shape was checked by _attempt
        message = choice["message"]
        text = message.get("content")
        finish_reason = choice.get("finish_reason")
        if text is None:
            refusal = message.get("refusal")
            why = f"refusal: {refusal}" if refusal else f"finish_reason={finish_reason!r}"
            raise LLMResponseError(
                f"model {self.model!r} at {self.base_url} returned no text ({why})")
        usage = response.get("usage")
        if usage is None:
            # Budgets need a number: over-estimate rather than under-count. A token is
            # at least one UTF-8 byte, and the server cannot pass max_tokens.
            _log.debug("model %r at %s reported no usage; estimating it",
                       self.model, self.base_url)
            tokens = Usage(input_tokens=self.estimate_input_tokens(messages),
                           output_tokens=min(max_tokens, len(text.encode("utf-8"))))
        else:
            tokens = Usage(input_tokens=usage.get("prompt_tokens") or 0,
                           output_tokens=usage.get("completion_tokens") or 0)
        model = response.get("model")
        return Completion(text=text, usage=tokens, finish_reason=finish_reason,
                          model=model if isinstance(model, str) and model else self.model)

    def _rejected(self, exc: StatusFailed) -> str:
        message = (f"model {self.model!r} at {self.base_url} rejected the request: "
                   f"HTTP {exc.status}: {_server_message(exc)}")
        if exc.status == 401:
            message += " (check OPENAI_API_KEY or --api-key)"
        elif exc.status == 404:
            message += " (check the model name and that base_url ends in /v1)"
        return message

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        _log.warning(
            "model %r at %s: attempt %d failed (%s); retrying in %.2f s",
            self.model, self.base_url, state.attempt_number, _describe(exc, self.timeout),
            state.upcoming_sleep)

    async def preflight(self) -> None:
        """Ask the server for its model list once (5 s, no retries) before a run.

        Raises:
            ConfigError: the server cannot be reached, or rejects the key (401/403).
            Other answers (a server without ``/models``) pass: the run will tell.
        """
        try:
            if self._sdk is not None:
                await _sdk_models(self._sdk)
            else:
                await self._clients_get().request("GET", f"{self.base_url}/models",
                                                  timeout=5.0)
        except StatusFailed as exc:
            if exc.status in (401, 403):
                raise ConfigError(self._rejected(exc)) from exc
        except (TimedOut, ConnectionFailed) as exc:
            raise ConfigError(f"cannot reach model {self.model!r} at {self.base_url}: "
                              f"{_describe(exc, 5.0)}") from exc

    async def aclose(self) -> None:
        """Close this event loop's HTTP connections (not those of a client passed in).

        Connections made in other event loops are closed when their loop shuts down.
        """
        if self._clients is not None:
            await self._clients.aclose()


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


def _headers(key: str, organization: str | None, project: str | None) -> dict[str, str]:
    """What the openai client sends with every request, less its telemetry headers."""
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json",
               "Content-Type": "application/json", "User-Agent": f"redline/{__version__}"}
    if organization:
        headers["OpenAI-Organization"] = organization
    if project:
        headers["OpenAI-Project"] = project
    return headers


async def _sdk_post(client: openai.AsyncOpenAI, params: dict[str, Any]) -> tuple[int, str, bytes]:
    """A chat request through a caller's openai client: the raw answer, its failures as
    redline's `AttemptFailed` (the answer is parsed as the own client's is)."""
    import openai

    try:
        raw = await client.chat.completions.with_raw_response.create(**params)
    except openai.APIStatusError as exc:
        raise StatusFailed(exc.status_code, exc.response.headers, exc.response.content) from exc
    except openai.APITimeoutError as exc:
        raise TimedOut(exc.message) from exc
    except openai.APIConnectionError as exc:
        raise ConnectionFailed(exc.message) from exc
    response = raw.http_response
    return response.status_code, response.headers.get("content-type", ""), response.content


async def _sdk_models(client: openai.AsyncOpenAI) -> None:
    """``GET /models`` through a caller's openai client (5 s, no retries)."""
    import openai

    try:
        await client.with_options(timeout=5.0, max_retries=0).models.with_raw_response.list()
    except openai.APIStatusError as exc:
        raise StatusFailed(exc.status_code, exc.response.headers, exc.response.content) from exc
    except openai.APITimeoutError as exc:
        raise TimedOut(exc.message) from exc
    except openai.APIConnectionError as exc:
        raise ConnectionFailed(exc.message) from exc


def _headers_of(exc: BaseException) -> Mapping[str, str] | None:
    return exc.headers if isinstance(exc, StatusFailed) else None


def _is_transient(exc: BaseException) -> bool:
    """Whether trying again may succeed: overload, server faults, the network, a
    malformed body (the only `LLMResponseError` raised inside an attempt)."""
    if isinstance(exc, StatusFailed):
        return is_transient_status(exc.status)
    return isinstance(exc, TimedOut | ConnectionFailed | LLMResponseError)


def _shape_problem(response: Any) -> str:
    """What makes `response` (decoded JSON) not a usable chat completion ("" when it is
    one): everything `_completion` reads is checked here."""
    if not isinstance(response, dict):
        return f"not a chat completion but {type(response).__name__} {str(response)[:80]!r}"
    choices = response.get("choices")
    if not isinstance(choices, list):
        return f'"choices" is {type(choices).__name__}, not a list'
    if not choices:
        return "no choices"
    first = choices[0]
    message = first.get("message") if isinstance(first, dict) else None
    if not isinstance(message, dict):
        return f"choices[0] has no message ({first!r:.80})"
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        return f"the message content is {type(content).__name__}, not a string"
    finish = first.get("finish_reason")
    if finish is not None and not isinstance(finish, str):
        return f"finish_reason is {type(finish).__name__}, not a string"
    model = response.get("model")
    if model is not None and not isinstance(model, str):
        return f'"model" is {type(model).__name__}, not a string'
    usage = response.get("usage")
    if usage is not None:
        counts = ([usage.get("prompt_tokens"), usage.get("completion_tokens")]
                  if isinstance(usage, dict) else [])
        if not isinstance(usage, dict) or any(
                c is not None and (not isinstance(c, int) or isinstance(c, bool) or c < 0)
                for c in counts):
            return f'"usage" is malformed ({usage!r:.80})'
    return ""


def _format_kind(response_format: dict[str, Any]) -> str:
    """A name for what a ``response_format`` asks: the unit a server refuses."""
    kind = str(response_format.get("type"))
    return f"{kind}+schema" if kind == "json_object" and "schema" in response_format else kind


def _weaker_format(response_format: dict[str, Any]) -> dict[str, Any] | None:
    """The next thing to ask a server that refused `response_format`: OpenAI's schema,
    then llama-cpp-python's (the schema still constrains the output), then JSON mode,
    then nothing."""
    kind = _format_kind(response_format)
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            return {"type": "json_object", "schema": schema}
        return {"type": "json_object"}
    if kind == "json_object+schema":
        return {"type": "json_object"}
    return None


def _describe(exc: BaseException | None, timeout: float | None) -> str:
    """One line on a failed attempt, for logs and error messages."""
    if isinstance(exc, LLMResponseError):
        return "a malformed response: " + str(exc).partition("a malformed response: ")[2]
    if isinstance(exc, StatusFailed):
        return f"HTTP {exc.status}: {_server_message(exc)}"
    if isinstance(exc, TimedOut):
        return f"no answer within the {timeout:g} s timeout" if timeout else "timed out"
    if isinstance(exc, ConnectionFailed):
        root = root_cause(exc)
        if root is exc:
            return f"connection failed ({exc})"
        return f"connection failed ({type(root).__name__}: {root})"
    return repr(exc)


def _server_message(exc: StatusFailed) -> str:
    """The server's own error message: ``error.message`` of a JSON body, else the
    body's text, else what the openai client would say."""
    text = exc.body.decode("utf-8", "replace").strip()
    try:
        body = json.loads(text)
    except ValueError:
        body = text
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and error.get("message"):
            return str(error["message"])
        return f"Error code: {exc.status} - {error}"
    if isinstance(body, str) and body:
        return body[:500]
    return f"Error code: {exc.status}"
