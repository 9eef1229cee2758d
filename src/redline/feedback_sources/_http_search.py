"""`HttpSearch`: a JSON search API over HTTP (SearxNG by default), with retries."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict
from tenacity import (
    RetryError,
)

from redline._aio import PerLoop
from redline._retry import is_transient_status, retrying, root_cause
from redline.errors import ConfigError, FeedbackSourceError
from redline.feedback_sources._hits import Hit

__all__ = ["FieldMap", "HttpSearch"]

log = logging.getLogger("redline.feedback_sources")


class FieldMap(BaseModel):
    """Where a JSON search API puts its results and each result's fields.

    Each value is a dotted path (``"data.items"``, ``"_source.title"``, ``"links.0"``);
    ``""`` for `results` means the body itself is the list, None means the API has no
    such field. The defaults read SearxNG's ``format=json`` answers.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    results: str = "results"
    """The list of results in the response body."""
    title: str | None = "title"
    """A result's title."""
    text: str | None = "content"
    """A result's snippet or text."""
    url: str | None = "url"
    """A result's address."""
    id: str | None = None
    """A result's id; None uses the url, else ``<endpoint>#<rank>``."""
    score: str | None = "score"
    """A result's relevance score."""


class HttpSearch:
    """A search service that answers HTTP queries in JSON (SearxNG by default).

    ``HttpSearch("http://127.0.0.1:8888/search")`` sends ``GET
    /search?q=QUERY&format=json`` and reads SearxNG's ``results``; other APIs need their
    `params`, `query_param`, maybe `k_param`, `method` and a `FieldMap`. Timeouts,
    refused connections, 408, 429 and 5xx answers are retried with jittered exponential
    backoff (a ``Retry-After`` in seconds is honoured, capped by `max_wait`); other HTTP
    errors fail at once.

    Args:
        url: the search endpoint.
        params: fixed query parameters (or JSON body fields for POST); None sends
            SearxNG's ``{"format": "json"}``, ``{}`` sends none.
        fields: where the results and their fields are in the answer.
        query_param: the parameter carrying the query.
        k_param: the parameter asking for `k` results, when the API has one (SearxNG
            has none: its answer is cut to `k`).
        method: ``"GET"`` (query string) or ``"POST"`` (a JSON body).
        headers: extra headers, e.g. an API key.
        timeout: seconds allowed for one attempt.
        max_attempts: attempts per query, the first included.
        max_wait: the longest pause between attempts, in seconds.

    Raises:
        ConfigError: a URL that is not http(s), or a non-positive timeout or attempts.
    """

    def __init__(self, url: str, *, params: Mapping[str, Any] | None = None,
                 fields: FieldMap | None = None, query_param: str = "q",
                 k_param: str | None = None, method: Literal["GET", "POST"] = "GET",
                 headers: Mapping[str, str] | None = None, timeout: float = 10.0,
                 max_attempts: int = 3, max_wait: float = 5.0) -> None:
        if not re.match(r"https?://[^/]", url):
            raise ConfigError(f"HttpSearch: {url!r} is not an http(s) URL")
        if timeout <= 0 or max_attempts < 1 or max_wait < 0:
            raise ConfigError(f"HttpSearch: need timeout > 0, max_attempts >= 1 and "
                              f"max_wait >= 0, got {timeout}, {max_attempts}, {max_wait}")
        self.url = url
        self.params = dict({"format": "json"} if params is None else params)
        self.fields = fields or FieldMap()
        self.query_param = query_param
        self.k_param = k_param
        self.method = method
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_wait = max_wait
        # Connections belong to one event loop: a client per loop, closed with it.
        self._clients: PerLoop[httpx.AsyncClient] = PerLoop(
            lambda: httpx.AsyncClient(timeout=self.timeout, headers=self.headers,
                                      follow_redirects=True),
            close=httpx.AsyncClient.aclose)

    def __repr__(self) -> str:
        return f"HttpSearch({self.url!r})"

    async def search(self, query: str, k: int = 5) -> list[Hit]:
        """Up to `k` results for `query`, in the service's order.

        Raises:
            FeedbackSourceError: the service is down, timed out, refused the query or
                answered with something that is not the expected JSON.
        """
        values = {**self.params, self.query_param: query}
        if self.k_param:
            values[self.k_param] = k
        attempts = retrying(
            transient=_is_transient, headers_of=_headers_of, max_attempts=self.max_attempts,
            max_wait=self.max_wait, multiplier=0.25,
            before_sleep=lambda s: log.warning(
                "search %s: attempt %d failed (%s); retrying", self.url, s.attempt_number,
                self._describe(s.outcome.exception() if s.outcome else None)))
        try:
            response: httpx.Response = await attempts(self._request, values)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            raise FeedbackSourceError(
                f"search service {self.url} failed {exc.last_attempt.attempt_number} times; "
                f"last error: {self._describe(last)}") from last
        except httpx.HTTPStatusError as exc:
            hint = (" (SearxNG: add 'json' to search.formats in settings.yml)"
                    if exc.response.status_code == 403 and self.params.get("format") == "json"
                    else "")
            raise FeedbackSourceError(
                f"search service {self.url} rejected the query: "
                f"{self._describe(exc)}{hint}") from exc
        return self._hits(response, k)

    async def preflight(self) -> None:
        """Check once (no retries) that the service accepts a connection at all.

        Any HTTP answer passes (a service may refuse an empty query), and so does a
        service slow to answer: only a connection that fails does not.

        Raises:
            ConfigError: the service cannot be reached.
        """
        timeout = httpx.Timeout(min(5.0, self.timeout), read=0.5)
        try:
            async with httpx.AsyncClient(timeout=timeout, headers=self.headers) as client:
                await client.get(self.url)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as exc:
            raise ConfigError(f"search service {self.url} cannot be reached: "
                              f"{type(root_cause(exc)).__name__}: {root_cause(exc)}") from None
        except httpx.HTTPError:
            pass  # it answered, or is busy answering: the run will tell

    async def _request(self, values: dict[str, Any]) -> httpx.Response:
        client = self._clients.get()
        if self.method == "POST":
            response = await client.post(self.url, json=values)
        else:
            response = await client.get(self.url, params=values)
        response.raise_for_status()
        return response

    async def aclose(self) -> None:
        """Close the HTTP connections of the current event loop's client (those of
        other loops close when their loop shuts down)."""
        await self._clients.aclose()

    def _hits(self, response: httpx.Response, k: int) -> list[Hit]:
        try:
            body = response.json()
        except ValueError:
            raise FeedbackSourceError(
                f"search service {self.url} answered with something that is not JSON "
                f"({response.headers.get('content-type', 'no content type')}): "
                f"{response.text[:200]!r}") from None
        f = self.fields
        results = _dig(body, f.results) if f.results else body
        if not isinstance(results, list):
            raise FeedbackSourceError(
                f"search service {self.url} answered without a list of results at "
                f"{f.results!r}; set HttpSearch(fields=FieldMap(results=...))")
        hits: list[Hit] = []
        for rank, item in enumerate(results, 1):
            if len(hits) == k:
                break
            if not isinstance(item, dict):
                continue
            url = _text(_dig(item, f.url)) or None
            score = _dig(item, f.score)
            hits.append(Hit(
                id=_text(_dig(item, f.id)) or url or f"{self.url}#{rank}",
                title=_text(_dig(item, f.title)), text=_text(_dig(item, f.text)), url=url,
                score=float(score) if isinstance(score, int | float) and not isinstance(score, bool)
                else None))
        return hits

    def _describe(self, exc: BaseException | None) -> str:
        if isinstance(exc, httpx.HTTPStatusError):
            return f"HTTP {exc.response.status_code}: {exc.response.text.strip()[:200]}"
        if isinstance(exc, httpx.TimeoutException):
            return f"no answer within the {self.timeout:g} s timeout"
        if isinstance(exc, httpx.TransportError):
            root = root_cause(exc)
            return f"connection failed ({type(root).__name__}: {root})"
        return repr(exc)


def _headers_of(exc: BaseException) -> Mapping[str, str] | None:
    return exc.response.headers if isinstance(exc, httpx.HTTPStatusError) else None


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        return is_transient_status(exc.response.status_code)
    return isinstance(exc, httpx.TransportError)  # timeouts, refused connections, resets




def _dig(value: Any, path: str | None) -> Any:
    """The value at a dotted path (``"a.b.0.c"``), or None where it leads nowhere."""
    if path is None:
        return None
    for key in path.split("."):
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
    return value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(_text(v) for v in value)
    return value if isinstance(value, str) else json.dumps(value)
