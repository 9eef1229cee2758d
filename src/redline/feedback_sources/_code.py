"""Getting the code out of an answer: fenced Markdown blocks, or the raw text."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

__all__ = ["CodeBlock", "code_blocks", "extract_code", "extract_python", "language_of"]

_OPEN = re.compile(r"^[ \t]{0,3}(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*?)[ \t]*$")

_ALIASES = {
    "python": {"python", "py", "python3", "py3"},
    "c": {"c", "h"},
    "cpp": {"cpp", "c++", "cc", "cxx", "hpp"},
    "rust": {"rust", "rs"},
    "typescript": {"typescript", "ts", "tsx"},
    "javascript": {"javascript", "js", "jsx", "mjs"},
    "go": {"go", "golang"},
    "java": {"java"},
    "shell": {"sh", "bash", "shell", "zsh"},
}

_SUFFIXES = {".py": "python", ".pyi": "python", ".c": "c", ".h": "c", ".cpp": "cpp",
             ".cc": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".rs": "rust", ".ts": "typescript",
             ".tsx": "typescript", ".js": "javascript", ".mjs": "javascript", ".go": "go",
             ".java": "java", ".sh": "shell"}


@dataclass(frozen=True)
class CodeBlock:
    """A fenced block of a Markdown answer."""

    language: str
    """The info string's first word, lower-cased ("" when untagged)."""
    code: str
    """The block's text, without the fences."""
    start: int = 0
    """Where the block's text starts in the answer (just after the opening fence line)."""
    end: int = 0
    """Where it ends: the start of the closing fence line, or the end of the answer."""


def code_blocks(text: str) -> list[CodeBlock]:
    """Every fenced block (```` ``` ```` or ``~~~``) in `text`, in order.

    The one fence parser of redline: code critics take code from these blocks and
    `find_json` takes JSON from them, so both read an answer the same way. As in
    CommonMark, a fence opens a line (indented by at most three spaces) and is closed
    by a line holding only a fence of the same character at least as long, so a
    ```` ```` ```` block may contain ```` ``` ```` lines. A block left open at the end
    (a truncated answer) runs to the end of the text.
    """
    blocks: list[CodeBlock] = []
    lines = text.splitlines()
    offsets = [0]
    for line in text.splitlines(keepends=True):
        offsets.append(offsets[-1] + len(line))
    i = 0
    while i < len(lines):
        opening = _OPEN.match(lines[i])
        if not opening:
            i += 1
            continue
        fence = opening["fence"]
        info = opening["info"].split()
        body: list[str] = []
        i += 1
        start = offsets[i]
        while i < len(lines):
            stripped = lines[i].strip()
            if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
                break
            body.append(lines[i])
            i += 1
        end = offsets[i] if i < len(lines) else len(text)
        i += 1
        language = info[0].lower().lstrip("{.") if info else ""
        blocks.append(CodeBlock(language=language, code="\n".join(body) + "\n",
                                start=start, end=end))
    return blocks


def language_of(suffix: str) -> str | None:
    """The language of a file suffix (``".c"`` -> ``"c"``), or None when unknown."""
    return _SUFFIXES.get(suffix.lower())


def extract_code(text: str, language: str | None = None) -> str:
    """The code in an answer.

    The blocks tagged with `language` (or one of its aliases, e.g. ``py`` for python)
    joined by blank lines; else the untagged blocks; else, when there are only blocks
    tagged otherwise, the longest one; else the text itself (an answer that is all
    code).

    Args:
        text: the answer.
        language: the language wanted, e.g. ``"python"``, ``"c"``; None takes every
            block.
    """
    blocks = code_blocks(text)
    if not blocks:
        return text if text.endswith("\n") else text + "\n"
    if language is None:
        chosen = blocks
    else:
        names = _ALIASES.get(language.lower(), {language.lower()})
        chosen = [b for b in blocks if b.language in names] \
            or [b for b in blocks if not b.language] \
            or [max(blocks, key=lambda b: len(b.code))]
    return "\n".join(b.code for b in chosen)


def extract_python(text: str) -> str:
    """The Python code in an answer, preferring code that parses.

    As `extract_code` with ``language="python"``; when the blocks joined do not parse
    but one of them does (an answer that also shows a shell session or a fragment),
    the longest block that parses. Code that does not parse anyway is returned as is,
    so that running it reports the syntax error.
    """
    code = extract_code(text, "python")
    if _parses(code):
        return code
    blocks = [b.code for b in code_blocks(text) if _parses(b.code)]
    return max(blocks, key=len) if blocks else code


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True
