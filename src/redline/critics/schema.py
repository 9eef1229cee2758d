"""The schema critic: the answer's JSON must validate against a pydantic model or a JSON
Schema; the validation errors, with their JSON paths, are the feedback."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from redline._files import read_config_text
from redline.critics._json import find_json
from redline.critics.base import Critic
from redline.errors import ConfigError, MissingDependencyError
from redline.types import Candidate, Critique, Task

__all__ = ["SchemaCritic", "schema_critic"]

_MESSAGE_CHARS = 200
_SCHEMA_CHARS = 2000


class SchemaCritic(Critic):
    """Checks that an answer carries JSON valid against a schema.

    The JSON is the first fenced ```` ```json ```` block, else the whole answer, else the
    longest ``{...}`` / ``[...]`` in it (only objects or only arrays when the schema's
    top level says so). Scores:

    - valid: 1.0, ``passed=True``;
    - invalid with *n* errors: ``1 / (n + 1)`` (0.5 for one error, 0.25 for three),
      ``passed=False``, ``raw=n``, the errors (JSON path and message) as feedback;
    - no JSON found: 0.0, ``passed=False``, the schema in the feedback.

    It is a gate by default: a failing answer caps the panel's score at 0.

    Args:
        schema: a pydantic model class (or any type pydantic validates, such as
            ``list[Item]``), a JSON Schema as a dict, or the path of a JSON Schema file.
        name: the critic's name.
        gate: whether a failure caps the panel's score at 0.
        max_errors: the most errors listed in the feedback (all are in ``evidence``).

    Raises:
        ConfigError: a schema file that cannot be read, or an invalid JSON Schema.
        MissingDependencyError: a JSON Schema without ``jsonschema`` installed.
    """

    deterministic = True

    def __init__(self, schema: type[Any] | Mapping[str, Any] | str | Path, *,
                 name: str = "schema", gate: bool = True, max_errors: int = 10) -> None:
        self.name = name
        self.gate = gate
        self.max_errors = max_errors
        self._adapter: TypeAdapter[Any] | None = None
        self._validator: Any = None
        if isinstance(schema, str | Path):
            schema = _read_schema(Path(schema))
        if isinstance(schema, Mapping):
            self.schema: dict[str, Any] = dict(schema)
            self._validator = _json_schema_validator(self.schema)
            self.title = str(self.schema.get("title") or "JSON Schema")
        else:
            try:
                self._adapter = TypeAdapter(schema)
                self.schema = self._adapter.json_schema()
            except Exception as exc:  # pydantic raises several types for unusable types
                raise ConfigError(f"SchemaCritic: cannot validate with {schema!r}: {exc}") \
                    from exc
            self.title = getattr(schema, "__name__", None) or str(schema)
        top = self.schema.get("type")
        self._kinds: tuple[type, ...] = {"object": (dict,), "array": (list,)}.get(
            top if isinstance(top, str) else "", (dict, list))

    async def critique(self, task: Task, candidate: Candidate) -> Critique:
        found, problem = find_json(candidate.text, kinds=self._kinds)
        if found is None:
            shown = json.dumps(self.schema, separators=(",", ":"))
            if len(shown) > _SCHEMA_CHARS:
                shown = shown[:_SCHEMA_CHARS] + "…"
            return Critique(
                critic=self.name, score=0.0, passed=False,
                feedback=(f"The answer must contain JSON matching the schema {self.title!r} "
                          f"({problem}). Give it as one JSON value in a ```json block. "
                          f"The schema: {shown}"),
                evidence={"json_found": False, "problem": problem, "errors": []})
        errors = self._errors(found.value, found.raw)
        if not errors:
            return Critique(critic=self.name, score=1.0, passed=True, raw=0.0,
                            evidence={"json_found": True, "errors": []})
        listed = [f"- {e['path']}: {e['message']}" for e in errors[:self.max_errors]]
        if len(errors) > self.max_errors:
            listed.append(f"- ... and {len(errors) - self.max_errors} more")
        noun = "error" if len(errors) == 1 else "errors"
        return Critique(
            critic=self.name, score=1 / (len(errors) + 1), passed=False, raw=float(len(errors)),
            feedback=(f"The JSON does not match the schema {self.title!r} "
                      f"({len(errors)} {noun}):\n" + "\n".join(listed)),
            evidence={"json_found": True, "errors": errors})

    def _errors(self, value: Any, raw: str) -> list[dict[str, str]]:
        """Every validation error as ``{"path": "$.items[0].price", "message": ...}``."""
        if self._adapter is not None:
            try:
                # JSON mode: the value is judged as JSON text, as pydantic parses APIs.
                self._adapter.validate_json(raw)
            except ValidationError as exc:
                return [{"path": _json_path(e["loc"]), "message": _trim(e["msg"])}
                        for e in exc.errors(include_url=False)]
            return []
        found = sorted(self._validator.iter_errors(value),
                       key=lambda e: (list(map(str, e.absolute_path)), e.message))
        return [{"path": e.json_path, "message": _trim(e.message)} for e in found]


def _json_path(loc: tuple[Any, ...]) -> str:
    path = "$"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _trim(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= _MESSAGE_CHARS else message[:_MESSAGE_CHARS - 1] + "…"


def _read_schema(path: Path) -> dict[str, Any]:
    text = read_config_text(path, "schema file")  # unreadable, not UTF-8, empty; a BOM
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"schema file {str(path)!r} is not JSON: {exc.msg} at line "
                          f"{exc.lineno}") from exc
    if not isinstance(schema, dict):
        raise ConfigError(f"schema file {str(path)!r} holds a {type(schema).__name__}, "
                          "not a JSON Schema object")
    return schema


def _json_schema_validator(schema: dict[str, Any]) -> Any:
    try:
        import jsonschema  # type: ignore[import-untyped]
    except ImportError as exc:
        raise MissingDependencyError("JSON Schema validation (jsonschema)", "tools") from exc
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigError(f"invalid JSON Schema at {exc.json_path}: {_trim(exc.message)}") \
            from exc
    return cls(schema, format_checker=getattr(cls, "FORMAT_CHECKER", None))


def schema_critic(arg: str | None) -> SchemaCritic:
    """Schema gate: the answer's JSON must validate against a JSON Schema file.

    Argument (required): the JSON Schema file. The JSON is taken from a ```json block,
    the whole answer, or the longest {...}/[...] in it. Valid JSON scores 1; n
    validation errors score 1/(n+1) and are the feedback, with their JSON paths; no
    JSON scores 0. A failure caps the run's score at 0 (a gate).

    Examples:
        --critic schema:invoice.schema.json
    """
    if not arg or not arg.strip():
        raise ConfigError("the schema critic needs a JSON Schema file: "
                          "--critic schema:SCHEMA.json")
    return SchemaCritic(Path(arg.strip()).expanduser())
