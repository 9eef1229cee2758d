"""The HTTP side of `OpenAIChat`: a pool of connections for many concurrent requests to
one server, and the three ways an attempt fails before it has a usable answer.

```
AttemptFailed
├── StatusFailed       the server answered with an error status (status, headers, body)
├── TimedOut           no answer within the timeout
└── ConnectionFailed   refused, reset, dropped before the answer, a proxy or TLS failure
```

`PooledClient` sends every request of one event loop through one aiohttp session: one
connection pool with no cap of its own (the callers' concurrency is the cap), kept-alive
connections reused. It replaced a set of httpx pools: on a 2-core machine, 500 items x 3
calls 64 at a time cost ~1.5 ms of client CPU per request through httpx (one httpx pool
re-checks every connection on every request: 16x the server's time through one pool of
64) and ~0.4 ms through aiohttp (``bench/batch_overhead.py``).

The session keeps the settings the openai client used: the environment's proxies
(``HTTPS_PROXY``, ``NO_PROXY``, ...) and certificate settings (``SSL_CERT_FILE``, built
as httpx builds them), redirects followed, and the timeout for connecting and for each
wait for data (``sock_read``: a server that takes longer than the timeout to start
answering, queueing included, times out).
"""

from __future__ import annotations

import ssl
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import aiohttp

__all__ = ["AttemptFailed", "ConnectionFailed", "PooledClient", "Reply", "StatusFailed",
           "TimedOut"]


class AttemptFailed(Exception):
    """One HTTP attempt failed (retried or reported by the caller, never raised to users)."""


class StatusFailed(AttemptFailed):
    """The server answered with an error status."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        super().__init__(f"HTTP {status}")


class TimedOut(AttemptFailed):
    """No answer within the timeout."""


class ConnectionFailed(AttemptFailed):
    """The request or its answer was lost on the way (the cause says how)."""


class Reply(NamedTuple):
    """A whole answer: its status, headers and body."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes


class PooledClient:
    """Requests to one server over one aiohttp connection pool (see the module).

    Made inside the event loop that uses it (`OpenAIChat` keeps one per loop).

    Args:
        headers: sent with every request.
        timeout: seconds to connect, and to wait for each piece of the answer.
    """

    def __init__(self, *, headers: Mapping[str, str], timeout: float | None) -> None:
        self.headers = dict(headers)
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str], str | None] = {}

    def __repr__(self) -> str:
        return f"<PooledClient: {self.connections} connection(s)>"

    @property
    def connections(self) -> int:
        """Connections open now (in use or kept alive)."""
        session = self._session
        if session is None or session.closed:
            return 0
        connector = session.connector
        kept = getattr(connector, "_conns", {})
        return len(getattr(connector, "_acquired", ())) + sum(map(len, kept.values()))

    async def request(self, method: str, url: str, *, content: bytes | None = None,
                      timeout: float | None = None) -> Reply:
        """Send one request and read its whole answer.

        Args:
            method: ``"GET"`` or ``"POST"``.
            url: the absolute URL.
            content: the body (JSON, as bytes).
            timeout: this request's timeout instead of the client's.

        Returns:
            The answer, for a status below 400.

        Raises:
            StatusFailed: a status of 400 or more.
            TimedOut: no answer within the timeout.
            ConnectionFailed: anything else that lost the request or its answer.
        """
        import aiohttp

        session = self._session or self._open()
        options: dict[str, Any] = {}
        proxy = self._proxy_for(url)
        if proxy is not None:
            options["proxy"] = proxy
        if content is not None:
            options |= {"data": content, "headers": {"Content-Type": "application/json"}}
        if timeout is not None:  # (timeout=None would mean none at all to aiohttp)
            options["timeout"] = _timeout(timeout)
        try:
            async with session.request(method, url, **options) as response:
                reply = Reply(response.status, response.headers, await response.read())
        except TimeoutError as exc:  # aiohttp's own timeouts are TimeoutErrors too
            raise TimedOut(str(exc) or type(exc).__name__) from exc
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(str(exc) or type(exc).__name__) from exc
        if reply.status_code >= 400:
            raise StatusFailed(reply.status_code, reply.headers, reply.content)
        return reply

    def _open(self) -> aiohttp.ClientSession:
        import aiohttp
        import httpx

        # What httpx (and so the openai client) builds for verify=True with trust_env:
        # certifi, or the environment's SSL_CERT_FILE / SSL_CERT_DIR.
        tls: ssl.SSLContext = httpx.create_ssl_context()
        # trust_env=False: with it, aiohttp reads the proxy settings and ~/.netrc on
        # every request, through a worker thread (two thread hops a request); the
        # proxy is read here once per host instead (`_proxy_for`).
        self._session = aiohttp.ClientSession(
            headers=self.headers, timeout=_timeout(self.timeout), trust_env=False,
            connector=aiohttp.TCPConnector(limit=0, ssl=tls),
            # The caller reads the body as JSON itself, whatever the server calls it.
            raise_for_status=False, auto_decompress=True)
        return self._session

    def _proxy_for(self, url: str) -> str | None:
        """The environment's proxy for `url` (``HTTPS_PROXY``, ``NO_PROXY``, ...), read
        once per scheme and host."""
        parts = urllib.parse.urlsplit(url)
        key = (parts.scheme, parts.netloc)
        if key not in self._proxies:
            proxy = urllib.request.getproxies().get(parts.scheme)
            # .hostname: without credentials, port or an IPv6 address's brackets.
            if proxy and urllib.request.proxy_bypass(parts.hostname or ""):
                proxy = None
            self._proxies[key] = proxy or None
        return self._proxies[key]

    async def aclose(self) -> None:
        """Close the pool's connections."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()  # returns when the sockets are closed (a test checks)


def _timeout(seconds: float | None) -> aiohttp.ClientTimeout:
    import aiohttp

    return aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)
