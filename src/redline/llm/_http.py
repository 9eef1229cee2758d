"""The HTTP side of `OpenAIChat`: a pool of connections for many concurrent requests to
one server, and the three ways an attempt fails before it has a usable answer.

```
AttemptFailed
├── StatusFailed       the server answered with an error status (status, headers, body)
├── TimedOut           no answer within the timeout
└── ConnectionFailed   refused, reset, dropped before the answer, a proxy or TLS failure
```

`ShardedClient` spreads requests over several `httpx.AsyncClient`s. One httpx pool
does work proportional to its connections on every request it starts and ends (httpcore
re-checks each connection's state, for each idle one the count of idle ones), so one
pool of 64 busy connections spends more CPU per request than the request itself: on a
2-core machine, 500 x 3 calls 64 at a time took 16x the server's time through one pool
and 2.5x through 16 pools of 4 (``bench/batch_overhead.py``). A request goes to the
least busy pool; a new pool is made only when every pool already has
`ShardedClient.PER_POOL` requests in flight, so one call at a time uses one pool and
one connection, as before.

Every pool is an ordinary ``httpx.AsyncClient`` with the settings the openai client
used: the environment's proxies (``HTTPS_PROXY``, ``NO_PROXY``, ...) and certificate
settings (``SSL_CERT_FILE``), redirects followed, one timeout for connect, write, read
and pool wait. They share one TLS context (building one reads the CA bundle: ~50 ms).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

import httpx

__all__ = ["AttemptFailed", "ConnectionFailed", "ShardedClient", "StatusFailed", "TimedOut"]


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


class ShardedClient:
    """Requests to one server over a growing set of httpx pools (see the module).

    Args:
        headers: sent with every request.
        timeout: seconds for each of connect, write, read and pool wait.
    """

    PER_POOL = 4
    """Requests in flight per pool before another pool is made."""
    MAX_POOLS = 32
    """Pools at most; past that, requests share the least busy ones."""

    def __init__(self, *, headers: Mapping[str, str], timeout: float | None) -> None:
        self.headers = dict(headers)
        self.timeout = timeout
        self._pools: list[_Pool] = []
        self._tls: ssl.SSLContext | None = None

    def __repr__(self) -> str:
        return (f"<ShardedClient: {len(self._pools)} pool(s), "
                f"{sum(p.busy for p in self._pools)} in flight>")

    @property
    def pools(self) -> int:
        """Pools made so far."""
        return len(self._pools)

    async def request(self, method: str, url: str, *, content: bytes | None = None,
                      timeout: float | None = None) -> httpx.Response:
        """Send one request and read its whole answer.

        Args:
            method: ``"GET"`` or ``"POST"``.
            url: the absolute URL.
            content: the body (JSON, as bytes).
            timeout: this request's timeout instead of the client's.

        Returns:
            The response, for a status below 400.

        Raises:
            StatusFailed: a status of 400 or more.
            TimedOut: no answer within the timeout.
            ConnectionFailed: anything else that lost the request or its answer.
        """
        pool = self._pick()
        pool.busy += 1
        try:
            response = await pool.client.request(
                method, url, content=content,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout)
        except httpx.TimeoutException as exc:
            raise TimedOut(str(exc) or type(exc).__name__) from exc
        except httpx.HTTPError as exc:
            raise ConnectionFailed(str(exc) or type(exc).__name__) from exc
        finally:
            pool.busy -= 1
        if response.status_code >= 400:
            raise StatusFailed(response.status_code, response.headers, response.content)
        return response

    def _pick(self) -> _Pool:
        """The least busy pool, or a new one when every pool is busy enough."""
        if self._pools:
            pool = min(self._pools, key=_busy)
            if pool.busy < self.PER_POOL or len(self._pools) >= self.MAX_POOLS:
                return pool
        if self._tls is None:
            # What httpx builds for verify=True with trust_env: certifi, or the
            # environment's SSL_CERT_FILE / SSL_CERT_DIR.
            self._tls = httpx.create_ssl_context()
        pool = _Pool(httpx.AsyncClient(
            headers=self.headers, timeout=httpx.Timeout(self.timeout), verify=self._tls,
            follow_redirects=True, trust_env=True,
            # No cap of our own: the callers' concurrency is the cap, and a pool must
            # never wait for a connection that another pool holds.
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None)))
        self._pools.append(pool)
        return pool

    async def aclose(self) -> None:
        """Close every pool's connections."""
        pools, self._pools = self._pools, []
        for pool in pools:
            await pool.client.aclose()


class _Pool:
    __slots__ = ("busy", "client")

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.busy = 0
        """Requests in flight."""


def _busy(pool: _Pool) -> int:
    return pool.busy
