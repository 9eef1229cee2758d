"""The ASGI app of ``redline serve``: Starlette routes over a `RunTable`.

Routes: ``POST /v1/chat/completions``, ``GET /v1/models`` (and ``/v1/models/{id}``),
``GET /healthz``, ``GET /metrics``. Every chat request (refined or passed through)
takes a slot of the `Gate`: ``concurrency`` run at once, ``queue`` more wait, and the
next one is answered ``429`` with ``Retry-After`` at once. A refine runs as a task of
its own that holds its slot, so a client that goes away cannot leak one; its run is
cancelled (streamed or not) and counted with status ``499``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from redline.errors import LLMError, RedlineError
from redline.serve._metrics import Metrics
from redline.serve.protocol import (
    MAX_DEPTH,
    ApiError,
    ChatPlan,
    completion,
    completion_id,
    model_id,
    plan_request,
    progress_comment,
    result_error,
    run_name,
    sse_data,
    stream_chunks,
)
from redline.serve.runs import RunTable
from redline.types import RefineResult

__all__ = ["Gate", "ServeSettings", "begin_shutdown", "create_app"]

log = logging.getLogger("redline.serve")

_GRACE = 5.0  # seconds past the loop's own deadline before a request is cut off
_KEEPALIVE = 15.0  # seconds between SSE comments while a streamed run is quiet


class ServeSettings(BaseModel):
    """The server's limits and its key (the runs' budgets are the `RunTable`'s)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    api_key: SecretStr | None = None
    """Clients must send ``Authorization: Bearer <key>`` (None: no auth)."""
    concurrency: int = Field(default=16, ge=1)
    """Chat requests handled at once."""
    queue: int = Field(default=64, ge=0)
    """Chat requests waiting for a slot; one more is answered 429."""
    max_body_bytes: int = Field(default=1 << 20, ge=1)
    """The largest request body; larger is answered 413."""
    request_timeout: float = Field(default=300.0, gt=0)
    """Seconds a request may wait for a slot (then 503) and, plus a 5 s grace, run
    (then 504). The runs' ``max_seconds`` is capped at it, so a loop normally stops and
    answers with its best so far before."""


class Gate:
    """``concurrency`` slots and a waiting line of at most ``queue`` requests."""

    def __init__(self, concurrency: int, queue: int) -> None:
        self.concurrency = concurrency
        self.queue = queue
        self.active = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(concurrency)
        self._mean_seconds = 1.0  # moving average of a slot's holding time

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the line ahead at the recent pace."""
        ahead = (self.waiting + self.active) / self.concurrency
        return max(1, min(60, math.ceil(ahead * self._mean_seconds)))

    async def enter(self, timeout: float) -> float:
        """Take a slot (waiting at most `timeout` seconds); returns when it was taken.

        Raises:
            ApiError: 429 when the line is full, 503 when the wait timed out.
        """
        if self._slots.locked() and self.waiting >= self.queue:
            raise ApiError(429, f"the server is busy ({self.active} requests running, "
                           f"{self.waiting} waiting); retry later", type="rate_limit_error",
                           code="server_busy",
                           headers={"Retry-After": str(self.retry_after())})
        self.waiting += 1
        try:
            async with asyncio.timeout(timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise ApiError(503, f"no slot came free in {timeout:g} s; retry later",
                           type="server_error", code="queue_timeout",
                           headers={"Retry-After": str(self.retry_after())}) from None
        finally:
            self.waiting -= 1
        self.active += 1
        return time.monotonic()

    def leave(self, entered: float) -> None:
        """Give the slot back."""
        self.active -= 1
        self._slots.release()
        self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * (time.monotonic() - entered)


class _Server:
    def __init__(self, runs: RunTable, settings: ServeSettings) -> None:
        self.runs = runs
        self.settings = settings
        self.metrics = Metrics()
        self.gate = Gate(settings.concurrency, settings.queue)
        self.started = int(time.time())
        self.http: httpx.AsyncClient | None = None
        self._jobs: set[asyncio.Task[Any]] = set()
        self.stopping = False
        """Set by `begin_shutdown`: a cancelled request is then the server's stop."""

    # -- plumbing ------------------------------------------------------------------------

    def check_auth(self, request: Request) -> None:
        key = self.settings.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode(), key.get_secret_value().encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                           type="authentication_error", code="invalid_api_key")

    async def read_json(self, request: Request) -> Any:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        too_large = ApiError(413, f"the request body is larger than {limit} bytes",
                             code="request_too_large")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
        try:
            return json.loads(body)
        except RecursionError:  # the parser recurses per level: deeper than Python goes
            raise ApiError(400, f"the body is nested more than {MAX_DEPTH} levels deep",
                           code="invalid_json") from None
        except ValueError as exc:
            raise ApiError(400, f"the body is not JSON: {exc}", code="invalid_json") from None

    def record(self, label: str, status: int, started: float) -> None:
        self.metrics.requests[(label, status)] += 1
        self.metrics.latency.observe(label, time.monotonic() - started)

    def record_run(self, label: str, result: RefineResult) -> None:
        m = self.metrics
        m.stop_reasons[(label, result.stop_reason.value)] += 1
        m.tokens[(label, "prompt")] += result.usage.input_tokens
        m.tokens[(label, "completion")] += result.usage.output_tokens
        m.llm_calls[label] += result.usage.llm_calls
        m.rounds.observe(label, len(result.rounds))

    # -- routes --------------------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        started = time.monotonic()
        label = "unknown"
        job: _Job | None = None
        try:
            self.check_auth(request)
            body = await self.read_json(request)
            label = _label(body, self.runs.names)
            plan = plan_request(body, runs=self.runs.names)
            label = plan.run
            if plan.kind == "passthrough":
                response = await self.passthrough(plan, body)
            else:
                job = await self.start(plan)
                if plan.stream:
                    return StreamingResponse(self.stream(plan, job, started),
                                             media_type="text/event-stream",
                                             headers={"Cache-Control": "no-cache"})
                if await _client_left(request, job):
                    job.task.cancel()  # as a stream is: nobody is waiting for the answer
                    self.record(label, 499, started)
                    return Response(status_code=499)
                result = await self.outcome(plan, job)
                response = JSONResponse(completion(result, plan))
        except ApiError as exc:
            response = JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
            if exc.status >= 500:
                log.warning("%s: %s %s", label, exc.status, exc.message)
        except asyncio.CancelledError:
            if not self.stopping:
                raise
            # The server's shutdown grace is over and it cancels what still runs: say so
            # in the API's own terms (the ASGI server would answer a plain-text 500).
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            if job is not None:
                job.task.cancel()
            stop = ApiError(503, "the server is shutting down and this request ran past its "
                            "shutdown grace; retry it", type="server_error",
                            code="shutting_down", headers={"Retry-After": "1"})
            response = JSONResponse(stop.body(), status_code=stop.status, headers=stop.headers)
        self.record(label, response.status_code, started)
        return response

    async def start(self, plan: ChatPlan) -> _Job:
        """Take a slot and start the run as a task that gives the slot back."""
        entered = await self.gate.enter(self.settings.request_timeout)
        job = _Job(deadline=time.monotonic() + self.settings.request_timeout + _GRACE)
        on_progress = job.progress if plan.stream else None
        assert plan.task is not None

        async def work() -> RefineResult:
            try:
                async with asyncio.timeout(self.settings.request_timeout + _GRACE):
                    return await self.runs.run(plan.run, plan.task,  # type: ignore[arg-type]
                                               max_tokens=plan.max_tokens,
                                               on_progress=on_progress)
            finally:
                self.gate.leave(entered)

        job.task = asyncio.create_task(work(), name=f"redline serve {plan.run}")
        self._jobs.add(job.task)
        job.task.add_done_callback(self._jobs.discard)
        job.task.add_done_callback(lambda _: job.events.put_nowait(None))
        return job

    async def outcome(self, plan: ChatPlan, job: _Job) -> RefineResult:
        """The finished run's result, or the `ApiError` it answers with."""
        # Waited for, not awaited: a plugin that swallows the cancellation keeps its task
        # (and its slot) alive, but the request is still answered at the deadline.
        await asyncio.wait({job.task}, timeout=max(0.0, job.deadline - time.monotonic()))
        try:
            if not job.task.done():
                job.task.cancel()  # once more: it may listen this time
                raise TimeoutError
            result = job.task.result()
        except TimeoutError:
            raise ApiError(504, f"the run took longer than {self.settings.request_timeout:g} s",
                           type="timeout_error", code="timeout") from None
        except LLMError as exc:  # a rejected key or unknown model always raises
            raise ApiError(502, f"the upstream model refused: {exc}", type="server_error",
                           code="upstream_error") from None
        except RedlineError as exc:
            raise ApiError(500, f"the refine run failed: {exc}", type="server_error",
                           code="refine_failed") from None
        except Exception as exc:  # a plugin's bug must not take the server down
            log.exception("run %s raised", plan.run)
            raise ApiError(500, f"the refine run failed: {type(exc).__name__}: {exc}",
                           type="server_error", code="refine_failed") from None
        self.record_run(plan.run, result)
        error = result_error(result, plan)
        if error is not None:
            raise error
        return result

    async def stream(self, plan: ChatPlan, job: _Job, started: float) -> AsyncIterator[str]:
        status = 200
        id, created = completion_id(), int(time.time())
        try:
            while (left := job.deadline - time.monotonic()) > 0:
                try:
                    event = await asyncio.wait_for(job.events.get(), min(_KEEPALIVE, left))
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if event is None:
                    break
                yield event
            try:
                result = await self.outcome(plan, job)
            except ApiError as exc:
                status = exc.status
                yield sse_data(exc.body())
            else:
                for chunk in stream_chunks(result, plan, id=id, created=created):
                    yield sse_data(chunk)
            yield sse_data("[DONE]")
        finally:
            if not job.task.done():  # the client went away, or the run is past its time
                job.task.cancel()
                if status == 200:  # cut off by the server's stop, or the client left
                    status = 503 if self.stopping else 499
            self.record(plan.run, status, started)

    async def passthrough(self, plan: ChatPlan, body: dict[str, Any]) -> Response:
        upstream = self.runs.upstream(plan.run)
        if upstream is None:
            raise ApiError(400, f"this request needs the upstream model as it is "
                           f"({plan.reason}), and the model of run {plan.run!r} is not served "
                           "over HTTP (the embedded or an in-process model)",
                           code="passthrough_unavailable")
        self.metrics.passthrough[(plan.run, plan.reason)] += 1
        assert self.http is not None
        url = f"{upstream.base_url}/chat/completions"
        headers = {"Authorization": f"Bearer {upstream.api_key}"} if upstream.api_key else {}
        sent = {**body, "model": upstream.model}
        ours = {"x-redline-passthrough": plan.reason.replace(" ", "-")}
        entered = await self.gate.enter(self.settings.request_timeout)
        try:
            reply = await self.http.send(self.http.build_request(
                "POST", url, json=sent, headers=headers), stream=True)
        except httpx.HTTPError as exc:
            self.gate.leave(entered)
            raise ApiError(502, f"the upstream model could not be reached "
                           f"({type(exc).__name__})", type="server_error",
                           code="upstream_unreachable") from None
        media = reply.headers.get("content-type", "application/json")
        if not plan.stream or reply.status_code != 200:
            try:
                content = await reply.aread()
            finally:
                await reply.aclose()
                self.gate.leave(entered)
            return Response(content, status_code=reply.status_code, media_type=media,
                            headers=ours)
        self.gate.leave(entered)  # a relayed stream is paced by the upstream, not by us

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for piece in reply.aiter_raw():
                    yield piece
            finally:
                await reply.aclose()

        return StreamingResponse(relay(), media_type=media, headers=ours)

    async def models(self, request: Request) -> Response:
        try:
            self.check_auth(request)
        except ApiError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        data = [{"id": model_id(name), "object": "model", "created": self.started,
                 "owned_by": "redline"} for name in self.runs.names]
        wanted = request.path_params.get("model")
        if wanted is None:
            return JSONResponse({"object": "list", "data": data})
        for entry in data:
            if entry["id"] == wanted:
                return JSONResponse(entry)
        error = ApiError(404, f"The model {wanted!r} does not exist", param="model",
                         code="model_not_found")
        return JSONResponse(error.body(), status_code=404)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": [model_id(n) for n in self.runs.names],
                             "active": self.gate.active, "waiting": self.gate.waiting})

    async def metrics_page(self, request: Request) -> Response:
        try:
            self.check_auth(request)
        except ApiError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        gate = self.gate
        text = self.metrics.render({
            "redline_serve_requests_active": ("Chat requests running now.",
                                              lambda: gate.active),
            "redline_serve_requests_waiting": ("Chat requests waiting for a slot.",
                                               lambda: gate.waiting),
        })
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


def _label(body: Any, runs: list[str]) -> str:
    """The run a request names, for the metrics (``unknown``: none served)."""
    model = body.get("model") if isinstance(body, dict) else None
    name = run_name(model) if isinstance(model, str) else ""
    return name if name in runs else "unknown"


async def _client_left(request: Request, job: _Job) -> bool:
    """Wait until the run ends or its deadline passes; True when the client disconnected
    before that (its request body already read, the next message is the disconnect)."""

    async def disconnect() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watch = asyncio.create_task(disconnect())
    try:
        await asyncio.wait({job.task, watch},
                           timeout=max(0.0, job.deadline - time.monotonic()),
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not watch.done():
            watch.cancel()
    return (watch.done() and not watch.cancelled() and watch.exception() is None
            and not job.task.done())


class _Job:
    """A refine in flight: its task and, when streamed, its progress comments."""

    def __init__(self, deadline: float) -> None:
        self.task: asyncio.Task[RefineResult]
        self.events: asyncio.Queue[str | None] = asyncio.Queue()
        self.deadline = deadline
        """When the request is answered 504 if the run has not finished (monotonic)."""

    def progress(self, progress: Any) -> None:
        comment = progress_comment(progress)
        if comment is not None:
            self.events.put_nowait(comment)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = (f"no route for {request.method} {request.url.path}" if exc.status_code == 404
               else f"{request.method} is not allowed on {request.url.path}")
    error = ApiError(exc.status_code, message, code="not_found" if exc.status_code == 404
                     else "method_not_allowed")
    return JSONResponse(error.body(), status_code=exc.status_code)


def begin_shutdown(app: Starlette) -> None:
    """Tell `app` that its ASGI server is stopping.

    A chat request the server then cancels (it ran past the server's shutdown grace) is
    answered ``503`` with code ``shutting_down`` and ``Retry-After: 1``, not the ASGI
    server's plain-text 500; its run is cancelled. ``redline serve`` calls this on
    SIGINT / SIGTERM; with another server, call it from its shutdown hook before it
    cancels the requests in flight.

    Args:
        app: an app made by `create_app`.

    Raises:
        TypeError: `app` was not made by `create_app`.
    """
    server = getattr(app.state, "server", None)
    if not isinstance(server, _Server):
        raise TypeError("begin_shutdown: expected an app made by redline.serve.create_app")
    server.stopping = True


def create_app(runs: RunTable, settings: ServeSettings | None = None) -> Starlette:
    """The ASGI app serving `runs` (preflight them first: `RunTable.preflight`).

    Args:
        runs: the named runs; a request's ``model`` ``redline/<name>`` picks one.
        settings: limits and the server's key.
    """
    server = _Server(runs, settings or ServeSettings())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=server.settings.request_timeout,
                                     limits=limits) as server.http:
            yield
        for job in list(server._jobs):
            job.cancel()

    app = Starlette(routes=[
        Route("/v1/chat/completions", server.chat, methods=["POST"]),
        Route("/v1/models", server.models, methods=["GET"]),
        Route("/v1/models/{model:path}", server.models, methods=["GET"]),
        Route("/healthz", server.healthz, methods=["GET"]),
        Route("/metrics", server.metrics_page, methods=["GET"]),
    ], exception_handlers={404: _http_error, 405: _http_error}, lifespan=lifespan)
    app.state.server = server
    return app
