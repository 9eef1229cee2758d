"""RefineConfig (typed, frozen, validated once) and RunSpec (serialisable, no secrets)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import answers, score_table
from pydantic import ValidationError
from test_resolve import recorder  # noqa: F401  (the fixture)

import redline
from redline import Budget, ConfigError, StopReason
from redline.critics import LLMJudge, Panel
from redline.testing import OpenAICompatServer, ScriptedChat
from redline.workflows import RefineConfig, RunSpec, build_refine_graph


def test_refine_config_is_frozen_and_says_which_field_is_wrong() -> None:
    cfg = RefineConfig(model=ScriptedChat(), critics=[lambda t: 1.0])
    assert isinstance(cfg.critics, Panel) and cfg.panel is cfg.critics
    with pytest.raises(ValidationError, match="frozen"):
        cfg.threshold = 0.5  # type: ignore[misc]
    with pytest.raises(ConfigError, match="RefineConfig: budget: Input should be"):
        RefineConfig(model=ScriptedChat(), budget="lots")
    with pytest.raises(ConfigError, match="model must be a redline ChatModel, got str"):
        RefineConfig(model="gpt-4o")
    assert isinstance(RefineConfig(model=ScriptedChat()).critics.critics[0], LLMJudge)


def test_policy_defaults_are_visible_fields() -> None:
    one = RefineConfig(model=ScriptedChat())
    many = one.replace(n=4)
    assert (one.temperature, one.draft_temperature) == (None, 0.0)
    assert many.draft_temperature == 0.7 and many.drafter.temperature == 0.7
    assert many.replace(temperature=0.2).drafter.temperature == 0.2
    assert one.replace(seed=5).drafter.seed == 5
    assert one.threshold == 0.9 and one.patience == 2 and one.on_error == "result"


async def test_arefine_takes_a_config_and_keyword_changes() -> None:
    cfg = RefineConfig(model=answers("a", "b"), critics=[score_table(a=0.2, b=1.0)],
                       budget=Budget(max_rounds=0))
    first = await redline.arefine("Q", cfg)
    assert first.stop_reason is StopReason.sampled and first.text == "a"
    second = await redline.arefine("Q", cfg, budget=Budget(max_rounds=1))
    assert second.stop_reason is StopReason.threshold and second.text == "b"


async def test_build_refine_graph_takes_a_config_or_the_keyword_form() -> None:
    cfg = RefineConfig(model=answers("a"), critics=[lambda t: 1.0])
    out = await build_refine_graph(cfg).ainvoke({"task": redline.Task(prompt="Q")})
    assert out["result"].text == "a"
    keyword = build_refine_graph(answers("b"), [lambda t: 1.0], threshold=0.5)
    assert (await keyword.ainvoke({"task": redline.Task(prompt="Q")}))["result"].text == "b"
    with pytest.raises(ConfigError, match="not both"):
        build_refine_graph(cfg, threshold=0.5)


def test_run_spec_round_trips_through_json_and_holds_no_secret() -> None:
    spec = RunSpec(model={"name": "vllm:qwen", "base_url": "http://127.0.0.1:8000/v1",
                          "price_in": 0.1, "price_out": 0.2},
                   critics=["judge", "cmd:gcc -fsyntax-only {file}"],
                   budget=Budget(max_rounds=2, max_seconds=30), n=3, patience=4,
                   revise_from="last", system="Be brief.", preset=None)
    text = spec.model_dump_json()
    assert RunSpec.model_validate_json(text) == spec
    config = spec.build(api_key="sk-SECRET-KEY")
    assert "sk-SECRET" not in text and "sk-SECRET" not in json.dumps(spec.model_dump())
    assert [c.name for c in config.critics.critics] == ["judge", "gcc"]
    assert (config.n, config.patience, config.revise_from) == (3, 4, "last")
    assert config.budget.max_seconds == 30 and config.model.price.output_per_mtok == 0.2
    with pytest.raises(ConfigError, match="RunSpec: n: Input should be greater"):
        RunSpec(n=0)
    with pytest.raises(ConfigError, match="unknown critic 'nope'"):
        RunSpec(critics=["nope"]).build(model=ScriptedChat())


def test_the_cli_runs_through_a_run_spec_and_writes_it_as_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from redline.cli import cli

    for var in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "REDLINE_MODEL"):
        monkeypatch.delenv(var, raising=False)
    with OpenAICompatServer(handler=lambda r: '{"score": 10, "feedback": ""}'
                            if r.get("response_format") else "an answer") as server:
        out = CliRunner().invoke(cli, [
            "refine", "Q", "--base-url", server.base_url, "--json", "-q",
            "--revise-from", "last", "--patience", "3", "--api-key", "sk-NOT-WRITTEN"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    spec = RunSpec.model_validate(doc["settings"])
    assert (spec.revise_from, spec.patience) == ("last", 3)
    assert spec.model.base_url == server.base_url and spec.critics == ["judge"]
    assert "sk-NOT-WRITTEN" not in out.stdout


def test_the_llm_timeout_reaches_the_client_and_is_written_only_when_set(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    from click.testing import CliRunner

    from redline.cli import cli
    from redline.llm import LocalModel

    for var in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "REDLINE_MODEL"):
        monkeypatch.delenv(var, raising=False)
    plain = RunSpec(model={"name": "m", "base_url": "http://127.0.0.1:9/v1"})
    assert "timeout" not in plain.model_dump()["model"]  # older outputs still resume
    timed = RunSpec(model={"name": "m", "base_url": "http://127.0.0.1:9/v1", "timeout": 600})
    assert timed.model_dump()["model"]["timeout"] == 600
    assert RunSpec.model_validate_json(timed.model_dump_json()) == timed
    assert timed.chat_model(api_key="k").timeout == 600  # type: ignore[attr-defined]
    assert plain.chat_model(api_key="k").timeout == 120  # type: ignore[attr-defined]
    local = RunSpec(model={"name": "local", "timeout": 900}).chat_model()
    assert isinstance(local, LocalModel) and local.timeout == 900
    with pytest.raises(ConfigError, match="model.timeout: Input should be greater than 0"):
        RunSpec(model={"timeout": 0})

    # On the command line: a server slower than --llm-timeout is a timeout, retried.
    slow = threading.Event()

    def reply(request: dict[str, object]) -> str:
        if not slow.is_set():
            slow.set()
            time.sleep(1.5)
        return '{"score": 10, "feedback": ""}' if request.get("response_format") else "ok"

    with OpenAICompatServer(handler=reply) as server:
        out = CliRunner().invoke(cli, [
            "refine", "Q", "--base-url", server.base_url, "--json", "-q",
            "--llm-timeout", "0.5"])
        assert out.exit_code == 0, out.output
        doc = json.loads(out.stdout)
        assert doc["settings"]["model"]["timeout"] == 0.5
        # the first draft timed out after 0.5 s and was sent again
        drafts = [r for r in server.requests if not r.get("response_format")]
        assert len(drafts) == 2 and doc["best"]["candidate"]["text"] == "ok"
        out = CliRunner().invoke(cli, ["refine", "Q", "--llm-timeout", "0"])
        assert out.exit_code == 2 and "--llm-timeout" in out.output


def test_sync_refine_takes_a_config_like_arefine() -> None:
    cfg = RefineConfig(model=answers("a", "b"), critics=[score_table(a=0.2, b=1.0)])
    result = redline.refine("Q", cfg, budget=Budget(max_rounds=1))
    assert result.text == "b" and result.stop_reason is StopReason.threshold


def test_a_reviser_model_is_written_only_when_set_and_builds_the_reviser(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from redline.llm import OpenAIChat

    for var in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "REDLINE_MODEL"):
        monkeypatch.delenv(var, raising=False)
    small = {"name": "small", "base_url": "http://127.0.0.1:9/v1", "timeout": 600}
    for preset in (None, "self-debug"):  # older outputs (no such field) still resume
        plain = RunSpec(model=small, preset=preset)
        assert "reviser_model" not in plain.model_dump()
        assert "reviser_model" not in json.loads(plain.model_dump_json())
    cascade = RunSpec(model=small, reviser_model={"name": "big"}, revise="edit")
    assert cascade.model_dump()["reviser_model"]["name"] == "big"
    assert RunSpec.model_validate_json(cascade.model_dump_json()) == cascade
    config = cascade.build(api_key="k")
    drafter, fixer = config.model, config.fixer.model
    assert isinstance(drafter, OpenAIChat) and isinstance(fixer, OpenAIChat)
    assert (drafter.model, fixer.model) == ("small", "big")
    # The reviser's unset server and timeout are the model's; the spec's revise mode.
    assert (fixer.base_url, fixer.timeout, config.fixer.mode) == (
        "http://127.0.0.1:9/v1", 600, "edit")
    assert RunSpec(model=small).build(api_key="k").reviser is None  # the model revises
    elsewhere = RunSpec(model=small, preset="self-refine",
                        reviser_model={"name": "big", "base_url": "http://127.0.0.1:8/v1"})
    assert RunSpec.model_validate_json(elsewhere.model_dump_json()) == elsewhere
    refined = elsewhere.build(api_key="k")
    assert refined.fixer.model.base_url == "http://127.0.0.1:8/v1"  # type: ignore[attr-defined]
    assert refined.fixer.model.model == "big"  # type: ignore[attr-defined]
    assert refined.model.model == "small"  # type: ignore[attr-defined]
    for preset in ("best-of-n", "single"):
        with pytest.raises(ConfigError, match=f"preset '{preset}' does not revise"):
            RunSpec(model=small, preset=preset, reviser_model={"name": "big"}).build()


async def test_the_key_goes_to_the_reviser_only_on_the_models_server(
        monkeypatch: pytest.MonkeyPatch,
        recorder: tuple[int, list[dict[str, Any]]]) -> None:  # noqa: F811
    for var in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "REDLINE_MODEL"):
        monkeypatch.delenv(var, raising=False)
    port, seen = recorder
    here, there = f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{port}/other/v1"
    for reviser, key in (({"name": "big"}, "Bearer sk-k"),
                         ({"name": "big", "base_url": f"{here}/"}, "Bearer sk-k"),
                         ({"name": "big", "base_url": there}, None)):
        seen.clear()
        spec = RunSpec(model={"name": "small", "base_url": here}, reviser_model=reviser)
        for chat in (spec.chat_model(api_key="sk-k"), spec.reviser_chat_model(api_key="sk-k")):
            assert chat is not None
            await chat.complete([{"role": "user", "content": "hi"}])
            await chat.aclose()
        assert [s["model"] for s in seen] == ["small", "big"]
        assert seen[0]["auth"] == "Bearer sk-k"
        assert (seen[1]["auth"] == key) if key else seen[1]["auth"] != "Bearer sk-k"


def test_without_a_preset_the_reviser_model_revises_on_its_server(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from redline.cli import cli

    for var in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "REDLINE_MODEL"):
        monkeypatch.delenv(var, raising=False)

    def judge_or_draft(request: dict[str, Any]) -> str:
        if request.get("response_format"):
            text = request["messages"][-1]["content"]
            return json.dumps({"score": 10 if "revised" in text else 4, "feedback": "more"})
        return "a draft"

    with OpenAICompatServer(handler=judge_or_draft, model="small") as small, \
            OpenAICompatServer(replies=["the revised answer"], model="big") as big:
        out = CliRunner().invoke(cli, [
            "refine", "Q", "--json", "-q", "--base-url", small.base_url, "--model", "small",
            "--reviser-model", "big", "--reviser-base-url", big.base_url,
            "--max-rounds", "1"])
        drafts, revisions = small.requests, big.requests
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["text"] == "the revised answer" and doc["stop_reason"] == "threshold"
    assert len(drafts) == 3 and {r["model"] for r in drafts} == {"small"}  # draft, 2 judges
    assert [r["model"] for r in revisions] == ["big"]
    assert doc["usage"]["llm_calls"] == 4
    assert doc["settings"]["reviser_model"]["base_url"] == big.base_url
