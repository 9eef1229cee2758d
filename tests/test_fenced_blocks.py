"""One fenced-block parser: the JSON finder and the code critics read an answer alike."""

from __future__ import annotations

import json

import pytest

from redline.critics._json import find_json
from redline.feedback_sources.code import code_blocks, extract_code

EXAMPLE = 'The input looked like {"name": "example", "items": [1, 2, 3], "note": "long"}.\n'

# Answers that the JSON finder's own fence regex (```lang\n ... ```) used to read
# differently from `code_blocks`: it missed ~~~ fences and info strings with attributes
# (and took the longer example in the prose instead), and closed a ```` fence at the
# first ``` inside it.
DISAGREED = {
    "tilde fence": EXAMPLE + '~~~json\n{"name": "answer"}\n~~~\n',
    "info string with attributes": EXAMPLE + '```json title="reply"\n{"name": "answer"}\n```',
    "longer fence holding a shorter one": (
        '````json\n{"name": "answer", "readme": [\n"```python",\n"print(1)",\n"```"\n]}\n'
        '````\n'),
    "crlf line ends": EXAMPLE + '```json\r\n{"name": "answer"}\r\n```\r\n',
}


@pytest.mark.parametrize("answer", DISAGREED.values(), ids=DISAGREED.keys())
def test_the_json_finder_takes_the_block_the_code_parser_sees(answer: str) -> None:
    (block,) = code_blocks(answer)
    found, problem = find_json(answer, kinds=(dict,))
    assert problem == "" and found is not None and found.fenced
    assert found.value == json.loads(block.code) and found.value["name"] == "answer"
    assert answer[found.start:found.start + len(found.raw)] == found.raw
    assert answer[block.start:block.end].strip() == found.raw


def test_blocks_know_where_they_are() -> None:
    answer = "Intro\n```python\nx = 1\n```\nthen\n~~~\nopen to the end"
    first, second = code_blocks(answer)
    assert answer[first.start:first.end] == "x = 1\n" and first.code == "x = 1\n"
    assert (second.language, answer[second.start:second.end]) == ("", "open to the end")
    assert extract_code(answer, "python") == "x = 1\n"


def test_a_truncated_json_block_is_reported_as_broken() -> None:
    found, problem = find_json('Here:\n```json\n{"name": "ans', kinds=(dict,))
    assert found is None and problem.startswith("invalid JSON (") \
        and problem.endswith("of the fenced block)")
