"""Finding the JSON value in a model's reply or a candidate answer.

Models wrap JSON in prose and code fences; answers embed it in explanations. `find_json`
looks, in order, at fenced code blocks tagged ``json`` (or untagged), found by the same
parser the code critics use (`code_blocks`: ```` ``` ```` or ``~~~`` fences), at the
whole text, and at every balanced ``{...}`` / ``[...]`` in the text, and returns the
first fenced value, the whole text, or the longest embedded value of an accepted kind.
Brackets inside JSON strings are handled by the JSON decoder itself, not by counting,
and the pieces of JSON that does not decode (an object inside a broken one) are never
taken for the answer's JSON: the decoder's error is reported instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from redline.feedback_sources.code import code_blocks

__all__ = ["FoundJSON", "find_json"]

_JSON_TAGS = frozenset({"", "json", "jsonc", "json5"})
_DECODER = json.JSONDecoder()
_OPENER = re.compile(r"[{\[]")
_STARTS_LIKE_JSON = re.compile(r'\{\s*"|\[\s*[{\["]')
_MAX_STARTS = 2000
"""Opening brackets tried in one text: bounds the work on pathological input."""


@dataclass(frozen=True)
class FoundJSON:
    """A JSON value found in a text.

    Attributes:
        value: the decoded value.
        raw: the JSON exactly as it appears in the text.
        start: its offset in the text.
        fenced: whether it came from a fenced code block.
    """

    value: Any
    raw: str
    start: int
    fenced: bool


def find_json(text: str, *, kinds: tuple[type, ...] = (dict, list)
              ) -> tuple[FoundJSON | None, str]:
    """The JSON value in `text`, or None and what is wrong.

    Args:
        text: a model reply or an answer, JSON possibly fenced or surrounded by prose.
        kinds: the accepted types of the top-level value: ``(dict,)`` for an object only,
            ``(list,)`` for an array, both by default.

    Returns:
        ``(found, "")``, or ``(None, problem)`` where the problem reads well in a re-ask
        or in feedback: ``"no JSON object found"`` or ``"invalid JSON (<decoder
        message>)"`` when something looked like JSON but did not decode.
    """
    first_error = ""
    for block in code_blocks(text):
        if block.language not in _JSON_TAGS:
            continue
        inside = text[block.start:block.end]
        body = inside.strip()
        start = block.start + inside.index(body[:1]) if body else block.start
        try:
            value = json.loads(body)
        except json.JSONDecodeError as exc:
            first_error = first_error or f"invalid JSON ({exc.msg} at line {exc.lineno} " \
                f"column {exc.colno} of the fenced block)"
            continue
        if isinstance(value, kinds):
            return FoundJSON(value, body, start, fenced=True), ""
    stripped = text.strip()
    if stripped[:1] in "{[":
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            pass
        else:
            if isinstance(value, kinds):
                return FoundJSON(value, stripped, text.index(stripped[:1]), fenced=False), ""
    found, error = _embedded(text, kinds)
    if found is not None:
        return found, ""
    return None, first_error or error or _nothing(kinds)


def _embedded(text: str, kinds: tuple[type, ...]) -> tuple[FoundJSON | None, str]:
    """The longest balanced JSON value of an accepted kind embedded in prose."""
    best: FoundJSON | None = None
    error = ""
    broken_until = -1  # values starting before this are fragments of broken JSON
    pos, tries = 0, 0
    while tries < _MAX_STARTS:
        match = _OPENER.search(text, pos)
        if match is None:
            break
        tries += 1
        start = match.start()
        try:
            value, end = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            # Only what starts like JSON counts as broken JSON: "{name}" placeholders
            # and "[see above]" asides are common in prose.
            if _STARTS_LIKE_JSON.match(text, start):
                error = error or f"invalid JSON ({exc.msg})"
                broken_until = max(broken_until, exc.pos)
            pos = start + 1
            continue
        if not isinstance(value, kinds):
            pos = start + 1  # an array of objects when objects are wanted: look inside
            continue
        if start > broken_until and (best is None or end - start > len(best.raw)):
            best = FoundJSON(value, text[start:end], start, fenced=False)
        pos = end  # values inside this one are shorter
    return best, error


def _nothing(kinds: tuple[type, ...]) -> str:
    if kinds == (dict,):
        return "no JSON object found"
    if kinds == (list,):
        return "no JSON array found"
    return "no JSON object or array found"
