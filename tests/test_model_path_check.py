"""``--model-path`` / ``$REDLINE_MODEL_PATH``: a path that is not a GGUF fails in one line,
before any llama.cpp server starts (it would end in a page of the child's traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from redline.cli import cli
from redline.llm.local import LocalServer


@pytest.fixture(autouse=True)
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    def spawn(self: LocalServer, port: int) -> None:
        raise AssertionError(f"a llama.cpp server was started for {self.model_path}")

    monkeypatch.setattr(LocalServer, "_spawn", spawn)
    for name in ("REDLINE_MODEL_PATH", "REDLINE_MODEL", "OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def refine(args: list[str], env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, ["refine", "hi", "--max-rounds", "1", "-q", *args],
                              env=env, catch_exceptions=False)


@pytest.mark.parametrize("where", ["option", "environment"])
def test_a_file_without_the_gguf_magic_is_refused_in_one_line(
        where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("fake.gguf").write_text("junk\n")
    if where == "option":
        result = refine(["--model-path", "fake.gguf"])
    else:
        result = refine([], env={"REDLINE_MODEL_PATH": "fake.gguf"})

    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("redline: error: ")
    assert line.endswith("'fake.gguf' is not a GGUF model file (it does not start with "
                         "GGUF's magic bytes): pass a .gguf file")


def test_a_directory_is_refused_in_one_line(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("models").mkdir()
    result = refine(["--model-path", "models"])

    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.endswith("'models' is not a GGUF model file (it is a directory): pass a "
                         ".gguf file")
