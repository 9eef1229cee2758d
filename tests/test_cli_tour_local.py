"""The README's CLI tour, as written, on the embedded model (SmolLM2-135M): every run
ends with a result (exit 0 or 1, the answer written), several runs each. Small models
fail in ways a scripted fake never does: this is where they are caught."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.local

MODEL_ENV = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "REDLINE_MODEL", "REDLINE_MODEL_PATH")
ENV = {k: v for k, v in os.environ.items() if k not in MODEL_ENV}
RUNS = 2


def redline(*args: str, stdin: str = "", cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "redline", *args], input=stdin, cwd=cwd,
                          capture_output=True, text=True, env=ENV, timeout=600)


@pytest.mark.parametrize("run", range(RUNS))
def test_haiku_json_ends_with_a_result(run: int, tmp_path: Path) -> None:
    # echo "Write a haiku about rain" | redline refine --json > trace.json
    out = redline("refine", "--json", stdin="Write a haiku about rain\n", cwd=tmp_path)
    assert out.returncode in (0, 1), out.stderr
    doc = json.loads(out.stdout)
    assert doc["text"] and doc["stop_reason"] in ("threshold", "budget", "converged")
    assert doc["best"]["unscored"] is False


@pytest.mark.parametrize("run", range(RUNS))
def test_paperclips_end_with_a_result(run: int, tmp_path: Path) -> None:
    out = redline("refine", "List three uses of a paperclip.", cwd=tmp_path)
    assert out.returncode in (0, 1), out.stderr
    assert out.stdout.strip()
    assert "<<<ANSWER" not in out.stdout and "ANSWER>>>" not in out.stdout


@pytest.mark.parametrize("run", range(RUNS))
def test_editing_a_file_in_place_ends_with_a_result(run: int, tmp_path: Path) -> None:
    essay = tmp_path / "essay.md"
    essay.write_text("Cloud is made of water. It float in sky because the droplet is very "
                     "small and the air hold them up.\n")
    essay.chmod(0o644)
    out = redline("refine", "-f", "essay.md", "--task", "Tighten the prose", "--revise",
                  "edit", "-o", "essay.md", cwd=tmp_path)
    assert out.returncode in (0, 1), out.stderr
    assert essay.read_text().strip() and oct(essay.stat().st_mode & 0o777) == "0o644"
