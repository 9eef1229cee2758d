"""``redline serve`` end to end on the embedded model (SmolLM2-135M, no ``--upstream``):
the official ``openai`` client gets a refined answer, streamed and not."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

pytestmark = pytest.mark.local

MODEL_ENV = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "REDLINE_MODEL", "REDLINE_MODEL_PATH",
             "REDLINE_SERVE_API_KEY")
ENV = {k: v for k, v in os.environ.items() if k not in MODEL_ENV}


def test_serve_on_the_embedded_model(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "redline", "serve", "--port", "0",
                                 "--max-rounds", "1"], stderr=err, env=ENV)
    try:
        deadline = time.monotonic() + 600
        while not (found := re.search(r"on (http://\S+/v1)", log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        client = openai.OpenAI(base_url=found.group(1), api_key="unused", timeout=600)
        messages = [{"role": "user", "content": "Name the three primary colors."}]
        reply = client.chat.completions.create(model="redline/refine", messages=messages)
        info = (reply.model_extra or {})["redline"]
        assert reply.choices[0].message.content
        assert info["stop_reason"] in ("threshold", "budget", "converged")
        assert reply.usage is not None and reply.usage.total_tokens > 0
        assert info["llm_calls"] >= 2 and info["rounds"] >= 1
        chunks = list(client.chat.completions.create(model="redline/refine",
                                                     messages=messages, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        tools = [{"type": "function", "function": {"name": "now", "parameters": {
            "type": "object", "properties": {}}}}]
        with pytest.raises(openai.BadRequestError) as refused:  # no upstream to pass it to
            client.chat.completions.create(model="redline/refine", messages=messages,
                                           tools=tools)
        assert refused.value.code == "passthrough_unavailable"
        assert "the model of run 'refine' is not served over HTTP" in refused.value.message
    finally:
        proc.terminate()
        proc.wait(60)
