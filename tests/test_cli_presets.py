"""``redline refine --preset`` and ``redline presets``: through the real CLI, a real
loopback OpenAI-compatible server, the real plugin registry and the real sandbox."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_plugins import install_fake, site  # noqa: F401  (the fixture)

from redline.cli import cli
from redline.prompts import render
from redline.testing import OpenAICompatServer


@pytest.fixture(autouse=True)
def _no_model_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "REDLINE_MODEL", "REDLINE_MODEL_PATH"):
        monkeypatch.delenv(name, raising=False)


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def test_presets_list_names_every_method_with_its_paper() -> None:
    out = run("presets", "list", "--json")
    assert out.exit_code == 0, out.output
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert set(rows) >= {"self-refine", "reflexion", "critic", "self-debug", "best-of-n"}
    assert "Chen et al. 2024" in rows["self-debug"]["paper"]
    assert rows["reflexion"]["needs"].startswith("an evaluator")
    table = run("presets", "list")
    assert "Shinn et al. 2023" in table.stdout
    shown = run("presets", "show", "self_debug")
    assert shown.exit_code == 0 and "explain" in shown.stdout and "Self-Debug" in shown.stdout


def test_every_built_in_preset_is_named_in_the_help() -> None:
    from redline.workflows.presets import PRESETS

    for command in ("refine", "batch"):
        [option] = [p for p in cli.commands[command].params if p.name == "preset"]
        named = set(re.findall(r"[a-z-]+", (option.help or "").split("(")[0]))
        missing = [name for name in PRESETS if name not in named]
        assert not missing, f"redline {command} --help: --preset does not name {missing}"


@pytest.mark.parametrize(("args", "message"), [
    (["--preset", "nope"], "unknown preset 'nope' (known: best-of-n, critic, reflexion"),
    (["--preset", "best-of-n", "--max-rounds", "2"], "makes no revisions: max_rounds=2"),
    (["--preset", "best-of-n", "--revise-when", "always"], "revise_when does not apply"),
    (["--preset", "self-refine", "-c", "doctest"], "makes its own critic"),
    (["--preset", "reflexion"], "needs an evaluator"),
    (["--preset", "reflexion", "-c", "doctest", "--revise", "edit"],
     "sets revise='rewrite' itself"),
    (["--preset", "critic", "--revise-when", "always"], "sets revise_when='on_failure'"),
    (["--preset", "self-debug", "--memory", "2"], "takes no 'memory'"),
    (["--preset", "reflexion", "-c", "doctest", "--memory", "0"], "--memory must be at least 1"),
    (["--memory", "2"], "--memory applies to a preset"),
    (["--no-explain"], "--no-explain applies to a preset"),
    (["--preset", "self-refine", "--rubric", "/nonexistent/rubric.txt"], "rubric file"),
    (["--preset", "best-of-n", "--reviser-model", "big"], "preset 'best-of-n' does not revise"),
    (["--preset", "single", "--reviser-model", "big"], "preset 'single' does not revise"),
    (["--reviser-base-url", "http://127.0.0.1:9/v1"], "--reviser-base-url needs --reviser-model"),
    (["--reviser-model", "big", "--reviser-base-url", "127.0.0.1:9"], "is not an http(s) URL"),
    (["--reviser-price", "1:2"], "--reviser-price needs --reviser-model"),
    (["--reviser-model", "big", "--reviser-price", "cheap"], "--reviser-price 'cheap': expected"),
    (["--reviser-model", "big", "--price", "1:2", "--max-cost", "1"],
     "--max-cost needs the reviser's price too"),
    (["--preset", "self-debug", "--reviser-model", "big", "--price", "1:2", "--max-cost", "1"],
     "--max-cost needs the reviser's price too"),
])
def test_bad_presets_and_combinations_exit_2_with_one_line(args: list[str],
                                                           message: str) -> None:
    with OpenAICompatServer(replies=["never used"]) as server:
        out = run("refine", "Q", "--base-url", server.base_url, *args)
        assert not server.requests  # nothing spent
    assert out.exit_code == 2, out.output
    assert message in out.stderr and out.stderr.count("\n") == 1


def vote_server() -> OpenAICompatServer:
    drafts = iter(["6 * 7 = 42. The answer is 42.", "The answer is 41.", "Answer: 42"])
    marks = {"41": 9, "42": 5}

    def handle(request: dict[str, Any]) -> str:
        messages = request["messages"]
        if messages[0]["content"] == render("judge_system"):
            mark = 9 if "answer is 41" in messages[-1]["content"] else marks["42"]
            return json.dumps({"score": mark, "feedback": ""})
        return next(drafts)
    return OpenAICompatServer(handler=handle)


def test_best_of_n_votes_and_ends_sampled() -> None:
    with vote_server() as server:
        out = run("refine", "What is 6 * 7?", "--base-url", server.base_url,
                  "--preset", "best-of-n", "-n", "3", "--select", "vote", "--json")
    assert out.exit_code == 1, out.output  # below the threshold, a result all the same
    doc = json.loads(out.stdout)
    assert doc["stop_reason"] == "sampled" and len(doc["rounds"]) == 1
    assert len(doc["rounds"][0]["scored"]) == 3
    assert doc["text"] in ("6 * 7 = 42. The answer is 42.", "Answer: 42")  # 2 votes to 1
    assert doc["settings"]["preset"] == "best-of-n" and doc["settings"]["n"] == 3
    assert "revise_when" not in doc["settings"]  # the preset's own, not a CLI default


def test_self_debug_fixes_a_file_as_documented(tmp_path: Path) -> None:
    solution = tmp_path / "solution.py"
    solution.write_text(textwrap.dedent('''\
        def is_even(n):
            """Return True when n is even.

            >>> is_even(4)
            True
            >>> is_even(7)
            False
            """
            return n % 2 == 1
        '''))
    fixed = solution.read_text().replace("== 1", "== 0")
    replies = iter(["Line 9 returns n % 2 == 1: True for odd n, so is_even(4) is False.",
                    f"```python\n{fixed}```"])

    def handle(request: dict[str, Any]) -> str:
        assert request["messages"][0]["content"] == render("selfdebug_system")
        return next(replies)

    with OpenAICompatServer(handler=handle) as server:
        out = run("refine", "--preset", "self-debug", "-f", str(solution), "--task",
                  "Fix is_even so that its examples pass.", "--base-url", server.base_url,
                  "-o", str(solution), "--json")
        explain, fix = server.requests
    assert out.exit_code == 0, out.output
    assert "is_even(4)" in explain["messages"][-1]["content"]
    assert "so is_even(4) is False" in fix["messages"][-1]["content"]
    doc = json.loads(solution.read_text())
    assert doc["stop_reason"] == "threshold" and "n % 2 == 0" in doc["text"]
    assert doc["rounds"][1]["scored"][0]["candidate"]["explanation"].startswith("Line 9")


def prompt_words(request: dict[str, Any]) -> int:
    """The loopback server's prompt_tokens: the words of every message."""
    return sum(len(str(m["content"]).split()) for m in request["messages"])


def test_a_small_model_drafts_and_a_stronger_one_on_another_server_debugs() -> None:
    task = textwrap.dedent('''\
        Write is_even(n).

        ```python
        def is_even(n):
            """Return True when n is even.

            >>> is_even(4)
            True
            >>> is_even(7)
            False
            """
        ```
        ''')
    buggy = "```python\ndef is_even(n):\n    return n % 2 == 1\n```"
    explained = "It returns n % 2 == 1, True for odd n: is_even(4) is False."
    fixed = "```python\ndef is_even(n):\n    return n % 2 == 0\n```"
    fixes = iter([explained, fixed])
    with OpenAICompatServer(replies=[buggy], model="small") as small, \
            OpenAICompatServer(handler=lambda r: next(fixes), model="big") as big:
        out = run("refine", task, "--preset", "self-debug", "-c", "doctest", "--json",
                  "--base-url", small.base_url, "--model", "small",
                  "--reviser-model", "big", "--reviser-base-url", big.base_url)
        drafts, revisions = small.requests, big.requests
    assert out.exit_code == 0, out.output
    assert [r["model"] for r in drafts] == ["small"]
    assert [r["model"] for r in revisions] == ["big", "big"]  # explain, then fix
    assert "is_even(4)" in revisions[0]["messages"][-1]["content"]
    doc = json.loads(out.stdout)
    assert doc["stop_reason"] == "threshold" and "n % 2 == 0" in doc["text"]
    assert doc["rounds"][1]["scored"][0]["candidate"]["explanation"] == explained
    usage = doc["usage"]  # both servers' calls
    assert usage["llm_calls"] == 3
    assert usage["input_tokens"] == sum(prompt_words(r) for r in drafts + revisions)
    assert usage["output_tokens"] == sum(len(t.split()) for t in (buggy, explained, fixed))
    reviser = doc["settings"]["reviser_model"]
    assert (reviser["name"], reviser["base_url"]) == ("big", big.base_url)


def test_a_cascades_cost_prices_each_models_calls_at_its_own_price() -> None:
    task = "Fix it.\n\n```python\ndef one():\n    '''\n    >>> one()\n    1\n    '''\n```"
    buggy = "```python\ndef one():\n    return 2\n```"
    fixes = iter(["It returns 2, not 1.", "```python\ndef one():\n    return 1\n```"])
    with OpenAICompatServer(replies=[buggy], model="small") as small, \
            OpenAICompatServer(handler=lambda r: next(fixes), model="big") as big:
        out = run("refine", task, "--preset", "self-debug", "-c", "doctest", "--json",
                  "--base-url", small.base_url, "--model", "small", "--price", "1:2",
                  "--reviser-model", "big", "--reviser-base-url", big.base_url,
                  "--reviser-price", "10:20", "--max-cost", "5")
        drafts, revisions = small.requests, big.requests
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    small_cost = sum(prompt_words(r) for r in drafts) * 1 + len(buggy.split()) * 2
    big_cost = sum(prompt_words(r) for r in revisions) * 10 + sum(
        len(t.split()) for t in ("It returns 2, not 1.",
                                 "```python\ndef one():\n    return 1\n```")) * 20
    assert doc["usage"]["cost_usd"] == pytest.approx((small_cost + big_cost) / 1e6)
    assert doc["settings"]["reviser_model"]["price_in"] == 10.0


def test_a_package_can_ship_a_preset(site: Path) -> None:  # noqa: F811
    install_fake(site, "fake-method", "fake_method", '''
        from redline.workflows.presets import Preset, best_of_n

        def twice(model, **policy):
            """Two drafts, the best kept."""
            return best_of_n(model, n=2, **policy)

        TWICE = Preset("twice", twice, "two drafts", "nobody 2026", "nothing")
        ''', {})
    info = next(site.glob("fake_method-*.dist-info"))
    (info / "entry_points.txt").write_text("[redline.presets]\ntwice = fake_method:TWICE\n")
    listed = {r["name"] for r in json.loads(run("presets", "list", "--json").stdout)}
    assert "twice" in listed
    with OpenAICompatServer(handler=lambda r: json.dumps({"score": 10, "feedback": ""})
                            if r["messages"][0]["content"] == render("judge_system")
                            else "hello") as server:
        out = run("refine", "Say hello", "--preset", "twice", "--base-url", server.base_url,
                  "--json")
    assert out.exit_code == 0, out.output
    assert len(json.loads(out.stdout)["rounds"][0]["scored"]) == 2
