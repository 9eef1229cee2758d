"""What every HTTP client in redline retries, and how long it waits: one place.

The chat client (openai), the search client and the served reward-model client
(httpx) each say how to read an error's HTTP status and headers; the rules are here.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

__all__ = ["is_transient_status", "retry_after_seconds", "retrying", "root_cause"]

HeadersOf = Callable[[BaseException], Mapping[str, str] | None]


def is_transient_status(status: int) -> bool:
    """Statuses worth another try: timeouts (408), overload (429), server faults (5xx)."""
    return status in (408, 429) or status >= 500


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a chain: for a failed connection, the useful line
    ("[Errno 111] Connection refused") sits below the wrappers of openai, httpx, httpcore."""
    root = exc
    for _ in range(8):
        below = root.__cause__ or root.__context__
        if below is None:
            break
        root = below
    return root


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds asked by ``Retry-After-Ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class _RetryAfterOr:
    """A tenacity wait: the server's ``Retry-After`` (capped) when sent, else ``fallback``."""

    def __init__(self, fallback: Any, cap: float, headers_of: HeadersOf) -> None:
        self.fallback = fallback
        self.cap = cap
        self.headers_of = headers_of

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        headers = self.headers_of(exc) if exc is not None else None
        if headers is not None:
            delay = retry_after_seconds(headers)
            if delay is not None:
                return min(delay, self.cap)
        return float(self.fallback(state))


def retrying(*, transient: Callable[[BaseException], bool], headers_of: HeadersOf,
             max_attempts: int, max_wait: float, multiplier: float = 0.5,
             before_sleep: Callable[[RetryCallState], None] | None = None) -> AsyncRetrying:
    """A tenacity template: exponential backoff with jitter, honouring ``Retry-After``.

    Tenacity keeps per-run state on the object, so run a ``.copy()`` per call.
    """
    return AsyncRetrying(
        retry=retry_if_exception(transient),
        stop=stop_after_attempt(max_attempts),
        wait=_RetryAfterOr(wait_random_exponential(multiplier=multiplier, max=max_wait),
                           cap=max_wait, headers_of=headers_of),
        before_sleep=before_sleep,
        reraise=False,
    )
