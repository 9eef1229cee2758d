"""``redline serve`` as a real process, spoken to by the official ``openai`` client,
against a scripted loopback upstream (`OpenAICompatServer`).

The upstream's script: a judge request (it carries ``response_format``) gets a verdict
of 9/10 when the answer under review says "capital of France", else 3/10 with feedback;
a revision (its prompt holds that feedback) answers "Paris is the capital of France.",
a draft "Paris.". A task containing BREAK gets unusable verdicts (the judge breaks); one
containing SLOW waits until the test releases it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from redline._testing_server import OpenAICompatServer

ENV = {k: v for k, v in os.environ.items()
       if not k.startswith(("OPENAI_", "REDLINE_MODEL", "REDLINE_SERVE"))}
FEEDBACK = "Say that it is the capital of France."
DRAFT = "Paris."
REVISED = "Paris is the capital of France."
QUESTION = [{"role": "user", "content": "What is Paris?"}]


class Upstream:
    """The scripted upstream, recording every request with the reply it got."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, Any], str]] = []
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.server = OpenAICompatServer(handler=self.reply)

    def reply(self, request: dict[str, Any]) -> str:
        text = json.dumps(request["messages"])
        if "SLOW" in text:
            self.release.wait(30)
        if request.get("response_format"):
            if "BREAK" in text:
                answer = "no verdict here"
            elif "capital of France" in request["messages"][-1]["content"]:
                answer = json.dumps({"score": 9, "feedback": ""})
            else:
                answer = json.dumps({"score": 3, "feedback": FEEDBACK})
        elif FEEDBACK in text:
            answer = REVISED
        elif request.get("tools"):
            answer = "a tool-using reply"
        else:
            answer = DRAFT
        with self.lock:
            self.calls.append((request, answer))
        return answer

    def since(self, mark: int) -> list[tuple[dict[str, Any], str]]:
        with self.lock:
            return self.calls[mark:]


class Serve:
    """A ``redline serve`` process on a free loopback port."""

    def __init__(self, args: list[str], tmp: Path, env: dict[str, str] | None = None) -> None:
        self.log = tmp / f"serve-{time.monotonic_ns()}.log"
        with self.log.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "redline", "serve", "--port", "0", *args],
                stdout=subprocess.DEVNULL, stderr=err, env={**ENV, **(env or {})})
        deadline = time.monotonic() + 120
        while True:
            found = re.search(r"on (http://\S+/v1)", self.log.read_text())
            if found:
                self.base_url = found.group(1)
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"redline serve did not start: {self.log.read_text()}")
            time.sleep(0.05)

    @property
    def root(self) -> str:
        return self.base_url.removesuffix("/v1")

    def client(self, **kwargs: Any) -> openai.OpenAI:
        kwargs.setdefault("api_key", "unused")
        return openai.OpenAI(base_url=self.base_url, max_retries=0, **kwargs)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    yield up
    up.release.set()
    up.server.close()


@pytest.fixture(scope="module")
def serve(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    server = Serve(["--upstream", upstream.server.base_url, "--model", upstream.server.model,
                    "--max-rounds", "2", "--max-body", "20000"],
                   tmp_path_factory.mktemp("serve"))
    yield server
    server.close()


def words(text: str) -> int:
    return len(text.split())


def test_a_refined_answer_with_usage_summed_and_the_redline_field(
        serve: Serve, upstream: Upstream) -> None:
    mark = len(upstream.calls)
    reply = serve.client().chat.completions.create(model="redline/refine", messages=QUESTION)

    assert reply.object == "chat.completion" and reply.model == "redline/refine"
    assert reply.choices[0].message.content == REVISED
    assert reply.choices[0].finish_reason == "stop"
    calls = upstream.since(mark)
    # draft, its verdict (3), the revision, its verdict (9): the whole trajectory
    assert [answer for _, answer in calls] == [
        DRAFT, json.dumps({"score": 3, "feedback": FEEDBACK}), REVISED,
        json.dumps({"score": 9, "feedback": ""})]
    assert calls[0][0]["model"] == upstream.server.model
    prompt = sum(words(str(m.get("content") or "")) for r, _ in calls for m in r["messages"])
    completion = sum(words(answer) for _, answer in calls)
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt, completion)
    assert reply.usage.total_tokens == prompt + completion
    extra = reply.model_extra or {}
    info = extra["redline"]
    assert info["run"] == "refine" and info["stop_reason"] == "threshold"
    assert info["score"] == pytest.approx(0.9) and info["rounds"] == 2
    assert info["llm_calls"] == 4 and info["error"] is None
    assert info["critiques"][0]["critic"] == "judge"


def test_system_prompt_and_earlier_turns_reach_the_loop(serve: Serve, upstream: Upstream) -> None:
    mark = len(upstream.calls)
    serve.client().chat.completions.create(model="redline/refine", messages=[
        {"role": "system", "content": "Answer in English."},
        {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there"},
        {"role": "user", "content": "What is Paris?"}])
    draft_request = upstream.since(mark)[0][0]
    assert draft_request["messages"][0] == {"role": "system", "content": "Answer in English."}
    user = draft_request["messages"][-1]["content"]
    assert "User: Hello" in user and "Assistant: Hi there" in user
    assert user.rstrip().endswith("What is Paris?")


def test_streaming_with_the_official_client(serve: Serve) -> None:
    stream = serve.client().chat.completions.create(
        model="redline/refine", messages=QUESTION, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REVISED
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and all(f is None for f in finishes[:-1])
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    last_choice = [c for c in chunks if c.choices][-1]
    assert (last_choice.model_extra or {})["redline"]["stop_reason"] == "threshold"


def test_streaming_sends_progress_as_sse_comments(serve: Serve) -> None:
    with httpx.stream("POST", f"{serve.base_url}/chat/completions", timeout=60, json={
            "model": "redline/refine", "messages": QUESTION, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    comments = [line for line in lines if line.startswith(":")]
    assert comments[0].startswith(": redline round=0 node=critique best=0.300")
    assert any("round=1" in c and "best=0.900" in c for c in comments)
    assert lines[-1] == "data: [DONE]"
    assert lines.index(comments[-1]) < lines.index(next(x for x in lines if x.startswith("data")))


def test_tools_are_passed_through_untouched(serve: Serve, upstream: Upstream) -> None:
    mark = len(upstream.calls)
    tools = [{"type": "function", "function": {"name": "now", "parameters": {
        "type": "object", "properties": {}}}}]
    raw = serve.client().chat.completions.with_raw_response.create(
        model="redline/refine", messages=QUESTION, tools=tools, temperature=0.3)
    reply = raw.parse()
    assert raw.headers["x-redline-passthrough"] == "tools"
    assert reply.choices[0].message.content == "a tool-using reply"
    [(request, _)] = upstream.since(mark)
    assert request["tools"] == tools and request["temperature"] == 0.3
    assert request["model"] == upstream.server.model and request["messages"] == QUESTION
    assert "redline" not in (reply.model_extra or {})


def test_n_and_logprobs_are_refused_with_openai_errors(serve: Serve, upstream: Upstream) -> None:
    mark = len(upstream.calls)
    with pytest.raises(openai.BadRequestError) as info:
        serve.client().chat.completions.create(model="redline/refine", messages=QUESTION, n=2)
    assert info.value.status_code == 400
    body = info.value.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}
    assert (body["type"], body["param"], body["code"]) == (
        "invalid_request_error", "n", "unsupported_parameter")
    assert "returns one answer" in body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        serve.client().chat.completions.create(model="redline/refine", messages=QUESTION,
                                               logprobs=True)
    assert info.value.body["param"] == "logprobs"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as missing:
        serve.client().chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert "redline/refine" in missing.value.message
    assert upstream.since(mark) == []  # nothing was spent


def test_a_broken_critic_is_a_500_and_the_server_stays_up(serve: Serve) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        serve.client().chat.completions.create(
            model="redline/refine", messages=[{"role": "user", "content": "BREAK it"}])
    body = info.value.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "server_error" and body["error"]["code"] == "refine_failed"
    assert "judge" in body["error"]["message"]
    assert body["redline"]["stop_reason"] == "error"
    again = serve.client().chat.completions.create(model="redline/refine", messages=QUESTION)
    assert again.choices[0].message.content == REVISED


def test_a_body_too_large_is_413(serve: Serve) -> None:
    big = [{"role": "user", "content": "x" * 30_000}]
    with pytest.raises(openai.APIStatusError) as info:
        serve.client().chat.completions.create(model="redline/refine", messages=big)
    assert info.value.status_code == 413
    assert info.value.response.json()["error"]["code"] == "request_too_large"


def test_a_body_nested_too_deeply_is_a_400_and_the_server_stays_up(serve: Serve) -> None:
    deep = "[" * 9000 + "]" * 9000  # 18 KB, under --max-body; past the JSON parser's depth
    response = httpx.post(f"{serve.base_url}/chat/completions", content=deep, timeout=30)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_json")
    assert error["message"] == "the body is nested more than 256 levels deep"
    again = serve.client().chat.completions.create(model="redline/refine", messages=QUESTION)
    assert again.choices[0].message.content == REVISED


@pytest.mark.parametrize(("body", "param", "message"), [
    ('{"model": "redline/refine", "messages": [{"role": "user", "content": "Paris \\ud800"}]}',
     "messages[0].content", "messages[0].content is not valid Unicode text: it holds a lone "
     "surrogate"),
    ('{"model": "redline/refine", "messages": [{"role": "user", "content": "Hi"}], '
     '"tools": [{"type": "function", "function": {"name": "\\udfff"}}]}',
     "tools[0].function.name", "tools[0].function.name is not valid Unicode text"),
    ('{"model": 5, "messages": [{"role": "user", "content": "Hi"}]}',
     "model", "'model' must be a string (redline/refine), got a number"),
    ('{"model": "redline/refine", "messages": [{"role": "user", "content": [5]}]}',
     "messages[0].content[0]", "messages[0].content[0] must be a content part: an object "
     "with a string 'type'"),
    ('{"model": "redline/refine", "messages": [{"role": "user", "content": '
     '[{"type": "text", "text": 5}]}]}',
     "messages[0].content[0].text", "messages[0].content[0].text must be a string, got a "
     "number"),
    ('{"model": "redline/refine", "messages": [{"role": "user", "content": "Hi"}], '
     '"tools": 5}', "tools", "'tools' must be a list of objects, got a number"),
    ('{"model": "redline/refine", "messages": [{"role": "user", "content": "Hi"}], '
     '"tools": ["now"]}', "tools", "'tools' must be a list of objects, got an array"),
    # Parsed, but too deep to pass on: Python's JSON encoder would give up on it.
    ('{"model": "redline/refine", "messages": [{"role": "user", "content": "Hi"}], '
     '"tools": [{"type": "function", "function": {"name": "f", "parameters": '
     + "[" * 950 + "]" * 950 + "}}]}", None, "the body is nested more than 256 levels deep"),
], ids=["lone-surrogate", "lone-surrogate-passed-through", "model-not-a-string",
        "part-not-an-object", "text-not-a-string", "tools-not-a-list", "tool-not-an-object",
        "too-deep-to-pass-through"])
def test_malformed_fields_are_400s_that_name_them_before_any_work(
        serve: Serve, upstream: Upstream, body: str, param: str | None, message: str) -> None:
    mark = len(upstream.server.requests)
    response = httpx.post(f"{serve.base_url}/chat/completions", content=body,
                          headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert error["message"].startswith(message)
    assert upstream.server.requests[mark:] == []  # nothing was sent upstream


def test_models_and_healthz(serve: Serve) -> None:
    models = serve.client().models.list()
    assert [m.id for m in models.data] == ["redline/refine"]
    health = httpx.get(f"{serve.root}/healthz").json()
    assert health["status"] == "ok" and health["models"] == ["redline/refine"]
    missing = httpx.get(f"{serve.root}/v1/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_metrics_count_what_happened(serve: Serve, upstream: Upstream) -> None:
    before = _metrics(serve)
    mark = len(upstream.calls)
    serve.client().chat.completions.create(model="redline/refine", messages=QUESTION)
    with pytest.raises(openai.BadRequestError):
        serve.client().chat.completions.create(model="redline/refine", messages=QUESTION, n=3)
    after = _metrics(serve)

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta('redline_serve_requests_total{model="refine",status="200"}') == 1
    assert delta('redline_serve_requests_total{model="refine",status="400"}') == 1
    assert delta('redline_serve_stop_reasons_total{model="refine",reason="threshold"}') == 1
    assert delta('redline_serve_rounds_bucket{model="refine",le="2"}') == 1
    assert delta('redline_serve_rounds_bucket{model="refine",le="1"}') == 0
    assert delta('redline_serve_llm_calls_total{model="refine"}') == 4
    spent = sum(words(answer) for _, answer in upstream.since(mark))
    assert delta('redline_serve_tokens_total{model="refine",kind="completion"}') == spent
    assert delta('redline_serve_request_seconds_count{model="refine"}') == 2
    assert after["redline_serve_requests_active"] == 0


def test_a_client_that_leaves_has_its_run_cancelled(serve: Serve, upstream: Upstream) -> None:
    upstream.release.clear()
    before = _metrics(serve)
    mark = len(upstream.calls)
    slow = {"model": "redline/refine", "messages": [{"role": "user", "content": "SLOW"}]}
    try:
        with pytest.raises(httpx.ReadTimeout):  # the client gives up while the draft is slow
            httpx.post(f"{serve.base_url}/chat/completions", json=slow, timeout=2)
        deadline = time.monotonic() + 10
        while _active(serve) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _active(serve) == 0  # the slot is free while the upstream is still busy
    finally:
        upstream.release.set()
    deadline = time.monotonic() + 10
    while not upstream.since(mark) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    # The slow draft was the run's last call: no verdict, no revision after it.
    assert [answer for _, answer in upstream.since(mark)] == [DRAFT]
    after = _metrics(serve)
    key = 'redline_serve_requests_total{model="refine",status="499"}'
    assert after.get(key, 0.0) - before.get(key, 0.0) == 1
    assert after["redline_serve_requests_active"] == 0


def _metrics(serve: Serve) -> dict[str, float]:
    response = httpx.get(f"{serve.root}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


# -- other configurations ----------------------------------------------------------------


def test_auth_config_file_and_the_upstream_key_kept_secret(
        upstream: Upstream, tmp_path: Path) -> None:
    config = tmp_path / "runs.toml"
    config.write_text('[runs.careful]\ncritics = ["judge"]\nbudget = {max_rounds = 2}\n\n'
                      '[runs.quick]\nbudget = {max_rounds = 0}\n')
    secret = "sk-upstream-" + "9" * 24
    server = Serve(["--config", str(config), "--upstream", upstream.server.base_url,
                    "--model", upstream.server.model],
                   tmp_path, env={"REDLINE_SERVE_API_KEY": "letmein", "OPENAI_API_KEY": secret})
    try:
        with pytest.raises(openai.AuthenticationError) as info:
            server.client(api_key="wrong").chat.completions.create(
                model="redline/quick", messages=QUESTION)
        assert info.value.body["code"] == "invalid_api_key"  # type: ignore[index]
        assert httpx.get(f"{server.base_url}/models").status_code == 401
        assert httpx.get(f"{server.root}/healthz").status_code == 200
        client = server.client(api_key="letmein")
        assert sorted(m.id for m in client.models.list().data) == ["redline/careful",
                                                                   "redline/quick"]
        quick = client.chat.completions.create(model="redline/quick", messages=QUESTION)
        assert quick.choices[0].message.content == DRAFT
        assert (quick.model_extra or {})["redline"]["stop_reason"] in ("sampled", "threshold")
        careful = client.chat.completions.create(model="redline/careful", messages=QUESTION)
        assert careful.choices[0].message.content == REVISED
        with pytest.raises(openai.InternalServerError) as broke:
            client.chat.completions.create(model="redline/careful",
                                           messages=[{"role": "user", "content": "BREAK"}])
        assert secret not in broke.value.response.text
    finally:
        server.close()
    assert secret not in server.log.read_text()


def test_a_full_queue_answers_429_with_retry_after(upstream: Upstream, tmp_path: Path) -> None:
    server = Serve(["--upstream", upstream.server.base_url, "--model", upstream.server.model,
                    "--max-rounds", "0", "--concurrency", "1", "--queue", "0"], tmp_path)
    upstream.release.clear()
    outcome: dict[str, Any] = {}

    def slow() -> None:
        outcome["reply"] = server.client(timeout=60).chat.completions.create(
            model="redline/refine", messages=[{"role": "user", "content": "SLOW"}])

    thread = threading.Thread(target=slow)
    try:
        mark = len(upstream.calls)
        thread.start()
        deadline = time.monotonic() + 30
        while not any("SLOW" in json.dumps(r["messages"]) for r in upstream.server.requests[
                len(upstream.server.requests) - 3:]) and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(openai.RateLimitError) as info:
            server.client().chat.completions.create(model="redline/refine", messages=QUESTION)
        assert int(info.value.response.headers["retry-after"]) >= 1
        assert info.value.body["code"] == "server_busy"  # type: ignore[index]
        upstream.release.set()
        thread.join(30)
        assert outcome["reply"].choices[0].message.content == DRAFT
        after = server.client().chat.completions.create(model="redline/refine",
                                                         messages=QUESTION)
        assert after.choices[0].message.content == DRAFT
        assert len(upstream.since(mark)) == 4
    finally:
        upstream.release.set()
        thread.join(30)
        server.close()


def test_a_failing_preflight_exits_2_with_one_line(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "redline", "serve", "--port", "0",
                          "--upstream", "http://127.0.0.1:9/v1", "--model", "m"],
                         capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("redline: error: run 'refine':")


def test_a_bad_config_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "runs.json"
    config.write_text(json.dumps({"runs": {"Bad Name": {}}}))
    out = subprocess.run([sys.executable, "-m", "redline", "serve", "--config", str(config)],
                         capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 2 and "run name 'Bad Name'" in out.stderr
    out = subprocess.run([sys.executable, "-m", "redline", "serve", "--config", str(config),
                          "-c", "judge"], capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 2 and "with --config, put --critic in the file" in out.stderr



@pytest.mark.parametrize(("name", "text", "says"), [
    ("runs.json", "[" * 40_000 + "]" * 40_000, "is not valid JSON: nested too deep"),
    ("runs.toml", "runs = " + "[" * 40_000 + "]" * 40_000,
     "is not TOML redline reads: it is nested too deeply"),
    ("runs.json", '{"runs": {"a": {}}, "runs": {"b": {}}}',
     "is not valid JSON: key 'runs' given twice"),
], ids=["json", "toml", "json-key-twice"])
def test_a_config_too_deep_or_with_a_key_twice_exits_2_with_one_line(
        tmp_path: Path, name: str, text: str, says: str) -> None:
    config = tmp_path / name
    config.write_text(text)
    out = subprocess.run([sys.executable, "-m", "redline", "serve", "--config", str(config)],
                         capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 2
    [line] = out.stderr.strip().splitlines()
    assert line.startswith(f"redline: error: serve config {str(config)!r} {says}"), line


def test_a_port_out_of_range_is_refused_by_the_option(tmp_path: Path) -> None:
    # Without the range, 70000 wrapped to 4464; the upstream cannot answer, so nothing
    # would be served either way.
    out = subprocess.run([sys.executable, "-m", "redline", "serve", "--port", "70000",
                          "--upstream", "http://127.0.0.1:9/v1", "--model", "m"],
                         capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 2
    assert "Error: Invalid value for '--port': 70000 is not in the range 0<=x<=65535." \
        in out.stderr.splitlines()
    assert "Traceback" not in out.stderr


def test_config_runs_that_revise_get_the_reviser_model_and_its_preflight(
        tmp_path: Path) -> None:
    config = tmp_path / "runs.json"
    config.write_text(json.dumps({"runs": {"baseline": {"preset": "best-of-n"},
                                           "fix": {"preset": "self-refine"}}}))
    with OpenAICompatServer() as upstream:
        out = subprocess.run([sys.executable, "-m", "redline", "serve", "--port", "0",
                              "--config", str(config), "--upstream", upstream.base_url,
                              "--reviser-model", "big",
                              "--reviser-base-url", "http://127.0.0.1:9/v1"],
                             capture_output=True, text=True, env=ENV, timeout=120)
        assert not upstream.requests
    # best-of-n took no reviser (it would refuse it); self-refine's is preflighted.
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("redline: error: run 'fix':")
    assert "'big' at http://127.0.0.1:9/v1" in lines[0]


STUCK_CRITIC = '''
import asyncio

from redline import critic

def make(arg):
    """Takes 9 s, and swallows the cancellation that the run's deadline sends."""
    @critic(name="stuck")
    async def stuck(text: str) -> float:
        loop = asyncio.get_running_loop()
        end = loop.time() + 9
        while loop.time() < end:
            try:
                await asyncio.sleep(end - loop.time())
            except asyncio.CancelledError:
                pass
        return 1.0
    return stuck
'''


def test_a_run_past_its_timeout_is_504_and_a_wait_past_it_503(
        upstream: Upstream, tmp_path: Path) -> None:
    from tests.test_plugins import install_fake

    site = tmp_path / "site"
    site.mkdir()
    install_fake(site, "stuck-critic", "stuck_critic", STUCK_CRITIC,
                 {"stuck": "stuck_critic:make"})
    server = Serve(["--upstream", upstream.server.base_url, "--model", upstream.server.model,
                    "-c", "stuck", "--concurrency", "1", "--queue", "1",
                    "--request-timeout", "1", "--loop", "asyncio"], tmp_path,
                   env={"PYTHONPATH": str(site)})
    thread, outcome = _in_flight(server, QUESTION)
    try:
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as info:  # waits 1 s for the slot
            server.client(timeout=60).chat.completions.create(model="redline/refine",
                                                               messages=QUESTION)
        assert time.monotonic() - started < 5
        assert info.value.status_code == 503
        assert info.value.body["code"] == "queue_timeout"  # type: ignore[index]
        assert int(info.value.response.headers["retry-after"]) >= 1
        thread.join(30)
        first_error = outcome["error"]
        assert first_error.status_code == 504  # 1 s + the 5 s grace
        assert first_error.body["code"] == "timeout"  # type: ignore[index]
        assert first_error.body["message"] == "the run took longer than 1 s"  # type: ignore[index]
        # The stuck critic holds its slot until it ends (9 s in), then gives it back.
        assert _active(server) == 1
        deadline = time.monotonic() + 30
        while _active(server) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _active(server) == 0 and server.proc.poll() is None
        metrics = httpx.get(f"{server.root}/metrics", timeout=10).text
        assert 'status="504"' in metrics and 'status="503"' in metrics
    finally:
        thread.join(30)
        server.close()



@pytest.mark.parametrize(("stop", "grace", "answer_after"), [
    (signal.SIGTERM, [], 0.5), (signal.SIGINT, [], 0.5),
    (signal.SIGTERM, ["--shutdown-grace", "20"], 6.5),  # past the default 5 s grace
])
def test_a_stop_signal_ends_the_server_with_exit_0(
        upstream: Upstream, tmp_path: Path, stop: signal.Signals, grace: list[str],
        answer_after: float) -> None:
    server = Serve(["--upstream", upstream.server.base_url, "--model", upstream.server.model,
                    "--max-rounds", "0", *grace], tmp_path)
    upstream.release.clear()
    answered: list[str | None] = []

    def in_flight() -> None:
        reply = server.client(timeout=60).chat.completions.create(
            model="redline/refine", messages=[{"role": "user", "content": "SLOW"}])
        answered.append(reply.choices[0].message.content)

    thread = threading.Thread(target=in_flight)
    try:
        thread.start()
        _wait_for_a_run(server)
        server.proc.send_signal(stop)
        time.sleep(answer_after)
        upstream.release.set()  # the request in flight is answered, then the server stops
        assert server.proc.wait(30) == 0
        thread.join(30)
        assert answered == [DRAFT]
        log = server.log.read_text()
        assert log.splitlines() == [f"redline: serving redline/refine on {server.base_url}"]
    finally:
        upstream.release.set()
        thread.join(30)
        server.close()


def test_a_request_past_the_shutdown_grace_is_answered_503_shutting_down(
        upstream: Upstream, tmp_path: Path) -> None:
    server = Serve(["--upstream", upstream.server.base_url, "--model", upstream.server.model,
                    "--max-rounds", "0", "--shutdown-grace", "1"], tmp_path)
    upstream.release.clear()
    thread, outcome = _in_flight(server, [{"role": "user", "content": "SLOW"}])
    try:
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0  # the upstream never answers: cut at 1 s
        thread.join(30)
        error = outcome["error"]
        assert error.status_code == 503 and error.response.headers["retry-after"] == "1"
        assert error.body["code"] == "shutting_down"  # type: ignore[index]
        assert "Exception in ASGI application" not in server.log.read_text()
    finally:
        upstream.release.set()
        thread.join(30)
        server.close()


def _in_flight(server: Serve, messages: list[dict[str, str]]
               ) -> tuple[threading.Thread, dict[str, Any]]:
    """A chat request sent from a thread, once it is running; an error status it gets
    lands in the dict's ``"error"``."""
    outcome: dict[str, Any] = {}

    def send() -> None:
        try:
            server.client(timeout=60).chat.completions.create(model="redline/refine",
                                                               messages=messages)
        except openai.APIStatusError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=send)
    thread.start()
    _wait_for_a_run(server)
    return thread, outcome


def _active(server: Serve) -> int:
    """Chat requests running now, as /healthz says."""
    return int(httpx.get(f"{server.root}/healthz", timeout=10).json()["active"])


def _wait_for_a_run(server: Serve, timeout: float = 30) -> None:
    """Until a chat request is running (or `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while _active(server) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)


def test_begin_shutdown_needs_an_app_create_app_made() -> None:
    from starlette.applications import Starlette

    from redline.serve import begin_shutdown

    with pytest.raises(TypeError, match="create_app"):
        begin_shutdown(Starlette())
