"""`ServedRewardModel`: a reward model served by vLLM or text-embeddings-inference."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from tenacity import RetryCallState, RetryError

from redline._aio import PerLoop, gather_all
from redline._retry import is_transient_status, retrying, root_cause
from redline.errors import ConfigError, CriticError, FeedbackSourceError
from redline.feedback_sources._batcher import MicroBatcher
from redline.feedback_sources._rewards import Reward

__all__ = ["ServedRewardModel"]

log = logging.getLogger("redline.feedback_sources")

WireProtocol = Literal["vllm", "tei"]
_ENDPOINTS = {"classify": "vllm", "pooling": "vllm", "predict": "tei"}
_DEFAULT_ENDPOINT = {"vllm": "classify", "tei": "predict"}


class _Status(Exception):
    """An HTTP error status from the server."""

    def __init__(self, response: httpx.Response) -> None:
        self.status = response.status_code
        self.headers = response.headers
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        if isinstance(body, dict):
            body = body.get("message") or body.get("error") or body.get("detail") or body
            if isinstance(body, dict):
                body = body.get("message") or body
        self.message = str(body).strip()[:500] or response.reason_phrase
        super().__init__(f"HTTP {self.status}: {self.message}")


class ServedRewardModel:
    """A reward model served over HTTP by vLLM or TEI: a `RewardSource`.

    This is how reward models on other machines and clusters are used: the server holds
    the model (and batches on its GPU), redline sends HTTP requests. Concurrent calls
    are coalesced into batched requests; transient failures (429, 408, 5xx, timeouts,
    refused connections) are retried with jittered backoff, then raise
    `FeedbackSourceError` naming the URL. It is not declared deterministic: the server
    batches requests its own way, and in bfloat16 the batch an input lands in moves its
    reward.

    Wire formats (as the servers define them):

    **vLLM** (``vllm serve MODEL --runner pooling``; a sequence-classification reward model
    such as Skywork-Reward-V2), ``POST /classify`` or ``POST /pooling``:

    - chat-style, one conversation per request (the server applies the model's chat
      template)::

          {"model": "...", "messages": [{"role": "user", "content": PROMPT},
                                        {"role": "assistant", "content": ANSWER}],
           "use_activation": false, "truncate_prompt_tokens": -1, "truncation_side": "left"}

    - completion-style, a batch of pre-rendered texts per request (with ``render=``)::

          {"model": "...", "input": [TEXT, ...], "use_activation": false, ...}

    - ``/classify`` answers ``{"data": [{"index": 0, "label": "LABEL_0", "probs": [REWARD],
      "num_classes": 1}, ...], ...}``; ``/pooling`` answers ``{"data": [{"index": 0,
      "object": "pooling", "data": [REWARD]}, ...], ...}`` (a per-token output,
      ``[[R1], [R2], ...]``, is read at its last token). ``use_activation: false`` asks for
      the raw reward rather than its sigmoid (a server that predates the parameter ignores
      it and sends sigmoid(reward): calibrate on what it sends);
      ``truncate_prompt_tokens: -1`` with ``truncation_side: "left"`` cuts an input to the
      model's length keeping its end (pass ``truncate=False`` to servers that reject them).

    **text-embeddings-inference** (``text-embeddings-router --model-id MODEL``),
    ``POST /predict``, a batch of ``[prompt, answer]`` text pairs per request (or ``[TEXT]``
    with ``render=``)::

        {"inputs": [[PROMPT, ANSWER], ...], "raw_scores": true, "truncate": true,
         "truncation_direction": "Left"}

    answered by ``[[{"score": REWARD, "label": "LABEL_0"}], ...]``, one list per input.

    Example:
        >>> rm = ServedRewardModel("http://gpu-1:8000/classify")       # vLLM
        >>> rm = ServedRewardModel("http://gpu-2:8080", protocol="tei")

    Args:
        url: the server, e.g. ``http://host:8000``; a path ending in ``/classify``,
            ``/pooling`` or ``/predict`` names the endpoint (else ``/classify`` for
            vLLM, ``/predict`` for TEI).
        protocol: ``"vllm"`` or ``"tei"``; by default read from the URL's endpoint
            (vLLM when it names none).
        model: the served model's name (vLLM; the server's only model when None).
        render: turns ``(prompt, answer)`` into the model's input text (e.g. with the
            tokenizer's chat template), for batched completion-style requests to vLLM
            and single-text inputs to TEI. Without it, vLLM gets one chat request per
            answer (it batches them on the GPU) and TEI gets text pairs.
        batch_size: the most inputs in one batched request (TEI's default limit is 32).
        max_wait_ms: how long the first call waits for others to batch with.
        truncate: ask the server to cut inputs longer than the model's limit, keeping
            their end (where the reward is read).
        timeout: seconds allowed for one HTTP attempt.
        max_attempts: attempts per request, the first included.
        max_wait: the longest pause between attempts, in seconds.
        api_key: sent as ``Authorization: Bearer`` (vLLM and TEI ``--api-key``).

    Attributes:
        requests: HTTP requests sent so far, retries included.

    Raises:
        ConfigError: a URL that is not http(s), an unknown protocol, or one that does
            not serve the URL's endpoint, or a bad setting.
    """

    deterministic = False
    """The server batches its own way: in bfloat16 that moves a reward by ~1e-2."""

    def __init__(self, url: str, *, protocol: WireProtocol | None = None,
                 model: str | None = None,
                 render: Callable[[str, str], str] | None = None, batch_size: int = 32,
                 max_wait_ms: float = 2.0, truncate: bool = True, timeout: float = 30.0,
                 max_attempts: int = 4, max_wait: float = 10.0,
                 api_key: str | None = None) -> None:
        self.url, self.protocol, self.endpoint = _resolve_url(url, protocol)
        if batch_size < 1 or max_attempts < 1 or timeout <= 0 or max_wait < 0 or max_wait_ms < 0:
            raise ConfigError(f"reward server {self.url}: batch_size and max_attempts must be "
                              ">= 1, timeout > 0, max_wait and max_wait_ms >= 0")
        self.model = model
        self.render = render
        self.batch_size = batch_size
        self.truncate = truncate
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.requests = 0
        self._origin = {"server": self.url, "protocol": self.protocol}
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # Connections belong to one event loop: a client per loop, closed with it.
        self._clients: PerLoop[httpx.AsyncClient] = PerLoop(
            lambda: httpx.AsyncClient(timeout=self.timeout), close=httpx.AsyncClient.aclose)
        self._retrying = retrying(transient=_is_transient, headers_of=_headers_of,
                                  max_attempts=max_attempts, max_wait=max_wait,
                                  multiplier=0.25, before_sleep=self._log_retry)
        self._batcher: MicroBatcher[tuple[str, str], Reward] = MicroBatcher(
            self._score, max_batch=batch_size, max_wait=max_wait_ms / 1000, concurrency=4)

    def __repr__(self) -> str:
        return f"ServedRewardModel({self.url!r}, protocol={self.protocol!r})"

    async def rewards(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """The raw rewards of ``(prompt, answer)`` pairs (what `calibrate` fits on).

        Raises:
            FeedbackSourceError: the server could not be reached, or transient failures
                outlasted the retries.
            CriticError: the server rejected the request or sent no usable reward.
        """
        return [r.raw for r in await self.detailed_rewards(pairs)]

    async def detailed_rewards(self, pairs: Sequence[tuple[str, str]]) -> list[Reward]:
        """The rewards with the server as their origin, in batched requests shared with
        concurrent callers (raises as `rewards` does)."""
        return await self._batcher.submit_many(list(pairs))

    async def preflight(self) -> None:
        """Check once (5 s, no retries) that the server can be reached at all.

        Any HTTP answer passes (an endpoint may refuse a GET); only a failed connection
        does not.

        Raises:
            ConfigError: the server cannot be reached.
        """
        try:
            async with httpx.AsyncClient(timeout=min(5.0, self.timeout),
                                         headers=self._headers) as client:
                await client.get(self.url)
        except httpx.HTTPError as exc:
            raise ConfigError(f"reward model server {self.url} cannot be reached: "
                              f"{type(root_cause(exc)).__name__}: {root_cause(exc)}") from None

    async def aclose(self) -> None:
        """Close the HTTP connections of the current event loop's client (those of
        other loops close when their loop shuts down)."""
        await self._clients.aclose()

    async def _score(self, items: list[tuple[str, str]]) -> list[Reward]:
        if self.protocol == "vllm" and self.render is None:
            payloads = [[item] for item in items]  # chat-style: one conversation a request
        else:
            payloads = [items[i:i + self.batch_size]
                        for i in range(0, len(items), self.batch_size)]
        answers = await gather_all(*(self._send(chunk) for chunk in payloads))
        return [Reward(raw=raw, origin=self._origin) for chunk in answers for raw in chunk]

    async def _send(self, items: list[tuple[str, str]]) -> list[float]:
        body = self._request_body(items)
        try:
            data: Any = await self._retrying.copy()(self._post, body)
        except RetryError as exc:
            attempts, last = exc.last_attempt.attempt_number, exc.last_attempt.exception()
            raise FeedbackSourceError(
                f"reward model server {self.url} failed {attempts} times; last error: "
                f"{_describe(last, self.timeout)}") from last
        except _Status as exc:
            hint = ""
            if exc.status == 404:
                hint = (" (check the URL and protocol: vLLM serves /classify and /pooling "
                        "with --runner pooling, TEI serves /predict)")
            raise CriticError(f"reward model server {self.url} rejected the request: "
                              f"{exc}{hint}") from exc
        try:
            rewards = self._parse(data, len(items))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise CriticError(f"reward model server {self.url} sent an unexpected response "
                              f"({type(exc).__name__}: {exc}): {str(data)[:300]}") from exc
        return rewards

    def _request_body(self, items: list[tuple[str, str]]) -> dict[str, Any]:
        if self.protocol == "tei":
            inputs = [[self.render(p, a)] if self.render else [p, a] for p, a in items]
            body: dict[str, Any] = {"inputs": inputs, "raw_scores": True}
            if self.truncate:
                body |= {"truncate": True, "truncation_direction": "Left"}
            return body
        if self.render is None:
            (prompt, answer), = items
            body = {"messages": [{"role": "user", "content": prompt},
                                 {"role": "assistant", "content": answer}]}
        else:
            body = {"input": [self.render(p, a) for p, a in items]}
        if self.model:
            body["model"] = self.model
        body["use_activation"] = False
        if self.truncate:
            body |= {"truncate_prompt_tokens": -1, "truncation_side": "left"}
        return body

    def _parse(self, data: Any, expected: int) -> list[float]:
        if self.protocol == "tei":
            rows = data
            values = [[float(p["score"]) for p in row] for row in rows]
        else:
            rows = sorted(data["data"], key=lambda d: int(d["index"]))
            key = "probs" if self.endpoint == "classify" else "data"
            values = [_last_token(row[key]) for row in rows]
        if len(values) != expected:
            raise ValueError(f"{len(values)} results for {expected} inputs")
        for v in values:
            if len(v) != 1:
                raise ValueError(f"{len(v)} values per input; a reward model has one output")
        return [v[0] for v in values]

    async def _post(self, body: dict[str, Any]) -> Any:
        self.requests += 1
        response = await self._clients.get().post(self.url, json=body, headers=self._headers)
        if response.status_code >= 400:
            raise _Status(response)
        try:
            return response.json()
        except ValueError as exc:
            raise CriticError(f"reward model server {self.url} answered with something "
                              f"that is not JSON: {response.text[:200]!r}") from exc

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("reward model server %s: attempt %d failed (%s); retrying in %.2f s",
                    self.url, state.attempt_number, _describe(exc, self.timeout),
                    state.upcoming_sleep)


def _last_token(value: Any) -> list[float]:
    """A sequence output ``[r]`` as is; a per-token output ``[[r1], [r2], ...]`` at its
    last token."""
    if value and isinstance(value[0], list):
        value = value[-1]
    return [float(v) for v in value]


def _resolve_url(url: str, protocol: str | None) -> tuple[str, WireProtocol, str]:
    """The base URL, the protocol and the endpoint URL."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"reward server URL {url!r} is not an http(s) URL; expected "
                          "something like 'http://127.0.0.1:8000/classify'")
    if protocol is not None and protocol not in _DEFAULT_ENDPOINT:
        raise ConfigError(f"protocol must be 'vllm' or 'tei', got {protocol!r}")
    path = parts.path.rstrip("/")
    last = path.rsplit("/", 1)[-1]
    if last in _ENDPOINTS:
        if protocol is not None and _ENDPOINTS[last] != protocol:
            raise ConfigError(f"{url!r} is a {_ENDPOINTS[last]} endpoint ('/{last}'), but "
                              f"the protocol is {protocol!r}")
        chosen = protocol or _ENDPOINTS[last]
        endpoint = f"{parts.scheme}://{parts.netloc}{path}"
    else:
        chosen = protocol or "vllm"
        endpoint = f"{parts.scheme}://{parts.netloc}{path}/{_DEFAULT_ENDPOINT[chosen]}"
    return endpoint, chosen, endpoint.rsplit("/", 1)[-1]  # type: ignore[return-value]


def _headers_of(exc: BaseException) -> Mapping[str, str] | None:
    return exc.headers if isinstance(exc, _Status) else None


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _Status):
        return is_transient_status(exc.status)
    return isinstance(exc, httpx.TransportError)  # timeouts and connection errors

def _describe(exc: BaseException | None, timeout: float) -> str:
    if isinstance(exc, _Status):
        return str(exc)
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within the {timeout:g} s timeout"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({exc}); is the server running?"
    return f"{type(exc).__name__}: {exc}"
