"""`resolve_model`: model specs (objects and ``PROVIDER:NAME`` strings) and the environment.

Where a spec picks a server, a call is made to a loopback server to show it is that one.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from redline.errors import ConfigError
from redline.llm import LocalModel, OpenAIChat, TransformersChat, resolve_model
from redline.testing import OpenAICompatServer, ScriptedChat

ENV = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "REDLINE_MODEL", "REDLINE_MODEL_PATH",
       "OLLAMA_HOST")
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF")  # resolving only checks the file exists; nothing starts
    return path


class _Recorder(BaseHTTPRequestHandler):
    """Answers every chat request and keeps its path, Authorization header and body."""

    seen: list[dict[str, Any]]

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append({"path": self.path, "auth": self.headers.get("Authorization"),
                          "model": body["model"]})
        reply = json.dumps({
            "id": "1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "hello"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """A loopback server that records headers (OpenAICompatServer keeps bodies only)."""
    seen: list[dict[str, Any]] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1], seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_chat_model_is_returned_as_it_is() -> None:
    model = ScriptedChat(["a"])
    assert resolve_model(model) is model


async def test_openai_spec_uses_openais_api_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    model = resolve_model("openai:gpt-4o-mini")
    assert isinstance(model, OpenAIChat)
    assert (model.model, model.base_url) == ("gpt-4o-mini", "https://api.openai.com/v1")


async def test_openai_spec_goes_to_openai_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenAICompatServer(["fine"]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        model = resolve_model("openai:gpt-4o-mini")
        completion = await model.complete(HI)
        await model.aclose()
    assert completion.text == "fine"
    assert [r["model"] for r in server.requests] == ["gpt-4o-mini"]


def test_openai_spec_without_key_or_server_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        resolve_model("openai:gpt-4o-mini")


async def test_vllm_spec_defaults_to_vllms_port_and_follows_openai_base_url(
        monkeypatch: pytest.MonkeyPatch) -> None:
    model = resolve_model("vllm:Qwen/Qwen2.5-7B-Instruct")
    assert isinstance(model, OpenAIChat)
    assert (model.model, model.base_url) == ("Qwen/Qwen2.5-7B-Instruct",
                                             "http://127.0.0.1:8000/v1")
    with OpenAICompatServer(["served"]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        model = resolve_model("vllm:Qwen/Qwen2.5-7B-Instruct")
        assert (await model.complete(HI)).text == "served"
        await model.aclose()
    assert server.requests[0]["model"] == "Qwen/Qwen2.5-7B-Instruct"


async def test_ollama_spec_keeps_its_tag_and_reaches_ollama_host_without_the_openai_key(
        monkeypatch: pytest.MonkeyPatch, recorder: tuple[int, list[dict[str, Any]]]) -> None:
    port, seen = recorder
    monkeypatch.setenv("OLLAMA_HOST", f"0.0.0.0:{port}")
    # Settings for another server must not leak to Ollama, the key above all.
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    model = resolve_model("ollama:qwen2.5:7b")
    assert (model.model, model.base_url) == ("qwen2.5:7b", f"http://127.0.0.1:{port}/v1")
    assert (await model.complete(HI)).text == "hello"
    await model.aclose()
    assert seen[0]["path"] == "/v1/chat/completions" and seen[0]["model"] == "qwen2.5:7b"
    assert "sk-secret" not in (seen[0]["auth"] or "")


@pytest.mark.parametrize(("host", "url"), [
    (None, "http://127.0.0.1:11434/v1"),
    ("gpu-box", "http://gpu-box:11434/v1"),
    ("10.0.0.5:11500", "http://10.0.0.5:11500/v1"),
    ("https://ollama.example.com", "https://ollama.example.com/v1"),
    ("http://[::1]:11434/", "http://[::1]:11434/v1"),
])
def test_ollama_host_is_read_as_ollama_reads_it(monkeypatch: pytest.MonkeyPatch,
                                                host: str | None, url: str) -> None:
    if host is not None:
        monkeypatch.setenv("OLLAMA_HOST", host)
    assert resolve_model("ollama:llama3.2").base_url == url


def test_an_explicit_base_url_and_key_come_before_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "elsewhere:1")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://elsewhere:2/v1")
    for spec in ("ollama:qwen2.5", "vllm:qwen", "openai:gpt-4o", "qwen"):
        model = resolve_model(spec, base_url="http://127.0.0.1:3/v1", api_key="k")
        assert model.base_url == "http://127.0.0.1:3/v1", spec


def test_local_specs_are_the_embedded_model(gguf: Path, monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    named = resolve_model(f"local:{gguf}")
    assert isinstance(named, LocalModel) and named.server.model_path == gguf
    assert resolve_model("local", model_path=gguf).server.model_path == gguf
    monkeypatch.setenv("REDLINE_MODEL_PATH", str(gguf))
    assert resolve_model("local").server.model_path == gguf
    # The spec's own path comes first, and a missing one is named.
    with pytest.raises(ConfigError, match="missing.gguf"):
        resolve_model(f"local:{tmp_path / 'missing.gguf'}", model_path=gguf)


def test_transformers_spec_builds_an_in_process_model_without_loading_it() -> None:
    model = resolve_model("transformers:HuggingFaceTB/SmolLM2-135M-Instruct")
    assert isinstance(model, TransformersChat)
    assert model.model == "HuggingFaceTB/SmolLM2-135M-Instruct" and not model.loaded


async def test_a_bare_name_keeps_its_meaning(monkeypatch: pytest.MonkeyPatch,
                                             gguf: Path) -> None:
    # No server configured: the embedded model.
    assert isinstance(resolve_model("gpt-4o", model_path=gguf), LocalModel)
    monkeypatch.setenv("REDLINE_MODEL_PATH", str(gguf))
    assert isinstance(resolve_model(None), LocalModel)
    with OpenAICompatServer(["ok"]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        # A name with a colon that is no provider (an Ollama tag) is a name on the server.
        for spec in ("qwen", "llama3.2:1b", "mistral:7b"):
            model = resolve_model(spec)
            assert isinstance(model, OpenAIChat) and model.model == spec
        model = resolve_model("mistral:7b")
        await model.complete(HI)
        await model.aclose()
    assert server.requests[0]["model"] == "mistral:7b"


def test_redline_model_is_read_as_a_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDLINE_MODEL", "ollama:qwen2.5")
    model = resolve_model()
    assert isinstance(model, OpenAIChat)
    assert (model.model, model.base_url) == ("qwen2.5", "http://127.0.0.1:11434/v1")
    # The argument comes first.
    assert resolve_model("vllm:x").base_url == "http://127.0.0.1:8000/v1"


def test_an_unknown_provider_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown provider 'anthropic'.*local, ollama, "
                                          r"openai, transformers, vllm"):
        resolve_model("anthropic:claude-3-5-haiku")


@pytest.mark.parametrize("spec", ["openai:", "vllm:", "ollama:", "transformers:"])
def test_a_provider_without_a_name_is_a_config_error(spec: str) -> None:
    with pytest.raises(ConfigError, match=f"{spec!r} names no model; write e.g. '{spec}"):
        resolve_model(spec, api_key="k")


def test_other_objects_are_refused_with_what_is_accepted() -> None:
    with pytest.raises(ConfigError, match="ChatModel, a LangChain chat model or a model "
                                          "string.*got int"):
        resolve_model(42)
