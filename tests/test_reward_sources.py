"""One reward-model critic over any `RewardSource`: in-process, served, or a fake."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from redline.critics import Calibration, RemoteRewardCritic, RewardCritic, RewardModelCritic
from redline.errors import ConfigError, CriticError
from redline.feedback_sources import RewardSource, ServedRewardModel, TransformersRewardModel
from redline.testing import acheck_critic
from redline.types import Candidate, Task

pytestmark = pytest.mark.rm

TASK = Task(prompt="What is the capital of France?", id="capital")
ANSWERS = ["Paris.", "The capital of France is Paris.", "Rome is the capital of Italy.",
           "I do not know.", "one two three"]


class LengthRewards:
    """A fake source: the reward is the answer's length in words minus 3."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[str, str]]] = []

    async def rewards(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        self.calls.append(list(pairs))
        return [len(answer.split()) - 3.0 for _, answer in pairs]


class Broken:
    """A fake source that answers with `reply` whatever it is asked."""

    def __init__(self, reply: Any) -> None:
        self.reply = reply

    async def rewards(self, pairs: Sequence[tuple[str, str]]) -> Any:
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


async def test_a_fake_source_is_a_calibrated_critic() -> None:
    source = LengthRewards()
    assert isinstance(source, RewardSource)
    cal = Calibration(b=1.0, T=0.5, method="labels", n=10, accuracy=0.9)
    critic = RewardCritic(source, name="length-rm", calibration=cal)
    got = await critic.critique_many(TASK, [Candidate(text=a) for a in ANSWERS])
    assert len(source.calls) == 1  # one call for the batch
    assert [c.raw for c in got] == [len(a.split()) - 3.0 for a in ANSWERS]
    assert [c.score for c in got] == pytest.approx([cal.score(c.raw) for c in got])
    assert all(c.critic == "length-rm" and c.passed is None for c in got)
    assert got[0].evidence == {"truncated": None, "tokens": None, "calibrated": True,
                               "calibration": cal.model_dump()}
    assert "reward model scored" in got[0].feedback
    assert not critic.deterministic  # the fake does not say it is
    assert await critic.rewards([("q", "a b c d")]) == [1.0]
    await critic.preflight()  # a source without a preflight has nothing to check
    await critic.aclose()
    report = await acheck_critic(RewardCritic(source, deterministic=True),
                                 [(TASK, a) for a in ANSWERS], concurrency=8)
    assert report.ok


@pytest.mark.parametrize(("reply", "words"), [
    ([1.0], "gave 1 rewards for 2 answers"),
    ([1.0, math.nan], "not a finite reward"),
    (["high", "low"], "not a reward"),
    (CriticError("the model exploded"), "the model exploded"),
], ids=["count", "nan", "not-a-number", "source-error"])
async def test_a_source_that_breaks_is_a_critic_error_naming_the_critic(reply: Any,
                                                                       words: str) -> None:
    critic = RewardCritic(Broken(reply), name="my-rm")
    with pytest.raises(CriticError, match=words) as info:
        await critic.critique_many(TASK, [Candidate(text="a"), Candidate(text="b")])
    assert info.value.critic == "my-rm"


def test_what_is_not_a_source_is_refused() -> None:
    with pytest.raises(ConfigError, match="str is not a reward source"):
        RewardCritic("http://gpu-1:8000")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no calibration at"):
        RewardCritic(LengthRewards(), calibration="/no/such/folder")


class ServedFromLocal:
    """A loopback TEI ``/predict`` whose rewards come from an in-process model."""

    def __init__(self, model: TransformersRewardModel) -> None:
        self.model = model
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/predict"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        model = self.model

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(405)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                pairs = [(p, a) for p, a in body["inputs"]]
                raws = asyncio.run(model.rewards(pairs))
                data = json.dumps([[{"score": r, "label": "LABEL_0"}] for r in raws]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


@pytest.fixture(scope="module")
def local_model(tmp_path_factory: pytest.TempPathFactory) -> TransformersRewardModel:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from test_reward_model import build_reward_model

    return TransformersRewardModel(build_reward_model(tmp_path_factory.mktemp("rm-src")))


async def test_one_critic_gives_the_same_verdicts_over_the_local_and_the_served_model(
        local_model: TransformersRewardModel) -> None:
    server = ServedFromLocal(local_model)
    cal = Calibration(b=0.1, T=0.2, method="pairs", n=4, accuracy=1.0)
    served = RewardCritic(ServedRewardModel(server.url, batch_size=3), calibration=cal)
    local = RewardCritic(local_model, calibration=cal)
    try:
        await served.preflight()
        candidates = [Candidate(text=a) for a in ANSWERS]
        over_http = await asyncio.gather(*(served.critique(TASK, c) for c in candidates))
        in_process = await local.critique_many(TASK, candidates)
    finally:
        await served.aclose()
        server.close()
    assert len({c.raw for c in in_process}) == len(ANSWERS)  # the model tells them apart
    for a, b in zip(in_process, over_http, strict=True):
        assert b.raw == pytest.approx(a.raw, abs=1e-5)
        assert b.score == pytest.approx(a.score, abs=1e-4)
        assert b.feedback == a.feedback
    assert in_process[0].evidence["model"] == local_model.model
    assert in_process[0].evidence["tokens"] > 5
    assert over_http[0].evidence["server"] == server.url
    assert over_http[0].evidence["tokens"] is None
    assert local.deterministic and not served.deterministic


async def test_a_served_model_that_is_down_fails_the_preflight() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    critic = RemoteRewardCritic(f"http://127.0.0.1:{port}/predict")
    with pytest.raises(ConfigError, match=f"127.0.0.1:{port}/predict cannot be reached"):
        await critic.preflight()


def test_the_thin_constructors_are_the_one_critic() -> None:
    remote = RemoteRewardCritic("http://h:8080/predict")
    assert isinstance(remote, RewardCritic) and isinstance(remote.source, ServedRewardModel)
    assert issubclass(RewardModelCritic, RewardCritic)
    assert RewardModelCritic.critique_many is RewardCritic.critique_many
    assert RemoteRewardCritic.critique_many is RewardCritic.critique_many


def test_a_served_model_used_from_two_event_loops_exits_cleanly() -> None:
    from test_remote_reward import RewardServer, reward

    script = textwrap.dedent("""
        import asyncio, sys, warnings
        warnings.simplefilter("error", ResourceWarning)
        from redline.critics import RemoteRewardCritic
        from redline.types import Candidate, Task
        critic = RemoteRewardCritic(sys.argv[1])
        for _ in range(2):  # a client per loop; neither is closed by hand
            got = asyncio.run(critic.critique(Task(prompt="Q"), Candidate(text="Paris.")))
            print(got.raw)
    """)
    server = RewardServer()
    try:
        out = subprocess.run([sys.executable, "-X", "dev", "-c", script,
                              server.url + "/predict"], capture_output=True, text=True,
                             timeout=120)
    finally:
        server.close()
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(reward("Paris."))] * 2
    assert "Event loop is closed" not in out.stderr and "Traceback" not in out.stderr
    assert "ResourceWarning" not in out.stderr and "unclosed" not in out.stderr
