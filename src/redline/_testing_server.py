"""A scripted OpenAI-compatible chat server on 127.0.0.1, for tests.

Standard library only: a `ThreadingHTTPServer` in a daemon thread. It speaks just
enough of the API for `openai.AsyncOpenAI` and `redline.llm.OpenAIChat`:

- ``GET /v1/models`` lists the one model;
- ``POST /v1/chat/completions`` answers from a script: each reply in order, or a
  handler function;
- anything else is a 404 with an OpenAI-style JSON error.

Token counts are words, not tokens: ``prompt_tokens`` is the number of
whitespace-separated words in all message contents, ``completion_tokens`` the number in
the reply. A reply longer than the request's ``max_tokens`` words is cut to that many
words with ``finish_reason="length"``.

Example:
    >>> with OpenAICompatServer(["Hello!", Fail(429, headers={"Retry-After": "0"})]) as server:
    ...     chat = OpenAIChat(server.model, base_url=server.base_url)
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

__all__ = ["Fail", "OpenAICompatServer"]


@dataclass(frozen=True)
class Fail:
    """A scripted non-standard response: an HTTP error, any raw body, or a dropped line.

    The class methods build the faults a real deployment meets (`truncated_json`,
    `html`, `no_choices`, `wrong_types`, `dropped`); `malformed` gives the 200s whose
    body is not a chat completion.

    Attributes:
        status: the HTTP status, e.g. 429, 500, or 200 with a malformed ``body``.
        body: a JSON-able value sent as JSON, or a ``str`` sent verbatim as text; None
            sends ``{"error": {"message": "scripted failure <status>", ...}}``.
        headers: extra response headers, e.g. ``{"Retry-After": "0"}``.
        content_type: the ``Content-Type`` to send instead of the one the body implies
            (``application/json`` with a ``str`` body sends broken JSON as JSON).
        disconnect: close the connection without answering (``status`` is unused).
    """

    status: int
    body: Any = None
    headers: Mapping[str, str] | None = None
    content_type: str | None = None
    disconnect: bool = False

    @classmethod
    def truncated_json(cls) -> Fail:
        """A 200 whose JSON body is cut off mid-way."""
        return cls(200, body='{"id": "chatcmpl-1", "object": "chat.completion", "choices": '
                             '[{"index": 0, "message": {"role": "assistant", "cont',
                   content_type="application/json")

    @classmethod
    def html(cls) -> Fail:
        """A 200 with a proxy's HTML page instead of JSON."""
        return cls(200, body="<html><body><h1>Service temporarily unavailable</h1>"
                             "</body></html>", content_type="text/html; charset=utf-8")

    @classmethod
    def no_choices(cls) -> Fail:
        """A 200 chat completion with an empty ``choices`` list."""
        return cls(200, body={"id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                              "model": "test-model", "choices": []})

    @classmethod
    def wrong_types(cls) -> Fail:
        """A 200 whose fields have the wrong types (``choices`` a string, and so on)."""
        return cls(200, body={"id": 7, "object": "chat.completion", "created": "now",
                              "model": ["m"], "choices": "none", "usage": "lots"})

    @classmethod
    def dropped(cls) -> Fail:
        """The connection closes before any response is sent."""
        return cls(0, disconnect=True)

    @classmethod
    def malformed(cls) -> tuple[Fail, ...]:
        """Every 200 whose body is not a chat completion, one of each kind."""
        return (cls.truncated_json(), cls.html(), cls.no_choices(), cls.wrong_types())


Reply = str | Fail
"""What the script answers to one chat request: a reply text or a `Fail`."""


class OpenAICompatServer:
    """A loopback OpenAI-compatible server answering from a script.

    It starts at construction on a free port of 127.0.0.1 and stops on `close` (or at
    the end of a ``with`` / ``async with`` block).

    Args:
        replies: answers to consume in order, one per chat request: a ``str`` is a 200
            reply with that text, a `Fail` is sent as it says. When they run out (or
            when none were given) the server echoes: ``"echo: <last user message>"``.
        handler: instead of ``replies``, a function from the request's JSON body to a
            reply (``str`` or `Fail`). It runs in a server thread, so it may sleep to
            simulate a slow server; if it raises, the client gets a 500.
        model: the model name ``/v1/models`` lists and replies carry when the request
            names none.
    """

    def __init__(
        self,
        replies: Iterable[Reply] | None = None,
        *,
        handler: Callable[[dict[str, Any]], Reply] | None = None,
        model: str = "test-model",
    ) -> None:
        if replies is not None and handler is not None:
            raise ValueError("give replies or handler, not both")
        self.model = model
        self._replies: deque[Reply] = deque(replies or ())
        self._handler = handler
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._connections: set[socket.socket] = set()
        self._accepted = 0
        self._closed = False
        self._httpd = _HTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"OpenAICompatServer:{self.port}", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The server's root, e.g. ``http://127.0.0.1:54321``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The API root to give a client, e.g. ``http://127.0.0.1:54321/v1``."""
        return f"{self.url}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The JSON bodies of the chat requests received so far, in order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def connections(self) -> int:
        """TCP connections accepted so far (a client that keeps its connections alive
        opens at most as many as it has requests in flight)."""
        with self._lock:
            return self._accepted

    def close(self) -> None:
        """Stop serving and drop open connections. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # the client closed it already
        self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        import asyncio

        await asyncio.to_thread(self.close)

    def __repr__(self) -> str:
        return f"OpenAICompatServer(base_url={self.base_url!r}, model={self.model!r})"

    def _next_reply(self, request: dict[str, Any]) -> Reply:
        with self._lock:
            self._requests.append(request)
            if self._handler is None and self._replies:
                return self._replies.popleft()
        if self._handler is not None:
            return self._handler(request)
        return "echo: " + _last_user_text(request)

    def _completion(self, request: dict[str, Any], text: str) -> dict[str, Any]:
        words = text.split()
        finish_reason = "stop"
        limit = request.get("max_tokens")
        if isinstance(limit, int) and len(words) > limit:
            words, finish_reason = words[:limit], "length"
            text = " ".join(words)
        prompt_tokens = sum(len(str(m.get("content") or "").split())
                            for m in request.get("messages", ()))
        return {
            "id": f"chatcmpl-{len(self._requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model") or self.model,
            "choices": [{"index": 0, "finish_reason": finish_reason, "logprobs": None,
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
                      "total_tokens": prompt_tokens + len(words)},
        }


def _last_user_text(request: dict[str, Any]) -> str:
    for message in reversed(request.get("messages") or ()):
        if isinstance(message, dict) and message.get("role") == "user":
            return str(message.get("content") or "")
    return ""


class _HTTPServer(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: when a client opens dozens of
    # connections at once and the accepting thread falls behind (a loaded machine), the
    # kernel drops the overflow and the client waits on connections the server never
    # sees (a CI run hung on 64 concurrent calls). Real servers listen with 128-2048.
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer (a cancelled run, a timeout) is normal;
        # socketserver would print a traceback to stderr for it. Anything else is not.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def _error(status: int, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "test_server_error", "code": status}}


def _make_handler(server: OpenAICompatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
        # Headers and body go out in two writes; with Nagle on, the second waits for
        # the client's delayed ACK (~40 ms a call).
        disable_nagle_algorithm = True

        def setup(self) -> None:
            super().setup()
            with server._lock:
                server._connections.add(self.connection)
                server._accepted += 1

        def finish(self) -> None:
            with server._lock:
                server._connections.discard(self.connection)
            super().finish()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: tests read server.requests, not stderr

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [
                    {"id": server.model, "object": "model", "created": 0,
                     "owned_by": "redline"}]})
            else:
                self._send(404, _error(404, f"no route for GET {self.path}"))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, _error(404, f"no route for POST {self.path}"))
                return
            try:
                request = json.loads(raw)
            except ValueError as exc:
                self._send(400, _error(400, f"the body is not JSON: {exc}"))
                return
            try:
                reply = server._next_reply(request)
            except Exception as exc:
                self._send(500, _error(500, f"handler raised {exc!r}"))
                return
            if isinstance(reply, Fail) and reply.disconnect:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # the client went first
            elif isinstance(reply, Fail):
                body = reply.body if reply.body is not None else _error(
                    reply.status, f"scripted failure {reply.status}")
                self._send(reply.status, body, reply.headers, reply.content_type)
            elif isinstance(reply, str):
                self._send(200, server._completion(request, reply))
            else:
                self._send(500, _error(500, f"the script gave {reply!r}, not a str or Fail"))

        def _send(self, status: int, body: Any, headers: Mapping[str, str] | None = None,
                  content_type: str | None = None) -> None:
            if isinstance(body, str):
                data, implied = body.encode("utf-8"), "text/plain; charset=utf-8"
            else:
                data, implied = json.dumps(body).encode("utf-8"), "application/json"
            content_type = content_type or implied
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler
