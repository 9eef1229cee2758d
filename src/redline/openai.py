"""A drop-in OpenAI client that refines in-process: `AsyncOpenAI` and `OpenAI`.

``client.chat.completions.create(...)`` takes what the official client's does and
returns what it returns (`openai.types.chat.ChatCompletion`, or chunks with
``stream=True``), but the answer is the best candidate of a refine loop run here, with
the same shape ``redline serve`` answers with (``usage`` summing every call, a
``redline`` field): the request → task and result → response code is
`redline.serve.protocol`, shared with the server.

```python
from redline.openai import AsyncOpenAI

client = AsyncOpenAI("self-refine", model="gpt-4o-mini")     # a preset + the upstream model
reply = await client.chat.completions.create(
    model="redline/self-refine", messages=[{"role": "user", "content": "Explain TCP."}])
print(reply.choices[0].message.content, reply.redline["score"])
```

With one run, any ``model`` selects it (existing code keeps its model names); with
several (``AsyncOpenAI({"fast": cfg1, "careful": cfg2})``), ``model`` must name one
(``redline/careful``). Requests the loop cannot refine (tools, images) go to the
upstream model through the official client; ``n`` > 1 and ``logprobs`` raise
`openai.BadRequestError` (see `redline.serve.protocol`). Errors are the official
client's classes (`openai.APIStatusError` subclasses), with the same bodies the server
sends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from redline.errors import ConfigError
from redline.serve.protocol import (
    ApiError,
    ChatPlan,
    completion,
    completion_id,
    plan_request,
    result_error,
    stream_chunks,
)
from redline.serve.runs import RunTable, default_run_name

if TYPE_CHECKING:
    import openai
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    from redline.llm import ChatModel
    from redline.workflows import RefineConfig

__all__ = ["AsyncOpenAI", "OpenAI"]

# Arguments of the official client's create() that are about the HTTP call, not the
# request body.
_CALL_OPTIONS = ("extra_headers", "extra_query", "timeout")


class AsyncOpenAI:
    """An `openai.AsyncOpenAI` look-alike whose chat completions are refined here.

    Args:
        run: the run: a `RefineConfig`, a `RunSpec`, a preset's name (``"self-debug"``),
            a mapping of run names to those, or a `RunTable`.
        model: the upstream model for runs given as a `RunSpec` or a preset name: a
            `ChatModel` or a model string (``"gpt-4o-mini"``, ``"ollama:qwen2.5"``,
            ``"local"``); None: the spec's own, else the environment's default.
        base_url: the upstream server for a model string (default ``$OPENAI_BASE_URL``).
        api_key: the upstream's key (default ``$OPENAI_API_KEY``).
        token_ceiling: the most tokens one request's loop may spend, whatever its
            ``max_tokens`` asks.

    Raises:
        ConfigError: a bad run or model (a run's preflight happens on its first request).
    """

    def __init__(self, run: Any, *, model: ChatModel | str | None = None,
                 base_url: str | None = None, api_key: str | None = None,
                 token_ceiling: int | None = None) -> None:
        if isinstance(run, RunTable):
            self.runs = run
        else:
            named = dict(run) if isinstance(run, Mapping) else {_name_of(run): run}
            configs = {name: _config(value, model, base_url, api_key)
                       for name, value in named.items()}
            self.runs = RunTable(configs, token_ceiling=token_ceiling, upstream_key=api_key)
        self.chat = _AsyncChat(self)
        self._upstream: dict[str, openai.AsyncOpenAI] = {}

    async def aclose(self) -> None:
        """Close the runs' models and the upstream clients."""
        for client in self._upstream.values():
            await client.close()
        self._upstream.clear()
        await self.runs.aclose()

    async def __aenter__(self) -> AsyncOpenAI:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _create(self, params: dict[str, Any]) -> Any:
        import openai

        body = {k: v for k, v in params.items() if k not in (*_CALL_OPTIONS, "extra_body")}
        body.update(params.get("extra_body") or {})
        try:
            plan = plan_request(body, runs=self.runs.names, lenient=True)
            if plan.kind == "passthrough":
                return await self._passthrough(plan, params)
            assert plan.task is not None
            result = await self.runs.run(plan.run, plan.task, max_tokens=plan.max_tokens)
            error = result_error(result, plan)
            if error is not None:
                raise error
        except ApiError as exc:
            raise _openai_error(exc) from None
        if plan.stream:
            return _AsyncChunks(result, plan)
        return openai.types.chat.ChatCompletion.model_validate(completion(result, plan))

    async def _passthrough(self, plan: ChatPlan, params: dict[str, Any]) -> Any:
        import openai

        upstream = self.runs.upstream(plan.run)
        if upstream is None:
            raise ApiError(400, f"this request needs the upstream model as it is "
                           f"({plan.reason}), and run {plan.run!r}'s model is not an "
                           "OpenAI-compatible server", code="passthrough_unavailable")
        client = self._upstream.get(plan.run)
        if client is None:
            client = self._upstream[plan.run] = openai.AsyncOpenAI(
                base_url=upstream.base_url, api_key=upstream.api_key or "not-needed")
        return await client.chat.completions.create(**{**params, "model": upstream.model})


class _AsyncChat:
    def __init__(self, client: AsyncOpenAI) -> None:
        self.completions = _AsyncCompletions(client)


class _AsyncCompletions:
    def __init__(self, client: AsyncOpenAI) -> None:
        self._client = client

    async def create(self, **params: Any) -> Any:
        """Refine the request's last user message and answer as the OpenAI API does
        (keyword arguments as `openai.AsyncOpenAI().chat.completions.create`).

        Raises:
            openai.APIStatusError: the request is refused (400), names no run (404), or
                the run broke (500), with the server's error body.
        """
        return await self._client._create(params)


class _AsyncChunks:
    """A streamed answer: ``async for chunk in stream`` (``ChatCompletionChunk``s), like
    the official ``AsyncStream``; the run has finished when it is returned."""

    def __init__(self, result: Any, plan: ChatPlan) -> None:
        import time

        import openai

        chunk = openai.types.chat.ChatCompletionChunk
        self._chunks = [chunk.model_validate(c) for c in stream_chunks(
            result, plan, id=completion_id(), created=int(time.time()))]

    def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ChatCompletionChunk]:
        for chunk in self._chunks:
            yield chunk

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        return iter(self._chunks)

    async def __aenter__(self) -> _AsyncChunks:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    def __enter__(self) -> _AsyncChunks:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    async def close(self) -> None:
        """Nothing to release (the official stream's method, for drop-in code)."""


class OpenAI:
    """The synchronous `AsyncOpenAI` (arguments alike), as `openai.OpenAI` is to
    `openai.AsyncOpenAI`. It runs on an event loop kept for the calling thread, and
    refuses to run inside a running one (use `AsyncOpenAI` there)."""

    def __init__(self, run: Any, **kwargs: Any) -> None:
        self._async = AsyncOpenAI(run, **kwargs)
        self.runs = self._async.runs
        self.chat = _SyncChat(self._async)

    def close(self) -> None:
        """Close the runs' models and the upstream clients."""
        _run_sync(self._async.aclose())

    def __enter__(self) -> OpenAI:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _SyncChat:
    def __init__(self, client: AsyncOpenAI) -> None:
        self.completions = _SyncCompletions(client)


class _SyncCompletions:
    def __init__(self, client: AsyncOpenAI) -> None:
        self._client = client

    def create(self, **params: Any) -> ChatCompletion | _AsyncChunks:
        """`AsyncOpenAI`'s ``create``, run to completion (a stream is iterated with
        ``for``)."""
        reply = _run_sync(self._client._create(params))
        if hasattr(reply, "__aiter__") and not isinstance(reply, _AsyncChunks):
            # a passed-through stream of the official async client: read it here
            async def read() -> list[Any]:
                return [chunk async for chunk in reply]

            return iter(_run_sync(read()))
        return reply


def _run_sync(coro: Any) -> Any:
    from redline._aio import run_sync

    try:
        return run_sync(coro)
    except RuntimeError as exc:
        if "running event loop" not in str(exc):
            raise
        raise ConfigError("redline.openai.OpenAI cannot run inside a running event loop: "
                          "use redline.openai.AsyncOpenAI and await it") from None


def _name_of(run: Any) -> str:
    from redline.workflows import RunSpec

    if isinstance(run, str):
        return run.strip().lower().replace("_", "-")
    if isinstance(run, RunSpec):
        return default_run_name(run)
    return "refine"


def _config(run: Any, model: ChatModel | str | None, base_url: str | None,
            api_key: str | None) -> RefineConfig:
    from redline.llm import ChatModel, resolve_model
    from redline.workflows import RefineConfig, RunSpec

    if isinstance(run, RefineConfig):
        return run
    if isinstance(run, str):
        run = RunSpec(preset=run)
    if not isinstance(run, RunSpec):
        raise ConfigError(f"a run is a RefineConfig, a RunSpec or a preset name, got "
                          f"{type(run).__name__}")
    if isinstance(model, ChatModel):
        return run.build(model=model)
    if model is not None or base_url is not None:
        chat = resolve_model(model if model is not None else run.model.name,
                             base_url=base_url or run.model.base_url, api_key=api_key)
        return run.build(model=chat)
    return run.build(api_key=api_key)


def _openai_error(error: ApiError) -> Exception:
    """The official client's exception for a refused or failed request."""
    import httpx
    import openai

    classes: dict[int, type[openai.APIStatusError]] = {
        400: openai.BadRequestError, 401: openai.AuthenticationError,
        404: openai.NotFoundError, 413: openai.APIStatusError,
        429: openai.RateLimitError, 500: openai.InternalServerError}
    cls = classes.get(error.status, openai.APIStatusError)
    request = httpx.Request("POST", "http://redline.in-process/v1/chat/completions")
    # The exception reads the response's status, headers and request only: any httpx
    # flavour does (openai 3 is typed against httpx2).
    response: Any = httpx.Response(error.status, request=request, json=error.body(),
                                   headers=error.headers)
    return cls(error.message, response=response, body=error.body()["error"])
