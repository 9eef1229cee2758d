"""The OpenAI chat-completions wire format, both ways, for ``redline serve`` and the
drop-in client `redline.openai.AsyncOpenAI`: one module, so the two answer alike.

```
request JSON ──plan_request──▶ ChatPlan (refine: a Task │ passthrough: why │ ApiError)
RefineResult ──completion / stream_chunks──▶ chat.completion (+ "redline") │ SSE chunks
```

What a request may ask, decided per case:

- **refined**: ``messages`` ending with a ``user`` message of text (a string, or
  ``{"type": "text"}`` parts). ``system`` / ``developer`` messages become the task's
  system prompt (joined by a blank line). Earlier ``user`` / ``assistant`` turns are
  **folded into the task**: the prompt becomes the conversation so far as a transcript,
  then the last user message, so the critics judge the reply in its context.
  ``max_tokens`` / ``max_completion_tokens`` cap the **whole loop's** token budget
  (never above the server's ceiling). ``stream`` and ``stream_options.include_usage``
  are honoured. Sampling fields (``temperature``, ``top_p``, ``seed``, ``stop``,
  penalties, ``user``, ``metadata``...) are accepted and ignored: the run's
  configuration decides them.
- **passed through** to the upstream model untouched (only ``model`` renamed to the
  upstream's): requests the loop cannot critique but the upstream can serve: ``tools`` /
  ``functions`` / ``tool_choice``, ``tool`` / ``function`` messages or assistant
  ``tool_calls``, non-text content parts (images, audio, files), ``response_format``
  other than text, ``audio`` / ``modalities``. The response carries the header
  ``x-redline-passthrough: <reason>``.
- **refused** with an OpenAI-style 400: ``n`` > 1 and ``logprobs`` / ``top_logprobs``
  (they ask about *the* refined answer, which one loop makes once, from several calls),
  a last message that is not the user's, an empty one, malformed fields.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from redline.types import RefineResult, StopReason, Task, Usage

if TYPE_CHECKING:
    from redline.workflows import Progress

__all__ = ["MAX_DEPTH", "MODEL_PREFIX", "ApiError", "ChatPlan", "completion", "completion_id",
           "error_body", "model_id", "plan_request", "progress_comment", "result_error",
           "run_name", "sse_data", "stream_chunks", "summary", "usage_body"]

MODEL_PREFIX = "redline/"
"""A served run's model name is ``redline/<run name>`` (``redline/self-debug``)."""
MAX_DEPTH = 256
"""How deep a request's JSON may nest: a passed-through request is encoded again, and
Python's JSON encoder recurses once per level (a tool's schema needs a handful)."""

_TEXT_PART_TYPES = ("text", "input_text")
_PASSTHROUGH_FIELDS = ("tools", "functions", "tool_choice", "function_call", "audio")


class ApiError(Exception):
    """A request answered with an OpenAI-style error: ``{"error": {"message", "type",
    "param", "code"}}`` and an HTTP status.

    Attributes:
        status: the HTTP status (400, 401, 404, 413, 429, 500, 503, 504).
        message: what is wrong, in a sentence.
        type: ``invalid_request_error``, ``authentication_error``, ``rate_limit_error``,
            ``server_error``, ``timeout_error``.
        param: the request field at fault, when one is.
        code: a short machine-readable code (``unsupported_parameter``, ...).
        headers: extra response headers (``Retry-After``).
        extra: more top-level fields of the body (``redline``: the failed run).
    """

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: Mapping[str, str] | None = None,
                 extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return {**error_body(self.message, type=self.type, param=self.param,
                             code=self.code), **self.extra}


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def run_name(model: str) -> str:
    """The run a request's ``model`` names: ``redline/self-debug`` → ``self-debug``."""
    name = model.strip()
    if name.lower().startswith(MODEL_PREFIX):
        name = name[len(MODEL_PREFIX):]
    return name.lower()


def model_id(name: str) -> str:
    """The model name clients use for run `name`."""
    return MODEL_PREFIX + name


@dataclass(frozen=True)
class ChatPlan:
    """What to do with one chat request."""

    kind: Literal["refine", "passthrough"]
    """Refine it, or send it to the upstream model as it is."""
    run: str
    """The run's name (see `run_name`)."""
    model: str
    """The ``model`` the client asked for (echoed in the response)."""
    task: Task | None = None
    """The task to refine (``kind="refine"``)."""
    max_tokens: int | None = None
    """The request's cap on the loop's token budget."""
    stream: bool = False
    """Answer as server-sent events."""
    include_usage: bool = False
    """Streaming: send a last chunk with ``usage`` (``stream_options.include_usage``)."""
    reason: str = ""
    """Why a request is passed through (``tools``, ``image_url``, ...)."""


def plan_request(body: Any, *, runs: Collection[str], lenient: bool = False) -> ChatPlan:
    """Read a chat-completions request: refine it, pass it through, or refuse it.

    Args:
        body: the request's JSON.
        runs: the names of the runs served.
        lenient: with a single run, any ``model`` selects it (the drop-in client).

    Raises:
        ApiError: 400 for a request the loop refuses or a malformed one; 404 for a
            ``model`` that names no run.
    """
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    _check_values(body)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, f"'model' must be a string ({_listing(runs)}), got "
                       f"{_kind(model)}", param="model")
    if model is None or not model.strip():
        raise ApiError(400, "'model' is required: one of " + _listing(runs), param="model")
    name = run_name(model)
    if name not in runs:
        if lenient and len(runs) == 1:
            name = next(iter(runs))
        else:
            raise ApiError(404, f"The model {model!r} does not exist: this server serves "
                           + _listing(runs), param="model", code="model_not_found")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or \
            not all(isinstance(m, dict) for m in messages):
        raise ApiError(400, "'messages' must be a non-empty list of message objects",
                       param="messages")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be a boolean", param="stream")
    for i, message in enumerate(messages):
        _check_content(message, i)
    _check_passthrough_fields(body)
    reason = _passthrough_reason(body, messages)
    if reason:
        return ChatPlan(kind="passthrough", run=name, model=model, stream=stream,
                        reason=reason)
    n = body.get("n")
    if n is not None and n != 1:
        raise ApiError(400, f"n={n!r} is not supported: a refine run returns one answer, its "
                       "best (send n requests for several)", param="n",
                       code="unsupported_parameter")
    for field in ("logprobs", "top_logprobs"):
        if body.get(field):
            raise ApiError(400, f"{field!r} is not supported: the refined answer comes from "
                           "several model calls, so it has no log probabilities",
                           param=field, code="unsupported_parameter")
    max_tokens = _max_tokens(body)
    stream_options = body.get("stream_options") or {}
    include_usage = bool(isinstance(stream_options, dict)
                         and stream_options.get("include_usage"))
    return ChatPlan(kind="refine", run=name, model=model, task=_task(messages),
                    max_tokens=max_tokens, stream=stream, include_usage=include_usage)


def _listing(runs: Collection[str]) -> str:
    return ", ".join(model_id(r) for r in sorted(runs)) or "no model"


def _kind(value: Any) -> str:
    """A JSON value's type, as a client would name it."""
    if value is None:
        return "null"
    for types, name in ((bool, "a boolean"), ((int, float), "a number"), (str, "a string"),
                        (list, "an array"), (dict, "an object")):
        if isinstance(value, types):
            return name
    return type(value).__name__


def _check_values(body: dict[str, Any]) -> None:
    """Refuse JSON nested deeper than `MAX_DEPTH`, and a string that is not Unicode text:
    a lone surrogate (the JSON escape ``"\\ud800"`` without its pair) parses, but nothing
    can encode it later, deep in a run.

    Walked with a stack of its own: the body may be nested as deep as the JSON parser
    allows, deeper than Python's recursion.
    """
    pending: list[tuple[str, int, Any]] = [("", 1, body)]
    while pending:
        path, depth, value = pending.pop()
        if isinstance(value, str):
            if not _encodable(value):
                raise ApiError(400, f"{path} {_NOT_TEXT}", param=path)
        elif isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise ApiError(400, f"the body is nested more than {MAX_DEPTH} levels deep",
                               code="invalid_json")
            if isinstance(value, list):
                items = [(f"{path}[{i}]", item) for i, item in enumerate(value)]
            else:
                items = []
                for key, item in value.items():
                    if not _encodable(key):
                        where = f"a key of {path}" if path else "a top-level key"
                        raise ApiError(400, f"{where} {_NOT_TEXT}", param=path or None)
                    items.append((f"{path}.{key}" if path else key, item))
            pending.extend((p, depth + 1, item) for p, item in reversed(items))


_NOT_TEXT = "is not valid Unicode text: it holds a lone surrogate (a \\ud800-\\udfff escape " \
    "without its pair)"


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_content(message: dict[str, Any], index: int) -> None:
    """A message's ``content``: absent, a string, or a list of part objects, each with a
    string ``type`` (and a string ``text`` when it is a text part)."""
    content = message.get("content")
    if content is None or isinstance(content, str):
        return
    where = f"messages[{index}].content"
    if not isinstance(content, list):
        raise ApiError(400, f"{where} must be a string or a list of parts, got "
                       f"{_kind(content)}", param=where)
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise ApiError(400, f"{where}[{j}] must be a content part: an object with a "
                           'string \'type\', e.g. {"type": "text", "text": "..."}, got '
                           f"{_kind(part)}", param=f"{where}[{j}]")
        if part["type"] in _TEXT_PART_TYPES and not isinstance(part.get("text"), str):
            raise ApiError(400, f"{where}[{j}].text must be a string, got "
                           f"{_kind(part.get('text'))}", param=f"{where}[{j}].text")


def _check_passthrough_fields(body: dict[str, Any]) -> None:
    """The fields that send a request to the upstream untouched have the shapes the API
    gives them (the upstream is not asked to make sense of ``"tools": 5``)."""
    for field in ("tools", "functions"):
        value = body.get(field)
        if value is not None and not (isinstance(value, list)
                                      and all(isinstance(v, dict) for v in value)):
            raise ApiError(400, f"{field!r} must be a list of objects, got {_kind(value)}",
                           param=field)
    for field in ("tool_choice", "function_call"):
        value = body.get(field)
        if value is not None and not isinstance(value, str | dict):
            raise ApiError(400, f"{field!r} must be a string or an object, got "
                           f"{_kind(value)}", param=field)
    for field in ("response_format", "audio"):
        value = body.get(field)
        if value is not None and not isinstance(value, dict):
            raise ApiError(400, f"{field!r} must be an object, got {_kind(value)}",
                           param=field)
    modalities = body.get("modalities")
    if modalities is not None and not (isinstance(modalities, list)
                                       and all(isinstance(m, str) for m in modalities)):
        raise ApiError(400, f"'modalities' must be a list of strings, got {_kind(modalities)}",
                       param="modalities")


def _passthrough_reason(body: dict[str, Any], messages: list[dict[str, Any]]) -> str:
    for field in _PASSTHROUGH_FIELDS:
        if body.get(field):
            return field
    modalities = body.get("modalities")
    if isinstance(modalities, list) and any(m != "text" for m in modalities):
        return "modalities"
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") not in (None, "text"):
        return "response_format"
    for message in messages:
        if message.get("role") in ("tool", "function"):
            return "tool messages"
        if message.get("tool_calls") or message.get("function_call"):
            return "tool calls"
        content = message.get("content")
        if isinstance(content, list):
            for part in content:  # each an object with a string type (_check_content)
                if part["type"] not in _TEXT_PART_TYPES:
                    return str(part["type"] or "non-text content")
    return ""


def _max_tokens(body: dict[str, Any]) -> int | None:
    found = None
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ApiError(400, f"{field!r} must be a positive integer, got {value!r}",
                           param=field)
        found = value if found is None else min(found, value)
    return found


def _text(message: dict[str, Any]) -> str:
    """A message's text (its content checked by `_check_content`)."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(p["text"] for p in content)


def _task(messages: list[dict[str, Any]]) -> Task:
    """The task: the last user message, the system messages, earlier turns folded in."""
    last = len(messages) - 1
    if messages[last].get("role") != "user":
        raise ApiError(400, "the last message must be the user's (a refine run answers it); "
                       f"got role {messages[last].get('role')!r}", param="messages")
    prompt = _text(messages[last])
    if not prompt.strip():
        raise ApiError(400, "the last user message is empty", param="messages")
    system: list[str] = []
    turns: list[str] = []
    for i, message in enumerate(messages[:last]):
        role = message.get("role")
        text = _text(message)
        if role in ("system", "developer"):
            if text.strip():
                system.append(text)
        elif role in ("user", "assistant"):
            turns.append(f"{role.capitalize()}: {text}")
        else:
            raise ApiError(400, f"messages[{i}].role {role!r} is not a chat role",
                           param=f"messages[{i}].role")
    if turns:
        prompt = ("The conversation so far:\n\n" + "\n\n".join(turns)
                  + "\n\nReply to the user's last message:\n\n" + prompt)
    return Task(prompt=prompt, system="\n\n".join(system) or None)


# -- responses ---------------------------------------------------------------------------


def completion_id() -> str:
    """A fresh chat-completion id."""
    return "chatcmpl-redline-" + uuid.uuid4().hex[:24]


def usage_body(usage: Usage) -> dict[str, int]:
    """OpenAI's ``usage`` from a run's: every call of the loop, critics included."""
    return {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens}


def summary(result: RefineResult, run: str) -> dict[str, Any]:
    """The ``redline`` field: what the loop did (clients may ignore it)."""
    best = result.best
    return {
        "run": run,
        "score": best.score if best else None,
        "threshold": result.threshold,
        "stop_reason": result.stop_reason.value,
        "stop_detail": result.stop_detail,
        "budget_limit": result.budget_limit,
        "rounds": len(result.rounds),
        "llm_calls": result.usage.llm_calls,
        "cost_usd": result.usage.cost_usd,
        "seconds": round(result.usage.seconds, 3),
        "critiques": [{"critic": c.critic, "score": c.score, "passed": c.passed,
                       "feedback": c.feedback} for c in (best.critiques if best else [])],
        "error": result.error,
    }


def result_error(result: RefineResult, plan: ChatPlan) -> ApiError | None:
    """The error a finished run answers with, if any: a run that broke (a critic or
    the model) is a 500 naming what broke; a budget too small for one scored draft is a
    400. The ``redline`` field (with the best so far, if any) comes with it."""
    extra = {"redline": {**summary(result, plan.run), "text": result.text}}
    if result.stop_reason is StopReason.error:
        return ApiError(500, f"the refine run failed: {result.error}", type="server_error",
                        code="refine_failed", extra=extra)
    if result.best is None:
        return ApiError(400, f"the budget allowed no answer: {result.stop_detail}",
                        param="max_tokens" if plan.max_tokens else None,
                        code="budget_too_small", extra=extra)
    return None


def completion(result: RefineResult, plan: ChatPlan, *, id: str | None = None,
               created: int | None = None) -> dict[str, Any]:
    """The ``chat.completion`` for a finished run: the best candidate's text."""
    return {
        "id": id or completion_id(),
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": plan.model,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": result.text or "",
                                 "refusal": None}}],
        "usage": usage_body(result.usage),
        "system_fingerprint": None,
        "redline": summary(result, plan.run),
    }


def _chunk(id: str, created: int, model: str, delta: dict[str, Any],
           finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason,
                         "logprobs": None}], **extra}


def stream_chunks(result: RefineResult, plan: ChatPlan, *, id: str, created: int,
                  piece: int = 64) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a finished run's answer: the role, the
    text in pieces of about `piece` characters, the finish (with the ``redline``
    field), and a ``usage`` chunk when the request asked for one."""
    model = plan.model
    yield _chunk(id, created, model, {"role": "assistant", "content": ""})
    text = result.text or ""
    for start in range(0, len(text), piece):
        yield _chunk(id, created, model, {"content": text[start:start + piece]})
    yield _chunk(id, created, model, {}, "stop", redline=summary(result, plan.run))
    if plan.include_usage:
        yield {"id": id, "object": "chat.completion.chunk", "created": created,
               "model": model, "choices": [], "usage": usage_body(result.usage)}


def sse_data(data: Any) -> str:
    """One server-sent event carrying JSON (or ``[DONE]``)."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def progress_comment(progress: Progress) -> str | None:
    """An SSE comment (skipped by clients) on a step of the loop: after each critique
    and at the stop, ``: redline round=1 best=0.62``."""
    if progress.node not in ("critique", "finalize"):
        return None
    best = "none" if progress.best_score is None else f"{progress.best_score:.3f}"
    line = f": redline round={progress.round} node={progress.node} best={best}"
    if progress.stop_reason is not None:
        line += f" stop={progress.stop_reason.value}"
    return line + "\n\n"
