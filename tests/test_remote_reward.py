"""RemoteRewardCritic against a loopback server speaking vLLM's and TEI's protocols."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from redline.critics import Calibration
from redline.critics.remote_reward import RemoteRewardCritic, remote_rm_critic
from redline.errors import ConfigError, CriticError, FeedbackSourceError
from redline.plugins import build_critic
from redline.testing import acheck_critic
from redline.types import Candidate, Task

pytestmark = pytest.mark.rm

TASK = Task(prompt="What is the capital of France?", id="capital")
ANSWERS = ["Paris.", "The capital of France is Paris.", "Rome.", "I do not know.",
           "Lyon is a city in France."]


def reward(text: str) -> float:
    """The served model: longer is a little better, mentioning Paris much better."""
    return round(len(text) / 20 - 1 + (2.0 if "Paris" in text else 0.0), 6)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


class RewardServer:
    """vLLM's ``/classify`` and ``/pooling`` and TEI's ``/predict`` on 127.0.0.1.

    Responses have the servers' shapes; the reward of an input is ``reward(answer)``
    (``reward(text)`` for a pre-rendered text). Like the real servers, it applies the
    sigmoid unless asked for raw values. ``script`` holds HTTP statuses (or
    ``(status, body)``) to answer before answering normally.
    """

    def __init__(self, script: list[Any] | None = None, *, delay: float = 0.0,
                 per_token: bool = False, outputs: int = 1) -> None:
        self.script = deque(script or ())
        self.delay = delay
        self.per_token = per_token
        self.outputs = outputs
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((path, body))
            scripted = self.script.popleft() if self.script else None
        if scripted is not None:
            status, reply = scripted if isinstance(scripted, tuple) else (scripted, None)
            return status, reply if reply is not None else {"error": {
                "message": f"scripted {status}", "code": status}}
        time.sleep(self.delay)
        if path == "/predict":
            rows = [reward(i[-1]) for i in body["inputs"]]
            raw = body.get("raw_scores", False)
            return 200, [[{"score": r if raw else sigmoid(r), "label": f"LABEL_{k}"}
                          for k in range(self.outputs)] for r in rows]
        if path not in ("/classify", "/pooling"):
            return 404, {"error": {"message": "Not Found", "code": 404}}
        if "messages" in body:
            roles = [m["role"] for m in body["messages"]]
            if roles != ["user", "assistant"]:
                return 400, {"error": {"message": f"bad roles {roles}", "code": 400}}
            rows = [reward(body["messages"][1]["content"])]
        else:
            rows = [reward(text) for text in body["input"]]
        if body.get("use_activation") is not False:
            rows = [sigmoid(r) for r in rows]
        if path == "/classify":
            data = [{"index": i, "label": "LABEL_0", "probs": [r] * self.outputs,
                     "num_classes": self.outputs} for i, r in enumerate(rows)]
        else:
            data = [{"index": i, "object": "pooling",
                     "data": [[r - 1], [r]] if self.per_token else [r] * self.outputs}
                    for i, r in enumerate(rows)]
        data.reverse()  # the order is by "index", not by position
        return 200, {"id": "x", "object": "list", "created": 0, "model": "served-rm",
                     "data": data, "usage": {"prompt_tokens": 1, "total_tokens": 1}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, reply = server.answer(self.path, body)
                data = json.dumps(reply).encode() if not isinstance(reply, str) \
                    else reply.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

        return Handler


@pytest.fixture
def server():
    s = RewardServer()
    yield s
    s.close()


async def judge(critic: RemoteRewardCritic, answers: list[str]) -> list[Any]:
    try:
        return await asyncio.gather(*(critic.critique(TASK, Candidate(text=a))
                                      for a in answers))
    finally:
        await critic.aclose()


async def test_vllm_classify_chat_requests_get_raw_rewards(server: RewardServer) -> None:
    critic = RemoteRewardCritic(server.url, model="served-rm")
    assert (critic.protocol, critic.url) == ("vllm", server.url + "/classify")
    got = await judge(critic, ANSWERS)
    assert [c.raw for c in got] == [reward(a) for a in ANSWERS]
    assert [c.score for c in got] == pytest.approx([sigmoid(round(reward(a), 4))
                                                    for a in ANSWERS])
    assert all(c.critic == "rm-remote" and c.passed is None for c in got)
    assert got[0].evidence["server"] == server.url + "/classify"
    assert len(server.requests) == len(ANSWERS)  # one conversation per chat request
    path, body = server.requests[0]
    assert path == "/classify"
    assert body["model"] == "served-rm" and body["use_activation"] is False
    assert body["messages"][0] == {"role": "user", "content": TASK.prompt}
    assert body["messages"][1]["role"] == "assistant"
    assert body["truncate_prompt_tokens"] == -1 and body["truncation_side"] == "left"


async def test_vllm_pooling_batches_rendered_inputs(server: RewardServer) -> None:
    critic = RemoteRewardCritic(server.url + "/pooling", render=lambda p, a: f"Q: {p}\nA: {a}",
                                batch_size=4, truncate=False)
    answers = [f"{ANSWERS[i % len(ANSWERS)]} ({i})" for i in range(10)]
    got = await judge(critic, answers)
    assert [c.raw for c in got] == [reward(f"Q: {TASK.prompt}\nA: {a}") for a in answers]
    assert len(server.requests) == math.ceil(10 / 4)
    assert sorted(len(body["input"]) for _, body in server.requests) == [2, 4, 4]
    sent = [text for _, body in server.requests for text in body["input"]]
    assert sorted(sent) == sorted(f"Q: {TASK.prompt}\nA: {a}" for a in answers)
    path, body = server.requests[0]
    assert path == "/pooling" and "model" not in body and "truncate_prompt_tokens" not in body


async def test_a_per_token_pooling_output_is_read_at_the_last_token() -> None:
    s = RewardServer(per_token=True)
    try:
        got = await judge(RemoteRewardCritic(s.url + "/pooling/"), ANSWERS[:2])
        assert [c.raw for c in got] == [reward(a) for a in ANSWERS[:2]]
    finally:
        s.close()


async def test_tei_predict_batches_text_pairs(server: RewardServer) -> None:
    critic = RemoteRewardCritic(server.url + "/predict", batch_size=8)
    assert critic.protocol == "tei"
    answers = [f"{ANSWERS[i % len(ANSWERS)]} #{i}" for i in range(32)]
    got = await judge(critic, answers)
    assert [c.raw for c in got] == pytest.approx([reward(a) for a in answers], abs=1e-6)
    assert len(server.requests) == 32 // 8
    assert all(path == "/predict" and len(body["inputs"]) == 8
               for path, body in server.requests)
    sent = [pair for _, body in server.requests for pair in body["inputs"]]
    assert sorted(sent) == sorted([TASK.prompt, a] for a in answers)
    _, body = server.requests[0]
    assert body["raw_scores"] is True
    assert body["truncate"] is True and body["truncation_direction"] == "Left"
    explicit = RemoteRewardCritic(server.url, protocol="tei")
    assert explicit.url == server.url + "/predict"


async def test_the_critic_passes_the_conformance_check(server: RewardServer) -> None:
    critic = RemoteRewardCritic(server.url + "/predict")
    try:
        report = await acheck_critic(critic, [(TASK, a) for a in ANSWERS], concurrency=16)
    finally:
        await critic.aclose()
    assert report.ok and report.concurrent_calls == 16


async def test_transient_failures_are_retried() -> None:
    s = RewardServer([503, 429, 500])
    try:
        critic = RemoteRewardCritic(s.url + "/predict", max_attempts=4, max_wait=0.01)
        (got,) = await judge(critic, ["Paris."])
        assert got.raw == reward("Paris.") and len(s.requests) == 4
    finally:
        s.close()


async def test_a_server_that_is_down_is_a_feedback_source_error_naming_the_url() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    critic = RemoteRewardCritic(f"http://127.0.0.1:{port}", max_attempts=2, max_wait=0.01)
    with pytest.raises(FeedbackSourceError) as info:
        await judge(critic, ["Paris."])
    message = str(info.value)
    assert f"http://127.0.0.1:{port}/classify" in message
    assert "failed 2 times" in message and "is the server running?" in message


async def test_a_slow_server_times_out_then_fails() -> None:
    s = RewardServer(delay=1.0)
    try:
        critic = RemoteRewardCritic(s.url + "/predict", timeout=0.2, max_attempts=2,
                                    max_wait=0.01)
        with pytest.raises(FeedbackSourceError, match="no answer within the 0.2 s timeout"):
            await judge(critic, ["Paris."])
    finally:
        s.close()


@pytest.mark.parametrize(("script", "outputs", "words"), [
    ([(400, {"error": {"message": "input too long", "code": 400}})], 1,
     r"rejected the request: HTTP 400: input too long"),
    ([404], 1, "vLLM serves /classify and /pooling"),
    ([(200, {"data": "nonsense"})], 1, "unexpected response"),
    ([(200, "<html>oops</html>")], 1, "not JSON"),
    ([], 2, "2 values per input; a reward model has one output"),
], ids=["400", "404", "malformed", "not-json", "two-outputs"])
async def test_rejections_and_bad_answers_are_critic_errors(script: list[Any], outputs: int,
                                                            words: str) -> None:
    s = RewardServer(script, outputs=outputs)
    try:
        with pytest.raises(CriticError, match=words) as info:
            await judge(RemoteRewardCritic(s.url), ["Paris."])
        assert s.url in str(info.value)
        assert len(s.requests) == 1  # a rejection is not retried
    finally:
        s.close()


async def test_the_calibration_is_applied(server: RewardServer, tmp_path: Path) -> None:
    Calibration(b=1.0, T=0.5, method="pairs", n=20, accuracy=0.9).save(tmp_path)
    critic = RemoteRewardCritic(server.url + "/predict", calibration=tmp_path)
    (got,) = await judge(critic, ["Paris."])
    assert got.score == pytest.approx(sigmoid((round(reward("Paris."), 4) - 1.0) / 0.5))
    assert got.evidence["calibrated"] is True
    with pytest.raises(ConfigError, match="no calibration at"):
        RemoteRewardCritic(server.url, calibration=tmp_path / "nothing")


async def test_rewards_gives_raw_values_for_calibration(server: RewardServer) -> None:
    critic = RemoteRewardCritic(server.url + "/predict")
    try:
        raw = await critic.rewards([("q", "Paris."), ("q", "Rome.")])
    finally:
        await critic.aclose()
    assert raw == pytest.approx([reward("Paris."), reward("Rome.")])


def test_urls_and_protocols_are_checked() -> None:
    for url, protocol, words in [("ftp://x/classify", None, "not an http"),
                                 ("http://x/predict", "vllm", "is a tei endpoint"),
                                 ("http://x", "grpc", "'vllm' or 'tei'")]:
        with pytest.raises(ConfigError, match=words):
            RemoteRewardCritic(url, protocol=protocol)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="batch_size"):
        RemoteRewardCritic("http://x", batch_size=0)


def test_the_plugin_reads_the_url_and_settings(tmp_path: Path) -> None:
    Calibration(b=2.0, T=1.0, method="labels", n=4).save(tmp_path)
    critic = build_critic(f"rm-remote:http://h:8080/predict calibration={tmp_path} model=m",
                          {"rm_batch_size": 5, "rm_device": "cuda"})
    assert isinstance(critic, RemoteRewardCritic)
    assert (critic.name, critic.protocol, critic.url, critic.model, critic.batch_size) == (
        "rm-remote", "tei", "http://h:8080/predict", "m", 5)
    assert critic.calibration.b == 2.0
    assert remote_rm_critic("http://h:8000 protocol=tei").url == "http://h:8000/predict"
    for arg, words in [(None, "needs a URL"), ("http://h size=3", "cannot read 'size=3'")]:
        with pytest.raises(ConfigError, match=words):
            remote_rm_critic(arg)
