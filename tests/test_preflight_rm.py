"""A reward model that cannot be had is found by the preflight at once: no Hub retries,
one line, before any token is spent. Loopback only: the Hub endpoint is a closed port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.rm

SCRIPT = textwrap.dedent("""
    import asyncio, redline
    from redline.critics import RewardModelCritic
    from redline.testing import ScriptedChat
    model = ScriptedChat(["never"])
    try:
        asyncio.run(redline.arefine("Q", model=model,
                                    critics=[RewardModelCritic("someone/no-such-rm")]))
    except redline.ConfigError as exc:
        print("ConfigError:", exc)
    print("calls:", len(model.calls))
""")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("offline", [False, True])
def test_a_missing_hub_model_fails_the_preflight_without_retries(offline: bool,
                                                                 tmp_path) -> None:
    pytest.importorskip("transformers")
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
           "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "ConfigError: reward model 'someone/no-such-rm' is not in the local Hugging " \
           "Face cache" in out.stdout
    assert ("HF_HUB_OFFLINE is set" if offline else "cannot be reached") in out.stdout
    assert "calls: 0" in out.stdout
    assert "Retrying" not in out.stderr  # huggingface_hub's ~20 s of retries never started
