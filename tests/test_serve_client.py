"""The drop-in client `redline.openai` (in-process), the request protocol shared with
``redline serve``, and the run table's budget caps."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from redline import Budget
from redline._testing_server import OpenAICompatServer
from redline.llm import OpenAIChat
from redline.openai import AsyncOpenAI, OpenAI
from redline.serve import RunTable, plan_request
from redline.serve.protocol import ApiError
from redline.testing import ScriptedChat
from redline.workflows import RefineConfig, RunSpec

FEEDBACK = "Say that it is the capital of France."
REVISED = "Paris is the capital of France."
QUESTION = [{"role": "user", "content": "What is Paris?"}]


def reply(request: dict[str, Any]) -> str:
    text = json.dumps(request["messages"])
    if request.get("response_format"):
        good = "capital of France" in request["messages"][-1]["content"]
        return json.dumps({"score": 9, "feedback": ""} if good else
                          {"score": 3, "feedback": FEEDBACK})
    if request.get("tools"):
        return "a tool-using reply"
    return REVISED if FEEDBACK in text else "Paris."


@pytest.fixture
def upstream() -> Iterator[OpenAICompatServer]:
    with OpenAICompatServer(handler=reply) as server:
        yield server


def spec(upstream: OpenAICompatServer, **fields: Any) -> RunSpec:
    return RunSpec(model={"name": upstream.model, "base_url": upstream.base_url},
                   critics=["judge"], **fields)


async def test_the_async_client_refines_and_answers_like_the_server(
        upstream: OpenAICompatServer) -> None:
    async with AsyncOpenAI(spec(upstream)) as client:
        reply = await client.chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert isinstance(reply, openai.types.chat.ChatCompletion)
    assert reply.choices[0].message.content == REVISED
    info = (reply.model_extra or {})["redline"]
    assert info["stop_reason"] == "threshold" and info["rounds"] == 2 and info["llm_calls"] == 4
    assert set(info) == {"run", "score", "threshold", "stop_reason", "stop_detail",
                         "budget_limit", "rounds", "llm_calls", "cost_usd", "seconds",
                         "critiques", "error"}  # what the server sends too (tests/test_serve)
    prompt = sum(len(str(m["content"]).split()) for r in upstream.requests
                 for m in r["messages"])
    assert reply.usage is not None and reply.usage.prompt_tokens == prompt
    assert len(upstream.requests) == 4


async def test_streaming_and_pass_through(upstream: OpenAICompatServer) -> None:
    async with AsyncOpenAI(spec(upstream)) as client:
        stream = await client.chat.completions.create(model="redline/refine",
                                                      messages=QUESTION, stream=True)
        chunks = [chunk async for chunk in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == REVISED
        assert chunks[-1].choices[0].finish_reason == "stop"
        before = len(upstream.requests)
        tools = [{"type": "function", "function": {"name": "now", "parameters": {
            "type": "object", "properties": {}}}}]
        passed = await client.chat.completions.create(model="redline/refine",
                                                      messages=QUESTION, tools=tools)
    assert passed.choices[0].message.content == "a tool-using reply"
    [request] = upstream.requests[before:]
    assert request["tools"] == tools and request["model"] == upstream.model


async def test_refusals_are_the_official_clients_errors(upstream: OpenAICompatServer) -> None:
    async with AsyncOpenAI({"a": spec(upstream), "b": spec(upstream)}) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(model="redline/a", messages=QUESTION, n=2)
        assert info.value.body["param"] == "n"  # type: ignore[index]
        with pytest.raises(openai.NotFoundError):  # several runs: the model must name one
            await client.chat.completions.create(model="gpt-4o", messages=QUESTION)
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(
                model="redline/a", messages=[{"role": "assistant", "content": "hi"}])
    assert upstream.requests == []


async def test_max_tokens_caps_the_loop_and_the_ceiling_caps_max_tokens(
        upstream: OpenAICompatServer) -> None:
    async with AsyncOpenAI(spec(upstream), token_ceiling=100_000) as client:
        full = await client.chat.completions.create(model="m", messages=QUESTION)
        assert full.usage is not None
        limit = full.usage.total_tokens - 1  # one short of the whole trajectory
        capped = await client.chat.completions.create(model="m", messages=QUESTION,
                                                      max_tokens=limit)
    info = (capped.model_extra or {})["redline"]
    assert info["stop_reason"] == "budget" and info["budget_limit"] == "max_tokens"
    assert capped.usage is not None and capped.usage.total_tokens <= limit
    table = RunTable({"r": RefineConfig(model=OpenAIChat("m", base_url=upstream.base_url),
                                        budget=Budget(max_tokens=5000))}, token_ceiling=300)
    assert table.config("r").budget.max_tokens == 300
    assert table.runner("r", 10**9).config.budget.max_tokens == 300
    assert table.runner("r", 50).config.budget.max_tokens == 50
    assert table.runner("r", 50) is table.runner("r", 50)  # compiled once


def test_the_sync_client_and_a_broken_run() -> None:
    config = RefineConfig(model=ScriptedChat(["draft one"]), critics=[lambda text: 1.0])
    with OpenAI(config) as client:
        reply = client.chat.completions.create(model="x", messages=QUESTION)
        assert reply.choices[0].message.content == "draft one"
        with pytest.raises(openai.InternalServerError) as info:  # the script ran out
            client.chat.completions.create(model="x", messages=QUESTION)
        assert info.value.body["code"] == "refine_failed"  # type: ignore[index]


async def test_the_sync_client_refuses_a_running_loop() -> None:
    client = OpenAI(RefineConfig(model=ScriptedChat(["a"]), critics=[lambda text: 1.0]))
    with pytest.raises(Exception, match="AsyncOpenAI"):
        client.chat.completions.create(model="x", messages=QUESTION)


@pytest.mark.parametrize(("body", "kind", "detail"), [
    ({"messages": QUESTION}, "error", "model"),
    ({"model": "redline/r", "messages": []}, "error", "messages"),
    ({"model": "redline/r", "messages": QUESTION, "n": 3}, "error", "n"),
    ({"model": "redline/r", "messages": QUESTION, "top_logprobs": 2}, "error", "top_logprobs"),
    ({"model": "redline/r", "messages": QUESTION, "max_tokens": 0}, "error", "max_tokens"),
    ({"model": "redline/r", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:,"}}]}]}, "passthrough", "image_url"),
    ({"model": "redline/r", "messages": QUESTION, "response_format": {
        "type": "json_object"}}, "passthrough", "response_format"),
    ({"model": "redline/r", "messages": [*QUESTION, {"role": "tool", "content": "1",
                                                     "tool_call_id": "a"}]},
     "passthrough", "tool messages"),
    ({"model": "REDLINE/R", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Hi"}]}], "temperature": 1.5}, "refine", "Hi"),
])
def test_plan_request_decides_per_case(body: dict[str, Any], kind: str, detail: str) -> None:
    if kind == "error":
        with pytest.raises(ApiError) as info:
            plan_request(body, runs=["r"])
        assert info.value.param == detail and info.value.status == 400
        return
    plan = plan_request(body, runs=["r"])
    assert plan.kind == kind and plan.run == "r"
    if kind == "passthrough":
        assert plan.reason == detail
    else:
        assert plan.task is not None and plan.task.prompt == detail


def test_import_redline_stays_light_and_the_client_does_not_shadow_openai() -> None:
    code = ("import sys, redline, redline.serve.protocol; "
            "print(' '.join(m for m in ('starlette', 'uvicorn', 'openai', 'langgraph') "
            "if m in sys.modules)); import redline.openai, openai; print(openai.__name__, "
            "hasattr(openai, 'AsyncOpenAI'), redline.openai.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == ["", "openai True redline.openai"]
