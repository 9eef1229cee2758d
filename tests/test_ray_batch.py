"""``redline batch --ray``: a batch sharded over a local Ray instance the test starts."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from redline.testing import OpenAICompatServer

pytest.importorskip("ray")

ENV = {k: v for k, v in os.environ.items()
       if k not in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "REDLINE_MODEL", "RAY_ADDRESS")}
# Loopback only, and no token to hand around: the test's instance is private.
ENV |= {"RAY_DISABLE_USAGE_STATS": "1", "RAY_AUTH_MODE": "disabled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Any:
    ray = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    port = free_port()
    temp = tmp_path_factory.mktemp("ray")
    start = subprocess.run([ray, "start", "--head", f"--port={port}", "--num-cpus=2",
                            "--node-ip-address=127.0.0.1", "--include-dashboard=false",
                            "--disable-usage-stats",
                            f"--temp-dir={temp}"], env=ENV, capture_output=True, text=True,
                           timeout=180)
    assert start.returncode == 0, start.stderr
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], env=ENV, capture_output=True, timeout=120)


def handler(request: dict[str, Any]) -> str:
    if "json_schema" in json.dumps(request.get("response_format") or {}):
        answer = request["messages"][-1]["content"]
        return json.dumps({"score": 10 if "answer to" in answer else 2, "feedback": ""})
    return "answer to " + request["messages"][-1]["content"]


def test_a_batch_runs_on_ray_and_resumes_without_duplicates(ray_head: str,
                                                          tmp_path: Path) -> None:
    items = tmp_path / "in.jsonl"
    items.write_text("".join(json.dumps({"id": f"q{i}", "task": f"question {i}"}) + "\n"
                             for i in range(9)))
    out = tmp_path / "out.jsonl"
    # A previous run finished q0 and q1 and was cut off in the middle of a line.
    with OpenAICompatServer(handler=handler) as server:
        args = [sys.executable, "-m", "redline", "batch", str(items), "-o", str(out),
                "--base-url", server.base_url, "--model", server.model, "--ray", ray_head,
                "--concurrency", "2", "-q"]
        # Run the batch locally for two items to make a real partial output first.
        head = tmp_path / "head.jsonl"
        head.write_text("".join(items.read_text().splitlines(True)[:2]))
        local = subprocess.run([sys.executable, "-m", "redline", "batch", str(head), "-o",
                                str(out), "--base-url", server.base_url, "--model",
                                server.model, "-q"], capture_output=True, text=True,
                               env=ENV, timeout=300)
        assert local.returncode == 0, local.stderr
        with out.open("a") as f:
            f.write('{"id": "q2", "schema_ver')  # a torn line: the crash cut it
        before = len(server.requests)
        run = subprocess.run([*args, "--resume"], capture_output=True, text=True, env=ENV,
                             timeout=600)
        assert run.returncode == 0, run.stderr
        made = [r["messages"][-1]["content"] for r in server.requests[before:]
                if not r.get("response_format")]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert "redline_batch" in lines[0]
    ids = Counter(doc["id"] for doc in lines[1:])
    assert set(ids) == {f"q{i}" for i in range(9)} and max(ids.values()) == 1
    assert sorted(made) == sorted(f"question {i}" for i in range(2, 9))  # q0, q1 kept
    assert all(doc["stop_reason"] == "threshold" for doc in lines[1:])



def refused_port(sock: socket.socket) -> int:
    """A port where connections are refused: `sock` holds it bound, never listening."""
    sock.bind(("127.0.0.1", 0))
    return int(sock.getsockname()[1])


def test_an_address_where_no_ray_cluster_listens_fails_in_seconds(tmp_path: Path) -> None:
    items = tmp_path / "in.jsonl"
    items.write_text(json.dumps({"id": "q0", "task": "question 0"}) + "\n")
    out = tmp_path / "out.jsonl"
    with socket.socket() as bound, OpenAICompatServer(handler=handler) as server:
        address = f"127.0.0.1:{refused_port(bound)}"
        # Before the check, ray.init retried the GCS for minutes (and ignored SIGTERM).
        run = subprocess.run([sys.executable, "-m", "redline", "batch", str(items), "-o",
                              str(out), "--base-url", server.base_url, "--model",
                              server.model, "--ray", address, "-q"],
                             capture_output=True, text=True, env=ENV, timeout=60)
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines() == [
        f"redline: error: no Ray cluster answers at {address} (Connection refused): start "
        "one with `ray start --head` or pass --ray auto"]
    assert not out.exists()
    assert server.requests == []  # checked before the model's preflight


def test_ray_client_addresses_are_checked_too_and_auto_is_left_to_ray() -> None:
    from redline.errors import ConfigError
    from redline.workflows.ray_batch import _check_listening

    with socket.socket() as bound:
        address = f"ray://127.0.0.1:{refused_port(bound)}"
        with pytest.raises(ConfigError, match=f"no Ray cluster answers at {address} "):
            _check_listening(address)
    with pytest.raises(ConfigError, match="port 70000, outside 1-65535"):
        _check_listening("127.0.0.1:70000")
    for address in ("auto", "local", "no-port"):
        _check_listening(address)  # Ray's own behaviour: nothing to probe here


def test_a_listener_that_is_not_ray_is_refused_in_seconds(
        ray_head: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import http.server
    import threading

    from redline.errors import ConfigError
    from redline.workflows import ray_batch

    _check_listening = ray_batch._check_listening
    _check_listening(ray_head)  # the real GCS answers the HTTP/2 probe
    # Before: a TCP connection was enough, and ray.init then retried for minutes.
    web = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=web.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(ConfigError, match="listens at .*, but not a Ray cluster"):
            _check_listening(f"127.0.0.1:{web.server_address[1]}")
    finally:
        web.shutdown()
        web.server_close()
    monkeypatch.setattr(ray_batch, "_PROBE_TIMEOUT", 0.5)
    with socket.socket() as silent:  # accepts (the backlog does) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with pytest.raises(ConfigError, match=r"\(no answer within 0.5 s\)"):
            _check_listening(f"127.0.0.1:{silent.getsockname()[1]}")
