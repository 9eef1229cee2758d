"""The schema critic with pydantic models and JSON Schemas; finding JSON in answers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from redline import Candidate, Task
from redline.critics._json import find_json
from redline.critics.schema import SchemaCritic
from redline.errors import ConfigError, MissingDependencyError
from redline.plugins import build_critic
from redline.testing import acheck_critic

TASK = Task(prompt="Give the invoice as JSON.")


class Item(BaseModel):
    name: str
    price: float = Field(ge=0)


class Invoice(BaseModel):
    customer: str
    items: list[Item]


INVOICE_SCHEMA = {
    "title": "Invoice", "type": "object", "required": ["customer", "items"],
    "properties": {
        "customer": {"type": "string"},
        "items": {"type": "array", "items": {
            "type": "object", "required": ["name", "price"],
            "properties": {"name": {"type": "string"},
                           "price": {"type": "number", "minimum": 0}}}}},
}

VALID = 'Here it is:\n```json\n{"customer": "Ada", "items": [{"name": "pen", "price": 2}]}\n```'
INVALID = 'Sure [1]: {"items": [{"name": "pen", "price": -2}, {"name": "ink", "price": 3}]} done'


async def judge(critic: SchemaCritic, text: str):
    return await critic.critique(TASK, Candidate(text=text))


@pytest.fixture(params=["pydantic", "jsonschema"])
def critic(request: pytest.FixtureRequest) -> SchemaCritic:
    if request.param == "jsonschema":
        pytest.importorskip("jsonschema")
        return SchemaCritic(INVOICE_SCHEMA)
    return SchemaCritic(Invoice)


async def test_valid_json_passes(critic: SchemaCritic) -> None:
    critique = await judge(critic, VALID)
    assert (critique.score, critique.passed, critique.feedback, critique.raw) == (
        1.0, True, "", 0.0)
    assert critic.gate and critic.deterministic


async def test_validation_errors_are_the_feedback_with_their_paths(critic: SchemaCritic) -> None:
    critique = await judge(critic, INVALID)
    assert critique.passed is False and critique.raw == 2.0
    assert critique.score == pytest.approx(1 / 3)
    paths = [e["path"] for e in critique.evidence["errors"]]
    assert sorted(paths) == ["$", "$.items[0].price"] or sorted(paths) == [
        "$.customer", "$.items[0].price"]  # jsonschema reports 'required' at the parent
    assert critique.feedback.startswith("The JSON does not match the schema 'Invoice' "
                                        "(2 errors):\n- $")
    assert "customer" in critique.feedback
    assert "$.items[0].price: " in critique.feedback
    assert "0" in critique.feedback.split("$.items[0].price: ")[1]  # ">= 0" / "minimum of 0"


async def test_no_json_scores_zero_and_shows_the_schema(critic: SchemaCritic) -> None:
    critique = await judge(critic, "The customer is Ada and she bought a pen for $2.")
    assert (critique.score, critique.passed, critique.raw) == (0.0, False, None)
    assert "no JSON object found" in critique.feedback
    assert '"customer"' in critique.feedback  # the schema, so the reviser knows the shape
    assert critique.evidence["json_found"] is False


async def test_broken_json_says_where_it_breaks(critic: SchemaCritic) -> None:
    critique = await judge(critic, '```json\n{"customer": "Ada", "items": [],}\n```')
    assert critique.score == 0.0
    assert "invalid JSON (Expecting property name enclosed in double quotes" in critique.feedback


async def test_only_the_first_errors_are_listed() -> None:
    critic = SchemaCritic(list[Item], max_errors=2, gate=False, name="items")
    items = [{"name": f"n{i}", "price": -1} for i in range(5)]
    critique = await judge(critic, json.dumps(items))
    assert critique.critic == "items" and not critic.gate
    assert critique.raw == 5.0 and critique.score == pytest.approx(1 / 6)
    assert critique.feedback.count("\n- $[") == 2 and "- ... and 3 more" in critique.feedback
    assert len(critique.evidence["errors"]) == 5
    # An array schema looks for an array, not the objects inside it.
    assert (await judge(critic, 'Items: [{"name": "a", "price": 1}]')).passed is True


async def test_a_schema_file_through_the_plugin(tmp_path: Path) -> None:
    pytest.importorskip("jsonschema")
    path = tmp_path / "invoice.schema.json"
    path.write_text(json.dumps(INVOICE_SCHEMA))
    critic = build_critic(f"schema:{path}")
    assert isinstance(critic, SchemaCritic) and critic.gate
    assert (await judge(critic, VALID)).passed is True
    assert (await judge(critic, INVALID)).passed is False
    assert (await acheck_critic(critic, [VALID, INVALID, "no json"])).ok


def test_unusable_schemas_are_config_errors(tmp_path: Path) -> None:
    pytest.importorskip("jsonschema")
    with pytest.raises(ConfigError, match="needs a JSON Schema file"):
        build_critic("schema")
    with pytest.raises(ConfigError, match="cannot read schema file"):
        SchemaCritic(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(ConfigError, match="is not JSON"):
        SchemaCritic(tmp_path / "bad.json")
    (tmp_path / "latin1.json").write_bytes(b'{"title": "caf\xe9"}')
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        SchemaCritic(tmp_path / "latin1.json")
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(INVOICE_SCHEMA).encode())
    assert SchemaCritic(tmp_path / "bom.json").gate  # saved by Notepad: read as it was meant
    with pytest.raises(ConfigError, match=r"invalid JSON Schema at \$.type"):
        SchemaCritic({"type": "objekt"})


def test_json_schema_without_jsonschema_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r'pip install "redline\[tools\]"'):
        SchemaCritic(INVOICE_SCHEMA)
    SchemaCritic(Invoice)  # pydantic models need nothing more


@pytest.mark.parametrize(("text", "kinds", "value"), [
    ('{"a": "}{"}', (dict,), {"a": "}{"}),                       # braces inside strings
    ('see [1] and {"a": [1, 2]} then {"b": 1}', (dict, list), {"a": [1, 2]}),  # longest
    ('```python\n{"x": 1}\n```\n```json\n{"y": 2}\n```', (dict,), {"y": 2}),  # json fence
    ('```\n[1, 2]\n```', (list,), [1, 2]),
    ('  {"whole": true}  ', (dict,), {"whole": True}),
    ('[{"a": 1}, {"a": 22}]', (dict,), {"a": 22}),                 # objects inside an array
])
def test_find_json(text: str, kinds: tuple[type, ...], value: object) -> None:
    found, problem = find_json(text, kinds=kinds)
    assert found is not None and found.value == value and problem == ""
    assert text[found.start:found.start + len(found.raw)] == found.raw


@pytest.mark.parametrize(("text", "problem"), [
    ("no json here {name} [1]", "no JSON object found"),
    ('prose {"a": 1,} prose', "invalid JSON (Expecting property name"),
    # A broken object's inner objects are fragments, not the answer's JSON.
    ('{"customer": "Ada", "items": [{"name": "pen"},]}', "invalid JSON (Expecting value"),
])
def test_find_json_problems(text: str, problem: str) -> None:
    found, why = find_json(text, kinds=(dict,))
    assert found is None and why.startswith(problem)
