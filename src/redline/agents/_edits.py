"""Search/replace edit blocks: parsing and applying them to a candidate."""

from __future__ import annotations

import re

__all__ = ["EditError", "apply_edits", "parse_edits"]

_BLOCK = re.compile(
    r"<{5,9} ?SEARCH[^\n]*\n(.*?)\n?={5,9}[^\n]*\n(.*?)\n?>{5,9} ?REPLACE", re.DOTALL)


class EditError(ValueError):
    """An edit reply that cannot be applied (the reviser falls back to a rewrite)."""


def parse_edits(reply: str) -> list[tuple[str, str]]:
    """The (search, replace) pairs in a reply, in order."""
    return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(reply)]


def apply_edits(text: str, reply: str) -> str:
    """Apply every block of `reply` to `text`.

    Raises:
        EditError: no block, an empty SEARCH, or a SEARCH that is not found exactly once.
    """
    blocks = parse_edits(reply)
    if not blocks:
        raise EditError("the reply has no SEARCH/REPLACE block")
    for i, (search, replace) in enumerate(blocks, 1):
        if not search.strip():
            raise EditError(f"block {i} has an empty SEARCH part")
        count = text.count(search)
        if count != 1:
            where = "not found" if count == 0 else f"found {count} times"
            raise EditError(f"block {i}: SEARCH text {where} in the answer")
        text = text.replace(search, replace, 1)
    return text
