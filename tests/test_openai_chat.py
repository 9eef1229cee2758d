"""OpenAIChat against the loopback OpenAI-compatible server: replies, retries, budgets."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import openai
import pytest

from redline._retry import retry_after_seconds as _retry_after_seconds
from redline._testing_server import Fail, OpenAICompatServer
from redline.errors import (
    BudgetExceeded,
    ConfigError,
    LLMError,
    LLMResponseError,
    LLMUnavailableError,
)
from redline.llm import Meter, Price
from redline.llm.openai import OpenAIChat
from redline.types import Budget

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello please"},
]


def make_chat(server: OpenAICompatServer, **kwargs) -> OpenAIChat:
    kwargs.setdefault("max_wait", 0.05)
    return OpenAIChat(server.model, base_url=server.base_url, **kwargs)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def completion_body(**overrides) -> dict:
    body = {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "test-model",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "hi"}}],
    }
    body.update(overrides)
    return body


async def test_plain_completion_reports_text_usage_and_cost():
    with OpenAICompatServer(["hello there"]) as server:
        async with make_chat(server, price=Price(input_per_mtok=2.0,
                                                 output_per_mtok=8.0)) as chat:
            completion = await chat.complete(MESSAGES, max_tokens=64, temperature=0.3)

    assert completion.text == "hello there"
    assert completion.finish_reason == "stop"
    assert completion.model == "test-model"
    # The server counts words: 3 + 3 prompt words, 2 reply words.
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (6, 2)
    assert completion.usage.llm_calls == 1
    assert completion.usage.cost_usd == pytest.approx((6 * 2.0 + 2 * 8.0) / 1e6)
    assert completion.usage.cost_usd == pytest.approx(0.000028)
    [sent] = server.requests
    assert sent["model"] == "test-model"
    assert sent["messages"] == MESSAGES
    assert sent["temperature"] == 0.3
    assert sent["max_tokens"] == 64
    assert not {"stop", "seed", "response_format"} & sent.keys()


async def test_optional_parameters_are_sent_when_given():
    with OpenAICompatServer(["{}"]) as server:
        chat = make_chat(server)
        await chat.complete(MESSAGES, stop=["\n\n"], seed=7,
                            response_format={"type": "json_object"})
        await chat.aclose()
    [sent] = server.requests
    assert sent["temperature"] == 0.0
    assert sent["max_tokens"] == 1024
    assert (sent["stop"], sent["seed"]) == (["\n\n"], 7)
    assert sent["response_format"] == {"type": "json_object"}


async def test_transient_failures_are_retried_until_success(caplog):
    script = [Fail(429, headers={"Retry-After": "0"}), Fail(500), "finally"]
    with OpenAICompatServer(script) as server, caplog.at_level(logging.WARNING, "redline.llm"):
        chat = make_chat(server)
        completion = await chat.complete(MESSAGES)
        await chat.aclose()
    assert completion.text == "finally"
    assert completion.usage.llm_calls == 1
    assert len(server.requests) == 3
    retries = [r.getMessage() for r in caplog.records if r.name == "redline.llm"]
    assert len(retries) == 2
    assert "HTTP 429" in retries[0] and "HTTP 500" in retries[1]


async def test_concurrent_calls_retry_independently():
    seen: list[str] = []

    def flaky(request):
        # Every prompt fails on its first request and succeeds on its second.
        prompt = request["messages"][-1]["content"]
        seen.append(prompt)
        return "ok " + prompt if seen.count(prompt) > 1 else Fail(503)

    async with OpenAICompatServer(handler=flaky) as server, \
            make_chat(server, max_attempts=2) as chat:
        completions = await asyncio.gather(*(
            chat.complete([{"role": "user", "content": str(i)}]) for i in range(8)))
    assert [c.text for c in completions] == [f"ok {i}" for i in range(8)]
    assert len(server.requests) == 16


async def test_persistent_503_raises_unavailable_naming_the_model():
    with OpenAICompatServer(handler=lambda request: Fail(503)) as server:
        chat = make_chat(server, max_attempts=3)
        with pytest.raises(LLMUnavailableError) as caught:
            await chat.complete(MESSAGES)
        await chat.aclose()
    error = caught.value
    assert (error.attempts, error.last_status) == (3, 503)
    assert "'test-model'" in str(error)
    assert server.base_url in str(error)
    assert "failed 3 times" in str(error) and "HTTP 503" in str(error)
    assert len(server.requests) == 3


async def test_bad_request_is_not_retried():
    body = {"error": {"message": "max_tokens is too large", "type": "invalid_request"}}
    with OpenAICompatServer([Fail(400, body=body)]) as server:
        chat = make_chat(server)
        with pytest.raises(LLMError) as caught:
            await chat.complete(MESSAGES)
        await chat.aclose()
    assert not isinstance(caught.value, LLMUnavailableError)
    assert caught.value.status == 400
    assert "HTTP 400" in str(caught.value)
    assert "max_tokens is too large" in str(caught.value)
    assert len(server.requests) == 1


async def test_unauthorized_says_which_key_to_check():
    with OpenAICompatServer([Fail(401)]) as server:
        chat = make_chat(server)
        with pytest.raises(LLMError, match="OPENAI_API_KEY"):
            await chat.complete(MESSAGES)
        await chat.aclose()
    assert len(server.requests) == 1


async def test_connection_refused_raises_unavailable_without_status():
    chat = OpenAIChat("m", base_url=f"http://127.0.0.1:{closed_port()}/v1",
                      max_attempts=2, max_wait=0.01)
    with pytest.raises(LLMUnavailableError) as caught:
        await chat.complete(MESSAGES)
    await chat.aclose()
    assert (caught.value.attempts, caught.value.last_status) == (2, None)
    assert "connection failed" in str(caught.value)


async def test_timeouts_are_retried_then_reported():
    def slow(request):
        time.sleep(0.3)
        return "too late"

    with OpenAICompatServer(handler=slow) as server:
        chat = make_chat(server, timeout=0.05, max_attempts=2)
        with pytest.raises(LLMUnavailableError) as caught:
            await chat.complete(MESSAGES)
        await chat.aclose()
    assert (caught.value.attempts, caught.value.last_status) == (2, None)
    assert "0.05 s timeout" in str(caught.value)


async def test_retry_after_is_honoured():
    script = [Fail(503, headers={"Retry-After": "0.3"}), "ok"]
    with OpenAICompatServer(script) as server:
        chat = make_chat(server, max_wait=5.0)
        started = time.monotonic()
        completion = await chat.complete(MESSAGES)
        elapsed = time.monotonic() - started
        await chat.aclose()
    assert completion.text == "ok"
    assert elapsed >= 0.3 - 0.02  # a lower bound: the client waited as asked


async def test_retry_after_is_capped_by_max_wait():
    script = [Fail(429, headers={"Retry-After": "60"}), "ok"]
    with OpenAICompatServer(script) as server:
        chat = make_chat(server, max_wait=0.05)
        started = time.monotonic()
        assert (await chat.complete(MESSAGES)).text == "ok"
        assert time.monotonic() - started < 30  # did not sleep the 60 s asked
        await chat.aclose()


def test_retry_after_parses_seconds_milliseconds_and_dates():
    assert _retry_after_seconds({"retry-after": "1.5"}) == 1.5
    assert _retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert _retry_after_seconds({"retry-after": "-3"}) == 0.0
    assert _retry_after_seconds({"retry-after": "soon"}) is None
    assert _retry_after_seconds({}) is None
    in_ten = format_datetime(datetime.now(UTC) + timedelta(seconds=10), usegmt=True)
    assert 8 <= _retry_after_seconds({"retry-after": in_ten}) <= 10
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=10), usegmt=True)
    assert _retry_after_seconds({"retry-after": past}) == 0.0


async def test_budget_clamps_max_tokens_sent():
    with OpenAICompatServer() as server:
        chat = make_chat(server)
        with Meter(Budget(max_tokens=100)).active() as meter:
            completion = await chat.complete(MESSAGES, max_tokens=1024)
        await chat.aclose()
    [sent] = server.requests
    assert sent["max_tokens"] == 100 - chat.estimate_input_tokens(MESSAGES)
    assert sent["max_tokens"] < 1024
    assert meter.spent.total_tokens == completion.usage.total_tokens


async def test_budget_learns_the_models_tokens_per_byte_after_its_first_answer():
    # The loopback server counts words: this prompt is 6 "tokens" against a byte bound
    # of ~60. The first call reserves the bound; later ones the densest prompt seen x 1.25.
    with OpenAICompatServer(["hi", "hi", "hi"]) as server:
        chat = make_chat(server)
        bound = chat.estimate_input_tokens(MESSAGES)
        with Meter(Budget(max_tokens=bound + 10)).active():
            await chat.complete(MESSAGES, max_tokens=1024)
        first = server.requests[0]["max_tokens"]
        assert first == 10  # nothing learned yet: the byte bound is reserved
        learned = min(bound, math.ceil(bound * (6 / bound) * 1.25) + 16)
        assert learned < bound
        with Meter(Budget(max_tokens=bound + 10)).active() as meter:
            await chat.complete(MESSAGES, max_tokens=1024)
            # A budget the byte bound could not pass at all now admits the call.
            with Meter(Budget(max_tokens=bound - 5)).active():
                await chat.complete(MESSAGES, max_tokens=1024)
        await chat.aclose()
    assert server.requests[1]["max_tokens"] == bound + 10 - learned
    assert server.requests[2]["max_tokens"] == bound - 5 - learned
    assert meter.spent.input_tokens == 6


async def test_budget_refuses_a_call_past_max_llm_calls():
    with OpenAICompatServer() as server:
        chat = make_chat(server)
        with Meter(Budget(max_llm_calls=1)).active():
            await chat.complete(MESSAGES)
            with pytest.raises(BudgetExceeded) as caught:
                await chat.complete(MESSAGES)
        await chat.aclose()
    assert caught.value.limit == "max_llm_calls"
    assert len(server.requests) == 1


async def test_missing_usage_is_estimated_from_the_text():
    with OpenAICompatServer([Fail(200, body=completion_body())]) as server:
        chat = make_chat(server)
        completion = await chat.complete(MESSAGES, max_tokens=64)
        await chat.aclose()
    assert completion.text == "hi"
    assert completion.usage.input_tokens == chat.estimate_input_tokens(MESSAGES)
    assert completion.usage.output_tokens == 2


async def test_an_answer_without_text_raises_response_error_at_once():
    body = completion_body(choices=[{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": None}}])
    with OpenAICompatServer([Fail(200, body=body)]) as server:
        chat = make_chat(server)
        with pytest.raises(LLMResponseError, match="'test-model'"):
            await chat.complete(MESSAGES)
        await chat.aclose()
    assert len(server.requests) == 1  # a well-formed reply without text: not retried


def test_no_server_and_no_key_is_a_config_error(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_BASE_URL") as caught:
        OpenAIChat("m")
    assert "OPENAI_API_KEY" in str(caught.value)


@pytest.mark.parametrize("url", ["localhost:8000/v1", "ftp://127.0.0.1/v1", "http://"])
def test_bad_base_url_is_a_config_error(url):
    with pytest.raises(ConfigError, match="is not an http"):
        OpenAIChat("m", base_url=url)


async def test_base_url_from_environment_needs_no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with OpenAICompatServer(["from env"]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        async with OpenAIChat(server.model) as chat:
            assert chat.base_url == server.base_url
            assert (await chat.complete(MESSAGES)).text == "from env"


def test_repr_shows_model_and_url_but_never_the_key():
    chat = OpenAIChat("m", base_url="http://127.0.0.1:9/v1", api_key="sk-secret")
    assert repr(chat) == "OpenAIChat(model='m', base_url='http://127.0.0.1:9/v1')"
    assert "sk-secret" not in repr(chat)


async def test_a_client_passed_in_gets_no_retries_of_its_own():
    with OpenAICompatServer([Fail(500), Fail(500), "ok"]) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=3)
        chat = OpenAIChat(server.model, client=client, max_attempts=2, max_wait=0.01)
        with pytest.raises(LLMUnavailableError):
            await chat.complete(MESSAGES)
        await chat.aclose()
        assert len(server.requests) == 2  # ours only, not 2 x 4
        assert not client.is_closed()
        await client.close()


def test_server_lists_its_model_and_404s_unknown_paths():
    import json
    import urllib.error
    import urllib.request

    with OpenAICompatServer(model="tiny") as server:
        with urllib.request.urlopen(f"{server.base_url}/models") as response:
            assert [m["id"] for m in json.load(response)["data"]] == ["tiny"]
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"{server.url}/nowhere")
        assert caught.value.code == 404
        assert "error" in json.load(caught.value)


def test_server_queues_a_burst_of_connections_while_it_is_busy(monkeypatch):
    """64 clients connecting while the server's thread is not accepting (a loaded
    machine): the kernel must queue every one (socketserver's default backlog of 5
    dropped the rest, and a CI run hung on their calls), then all are served."""
    import select
    import threading

    with OpenAICompatServer(handler=lambda r: "ok") as server:
        busy = threading.Event()
        accept = server._httpd.get_request

        def slow_accept():
            busy.wait(10)
            return accept()

        monkeypatch.setattr(server._httpd, "get_request", slow_accept)
        socks = [socket.socket() for _ in range(64)]
        try:
            for sock in socks:
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", server.port))
            pending, deadline = set(socks), time.monotonic() + 3
            while pending and time.monotonic() < deadline:
                _, done, _ = select.select([], list(pending), [], 0.1)
                pending -= {s for s in done if s.getsockopt(socket.SOL_SOCKET,
                                                             socket.SO_ERROR) == 0}
            assert not pending, f"{len(pending)} of 64 connections never completed"
            busy.set()
            for sock in socks:
                sock.setblocking(True)
                sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
            assert all(sock.recv(12).startswith(b"HTTP/1.") for sock in socks)
        finally:
            busy.set()
            for sock in socks:
                sock.close()
        assert server.connections == 64


def test_one_model_serves_consecutive_refine_calls() -> None:
    """Each `refine()` runs a new event loop; the model must not keep a dead loop's client."""
    import redline

    with OpenAICompatServer(handler=lambda r: "ok") as server:
        chat = OpenAIChat(server.model, base_url=server.base_url)
        first = redline.refine("Q", model=chat, critics=[lambda t: 1.0])
        second = redline.refine("Q", model=chat, critics=[lambda t: 1.0])
    assert first.text == second.text == "ok"


# --- Malformed replies: a 200 that is not a chat completion ------------------------------

@pytest.mark.parametrize("fault", Fail.malformed(), ids=lambda f: str(f.body)[:20])
async def test_a_malformed_200_is_retried_like_other_transient_failures(fault):
    with OpenAICompatServer([fault, "fine"]) as server:
        chat = make_chat(server)
        completion = await chat.complete(MESSAGES)
        await chat.aclose()
    assert completion.text == "fine" and len(server.requests) == 2


@pytest.mark.parametrize("fault", Fail.malformed(), ids=lambda f: str(f.body)[:20])
async def test_a_server_that_always_answers_malformed_raises_unavailable(fault):
    with OpenAICompatServer(handler=lambda request: fault) as server:
        chat = make_chat(server, max_attempts=3)
        with pytest.raises(LLMUnavailableError, match="malformed response") as caught:
            await chat.complete(MESSAGES)
        await chat.aclose()
    assert caught.value.attempts == 3 and len(server.requests) == 3
    assert isinstance(caught.value.__cause__, LLMResponseError)


async def test_a_dropped_connection_is_retried():
    with OpenAICompatServer([Fail.dropped(), "after the drop"]) as server:
        chat = make_chat(server)
        completion = await chat.complete(MESSAGES)
        await chat.aclose()
    assert completion.text == "after the drop"


async def test_soak_every_call_ends_with_a_result_or_a_redline_error():
    """A server failing ~30% of requests with every fault kind: 100 loops, each ends
    with a result or a redline error, never another exception."""
    import random

    import redline
    from redline.errors import RedlineError

    rng = random.Random(9)
    faults = [*Fail.malformed(), Fail.dropped(), Fail(500), Fail(503),
              Fail(429, headers={"Retry-After": "0"})]

    def handler(request: dict) -> str | Fail:
        if rng.random() < 0.3:
            return rng.choice(faults)
        if "grade" in request["messages"][0]["content"].lower():
            return '{"score": 9, "feedback": ""}'
        return "A draft answer."

    outcomes: dict[str, int] = {}
    with OpenAICompatServer(handler=handler) as server:
        chat = make_chat(server, max_attempts=3, max_wait=0.01)
        for _ in range(100):
            try:
                result = await redline.arefine("Say something.", model=chat,
                                               critics=[redline.LLMJudge()],
                                               budget=redline.Budget(max_rounds=1))
                kind = "result" if result.best is not None else "empty result"
            except RedlineError as exc:
                kind = type(exc).__name__
            outcomes[kind] = outcomes.get(kind, 0) + 1
        await chat.aclose()
    assert set(outcomes) <= {"result", "empty result", "LLMUnavailableError", "CriticError"}
    assert outcomes.get("result", 0) >= 80, outcomes


# --- Structured output: the schema in the server's dialect, and the fallback --------------

SCHEMA = {"title": "verdict", "type": "object", "properties": {"score": {"type": "integer"}},
          "required": ["score"], "additionalProperties": False}


async def test_json_schema_is_sent_as_openai_structured_output():
    with OpenAICompatServer(['{"score": 1}']) as server:
        chat = make_chat(server)
        await chat.complete(MESSAGES, json_schema=SCHEMA)
        await chat.aclose()
    assert server.requests[0]["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA,
                                               "strict": True}}


async def test_json_schema_in_the_llama_cpp_python_dialect():
    with OpenAICompatServer(['{"score": 1}']) as server:
        chat = make_chat(server, schema_dialect="llama-cpp-python")
        await chat.complete(MESSAGES, json_schema=SCHEMA)
        await chat.aclose()
    assert server.requests[0]["response_format"] == {"type": "json_object", "schema": SCHEMA}


async def test_response_format_and_json_schema_together_are_a_config_error():
    chat = OpenAIChat("m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ConfigError, match="not both"):
        await chat.complete(MESSAGES, response_format={"type": "json_object"},
                            json_schema=SCHEMA)
    with pytest.raises(ConfigError, match="schema_dialect"):
        OpenAIChat("m", base_url="http://127.0.0.1:9/v1", schema_dialect="xml")


@pytest.mark.parametrize("status", [400, 422])
async def test_a_server_refusing_the_schema_is_asked_with_weaker_formats_and_remembered(status):
    def handler(request: dict) -> str | Fail:
        kind = (request.get("response_format") or {}).get("type")
        if kind == "json_schema":
            return Fail(status, body={"error": {"message": "json_schema not supported"}})
        return '{"score": 2}'

    with OpenAICompatServer(handler=handler) as server:
        chat = make_chat(server)
        first = await chat.complete(MESSAGES, json_schema=SCHEMA)
        second = await chat.complete(MESSAGES, json_schema=SCHEMA)
        await chat.aclose()
    assert first.text == second.text == '{"score": 2}'
    sent = [r.get("response_format") for r in server.requests]
    # Refused once, then llama-cpp-python's schema; the second call goes straight there.
    assert sent == [{"type": "json_schema", "json_schema": {
        "name": "verdict", "schema": SCHEMA, "strict": True}},
        {"type": "json_object", "schema": SCHEMA}, {"type": "json_object", "schema": SCHEMA}]


async def test_llama_cpp_pythons_500_for_an_unknown_format_is_a_refusal_not_an_outage():
    """llama-cpp-python's server answers OpenAI's json_schema with a 500 naming the field:
    asked again at once in its own dialect, not retried as an outage."""
    def handler(request: dict) -> str | Fail:
        if (request.get("response_format") or {}).get("type") == "json_schema":
            return Fail(500, body={"error": {"message": "1 validation error: "
                                   "('body', 'response_format', 'type') Input should be "
                                   "'text' or 'json_object'"}})
        return '{"score": 3}'

    with OpenAICompatServer(handler=handler) as server:
        chat = make_chat(server)
        assert (await chat.complete(MESSAGES, json_schema=SCHEMA)).text == '{"score": 3}'
        await chat.aclose()
    assert [r.get("response_format", {}).get("type") for r in server.requests] == [
        "json_schema", "json_object"]
    assert server.requests[1]["response_format"]["schema"] == SCHEMA


async def test_a_server_refusing_every_format_is_asked_without_one():
    def handler(request: dict) -> str | Fail:
        if "response_format" in request:
            return Fail(400, body={"error": {"message": "response_format is not supported"}})
        return "plain"

    with OpenAICompatServer(handler=handler) as server:
        chat = make_chat(server, schema_dialect="llama-cpp-python")
        assert (await chat.complete(MESSAGES, json_schema=SCHEMA)).text == "plain"
        assert (await chat.complete(MESSAGES, json_schema=SCHEMA)).text == "plain"
        await chat.aclose()
    assert [r.get("response_format", {}).get("type") for r in server.requests] == [
        "json_object", "json_object", None, None]


async def test_a_400_for_another_reason_is_not_taken_for_a_refused_format():
    with OpenAICompatServer(handler=lambda request: Fail(
            400, body={"error": {"message": "prompt too long"}})) as server:
        chat = make_chat(server)
        with pytest.raises(LLMError, match="prompt too long") as caught:
            await chat.complete(MESSAGES, json_schema=SCHEMA)
        assert caught.value.status == 400
        # Nothing was learnt: the next call asks for the schema again.
        server_requests_before = len(server.requests)
        with pytest.raises(LLMError):
            await chat.complete(MESSAGES, json_schema=SCHEMA)
        await chat.aclose()
    assert server.requests[server_requests_before]["response_format"]["type"] == "json_schema"


# --- The HTTP client: pooled connections, headers, raw JSON ---------------------------------

async def test_many_concurrent_calls_reuse_their_connections():
    """64 calls at a time, four waves: the server sees at most 64 connections, not 256
    (one pool per event loop, its connections kept alive; see redline.llm._http)."""
    def slow(request: dict) -> str:
        time.sleep(0.05)  # long enough for the 64 calls of a wave to overlap
        return "ok " + request["messages"][-1]["content"]

    async with OpenAICompatServer(handler=slow) as server, make_chat(server) as chat:
        for wave in range(4):
            completions = await asyncio.gather(*(
                chat.complete([{"role": "user", "content": f"{wave}-{i}"}]) for i in range(64)))
            assert [c.text for c in completions] == [f"ok {wave}-{i}" for i in range(64)]
        kept = chat._clients_get().connections
    assert len(server.requests) == 256
    assert 2 <= server.connections <= 64, f"{server.connections} connections for 256 calls"
    assert 2 <= kept <= 64


def _sockets_to(port: int) -> int:
    """This process's open TCP connections to `port` on loopback (from /proc)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            fields = line.split()
            if int(fields[2].split(":")[1], 16) == port and fields[9] in inodes:
                count += 1
    return count


async def test_aclose_returns_with_the_sockets_closed():
    """A local server stopped right after its client closed must not find connections
    still open (it would wait for them): the sockets are gone when aclose returns."""
    async with OpenAICompatServer() as server:
        port = int(server.base_url.split(":")[2].split("/")[0])
        chat = make_chat(server)
        await asyncio.gather(*(chat.complete(MESSAGES) for _ in range(3)))
        assert _sockets_to(port) == 3
        await chat.aclose()
        assert _sockets_to(port) == 0


async def test_calls_one_at_a_time_use_one_connection():
    async with OpenAICompatServer() as server, make_chat(server) as chat:
        for i in range(5):
            assert (await chat.complete([{"role": "user", "content": str(i)}])).text == f"echo: {i}"
        assert chat._clients_get().connections == 1
    assert server.connections == 1


async def test_a_body_that_is_not_json_names_the_problem_and_is_retried_then_reported():
    broken = Fail(200, body='{"choices": [', content_type="application/json")
    with OpenAICompatServer(handler=lambda request: broken) as server:
        chat = make_chat(server, max_attempts=2)
        with pytest.raises(LLMUnavailableError, match="not valid JSON") as caught:
            await chat.complete(MESSAGES)
        await chat.aclose()
    assert (caught.value.attempts, caught.value.last_status) == (2, None)
    assert isinstance(caught.value.__cause__, LLMResponseError)
    assert caught.value.__cause__.status == 200


async def test_an_html_page_is_named_with_its_content_type():
    with OpenAICompatServer([Fail.html()]) as server:
        chat = make_chat(server, max_attempts=1)
        with pytest.raises(LLMUnavailableError, match="not a chat completion but text/html"):
            await chat.complete(MESSAGES)
        await chat.aclose()


async def test_a_refusal_without_text_says_so():
    body = completion_body(choices=[{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": None, "refusal": "I cannot help with that"}}])
    with OpenAICompatServer([Fail(200, body=body)]) as server:
        chat = make_chat(server)
        with pytest.raises(LLMResponseError, match="refusal: I cannot help with that"):
            await chat.complete(MESSAGES)
        await chat.aclose()


async def test_headers_carry_the_key_organization_and_project(monkeypatch):
    monkeypatch.setenv("OPENAI_ORG_ID", "org-env")
    monkeypatch.delenv("OPENAI_PROJECT_ID", raising=False)
    import http.server

    headers_seen: list[dict[str, str]] = []
    original = http.server.BaseHTTPRequestHandler.parse_request

    def parse_request(self):  # records what every request to the server carried
        ok = original(self)
        headers_seen.append(dict(self.headers))
        return ok

    monkeypatch.setattr(http.server.BaseHTTPRequestHandler, "parse_request", parse_request)
    with OpenAICompatServer(["a", "b"]) as server:
        async with OpenAIChat(server.model, base_url=server.base_url, api_key="sk-test",
                              project="proj-1") as chat:
            await chat.complete(MESSAGES)
        async with OpenAIChat(server.model, base_url=server.base_url, api_key="sk-test",
                              organization="org-arg") as chat:
            await chat.complete(MESSAGES)
    first, second = headers_seen
    assert first["Authorization"] == "Bearer sk-test"
    assert (first["OpenAI-Organization"], first["OpenAI-Project"]) == ("org-env", "proj-1")
    assert first["Content-Type"] == "application/json"
    assert second["OpenAI-Organization"] == "org-arg" and "OpenAI-Project" not in second


async def test_a_client_passed_in_answers_like_the_own_client():
    script = [Fail(429, headers={"Retry-After": "0"}), "via the sdk",
              Fail(200, body="<html>oops</html>", content_type="text/html"), "again"]
    with OpenAICompatServer(script) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k")
        chat = OpenAIChat(server.model, client=client, max_wait=0.01)
        await chat.preflight()
        first = await chat.complete(MESSAGES, max_tokens=64)
        second = await chat.complete(MESSAGES)
        await client.close()
    assert (first.text, second.text) == ("via the sdk", "again")
    assert (first.usage.input_tokens, first.usage.output_tokens) == (6, 3)
    assert len(server.requests) == 4


async def test_preflight_reports_a_rejected_key_and_a_dead_server():
    with OpenAICompatServer() as server:
        chat = make_chat(server)
        await chat.preflight()  # a server that answers: passes
        await chat.aclose()
    dead = OpenAIChat("m", base_url=f"http://127.0.0.1:{closed_port()}/v1")
    with pytest.raises(ConfigError, match="cannot reach model 'm'.*connection failed"):
        await dead.preflight()
    await dead.aclose()


def test_import_openai_chat_does_not_import_the_openai_sdk():
    import subprocess
    import sys

    code = ("import sys; from redline.llm.openai import OpenAIChat; "
            "OpenAIChat('m', base_url='http://127.0.0.1:9/v1'); print('openai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


async def test_the_environments_proxy_is_used(monkeypatch):
    """HTTP_PROXY is honoured, as the openai client honoured it: the request for an
    unreachable host goes to the proxy (here the loopback server, which answers a
    proxied request for a path it does not serve with a 404)."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with OpenAICompatServer() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("http_proxy", proxy.url)
        chat = OpenAIChat("m", base_url="http://llm.example.invalid/v1", max_attempts=1)
        with pytest.raises(LLMError, match="HTTP 404: no route for POST "
                                           "http://llm.example.invalid/v1/chat/completions"):
            await chat.complete(MESSAGES)
        await chat.aclose()


@pytest.mark.parametrize("url", ["http://[::1]:8000/v1", "http://user:pw@localhost:8000/v1",
                                 "http://127.0.0.1:8000/v1"])
def test_no_proxy_exempts_loopback_hosts_however_the_url_writes_them(monkeypatch, url):
    from redline.llm._http import PooledClient

    for name in ("ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example.invalid:3128")
    monkeypatch.setenv("http_proxy", "http://proxy.example.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "::1,localhost,127.0.0.1")
    monkeypatch.setenv("no_proxy", "::1,localhost,127.0.0.1")
    client = PooledClient(headers={}, timeout=None)
    assert client._proxy_for(url) is None
    assert client._proxy_for("http://llm.example.invalid/v1") == \
        "http://proxy.example.invalid:3128"
