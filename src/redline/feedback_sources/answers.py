"""The final answer a candidate states, and when two answers are the same.

What answer-checking critics (the interpreter verifier) and majority voting over drafts
(self-consistency, CRITIC's preset) use:

- `final_answer`: the answer stated in a text: ``\\boxed{X}``, GSM8K's ``#### X``,
  "the answer is X" / "Answer: X", else the last number, else a short one-line text.
- `answer_key`: a normalised key, so that answers written differently (``$1,000.00``
  and ``1000``, ``0.50`` and ``1/2``) compare equal and vote together.
- `same_answer`: numbers compared with a tolerance, anything else by key.

```python
assert final_answer("She pays 3 * 6 = $18 a day.\\n#### 18") == "18"
assert same_answer("$18.00", "18") and answer_key("1,000") == "1000"
```
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

__all__ = ["answer_key", "final_answer", "is_number", "same_answer"]

# A number as written in prose: thousands separators, decimals, a sign not glued to a
# word ("x-3" is no negative three).
_NUMBER = r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?(?![\w])"
_NUMBER_RE = re.compile(_NUMBER)
_GSM8K = re.compile(r"^[ \t]*####[ \t]*(?P<x>[^\n]*)", re.MULTILINE)
_PHRASE = re.compile(
    r"(?:final\s+answer|the\s+answer|\banswer)\**\s*(?:is\b|:|=)\s*:?\**[ \t]*"
    r"(?P<x>[^\n]+)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?:\s|$)|[!?](?:\s|$)")
_WORDS = re.compile(r"[a-z\s.,;:!?()'/-]*", re.IGNORECASE)
_SHORT = 80
"""Longest one-line text taken as the answer itself when it states no number."""

_LATEX_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf|operatorname)\{([^{}]*)\}")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
_LATEX_NOISE = re.compile(r"\\[,;:! ]|\\left|\\right")
_CURRENCY = re.compile(r"\\?[$€£¥%]|\\%")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_WRAPPING = " \t\n*`_\"'"
_NUMERIC = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?|[-+]?\d+/[1-9]\d*")
_NUMBER_IN_TEXT = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:/[1-9]\d*)?(?!\w|\.\d)")


def final_answer(text: str) -> str | None:
    """The final answer `text` states, as written (see `answer_key` to compare it).

    Tried in order, the last occurrence of each winning: ``\\boxed{X}``; a GSM8K line
    ``#### X``; "the answer is X", "Answer: X", "final answer: X" (X up to the end of
    its sentence or line); else the last number in the text; else the text itself when
    it is one short line. An answer that is one number followed by words only
    ("18 dollars", "5 apples per day") is that number.

    Args:
        text: a candidate's text (a solution's reasoning, or just its answer).

    Returns:
        The answer (e.g. ``"$1,000"``, ``"\\frac{1}{2}"``, ``"Paris"``), or None when the
        text is empty or long prose stating no answer and no number.

    Examples:
        >>> final_answer("3 + 4 = 7 apples, so she has 7 left.\\n#### 7")
        '7'
        >>> final_answer("So the answer is $1,250.")
        '$1,250'
        >>> final_answer("The result is \\\\boxed{\\\\frac{1}{2}}.")
        '\\\\frac{1}{2}'
    """
    text = text.strip()
    if not text:
        return None
    boxed = _last_boxed(text)
    if boxed is not None and boxed.strip():
        return boxed.strip()
    for pattern in (_GSM8K, _PHRASE):
        matches = [m.group("x") for m in pattern.finditer(text)]
        stated = _clean_stated(matches[-1]) if matches else ""
        if stated:
            return _number_with_units(stated)
    numbers = _NUMBER_RE.findall(text)
    if numbers:
        return numbers[-1]
    if "\n" not in text and len(text) <= _SHORT:
        return _unwrap(text) or None
    return None


def answer_key(answer: str) -> str:
    """A normalised form of `answer`: answers written differently get the same key.

    Lowercased and stripped of surrounding ``$``, ``**``, backticks, quotes and a
    trailing period; LaTeX ``\\text{}``, ``\\frac{a}{b}`` and spacing commands unwrapped;
    thousands separators, currency and percent signs dropped; whitespace collapsed. A
    number becomes canonical: ``3.0`` → ``3``, ``0.50`` → ``0.5``, ``1/2`` → ``0.5``;
    numbers inside a longer answer too ("3.0 apples" → "3 apples").

    Args:
        answer: an answer, as `final_answer` returns it or as a program prints it.

    Returns:
        The key; equal keys are the same answer.

    Examples:
        >>> answer_key(" **$1,000.00** ")
        '1000'
        >>> answer_key("\\\\frac{1}{2}")
        '0.5'
        >>> answer_key("Paris.")
        'paris'
    """
    key = answer.strip().lower()
    key = _LATEX_FRAC.sub(r"(\1)/(\2)", key)
    key = _LATEX_WRAPPERS.sub(r"\1", key)
    key = _LATEX_NOISE.sub(" ", key)
    key = _CURRENCY.sub("", key)
    key = _THOUSANDS.sub("", key)
    key = re.sub(r"\((-?[\d.]+)\)/\((-?[\d.]+)\)", r"\1/\2", key)  # unwrapped \frac
    key = _unwrap(" ".join(key.split()))
    number = _as_number(key)
    if number is not None:
        return _canonical(number)
    return _NUMBER_IN_TEXT.sub(_canonical_match, key)


def is_number(answer: str) -> bool:
    """Whether `answer` is one number once normalised (`answer_key`): what
    `same_answer` compares as a number rather than as text.

    Examples:
        >>> is_number("$1,000.50"), is_number("3/4"), is_number("x = 3")
        (True, True, False)
    """
    return _as_number(answer_key(answer)) is not None


def same_answer(a: str, b: str, *, rel_tol: float = 1e-6) -> bool:
    """Whether answers `a` and `b` are the same.

    Both numbers (after `answer_key`): equal within `rel_tol` (relative; an absolute
    1e-9 near zero), so a program's ``18.000000000000004`` matches ``18``. Otherwise
    their keys are equal.

    Args:
        a: one answer (e.g. from `final_answer`).
        b: the other (e.g. a program's printed result).
        rel_tol: relative tolerance for numbers.

    Examples:
        >>> same_answer("$18.00", "18.000000000000004")
        True
        >>> same_answer("0.33", "1/3")
        False
    """
    key_a, key_b = answer_key(a), answer_key(b)
    x, y = _as_number(key_a), _as_number(key_b)
    if x is not None and y is not None:
        return math.isclose(float(x), float(y), rel_tol=rel_tol, abs_tol=1e-9)
    return key_a == key_b


def _last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None  # unbalanced: cut off mid-answer


def _clean_stated(stated: str) -> str:
    """A stated answer up to the end of its sentence, without markdown around it."""
    end = _SENTENCE_END.search(stated)
    if end is not None:
        stated = stated[:end.start()]
    return _unwrap(stated)


def _unwrap(text: str) -> str:
    """`text` without markdown, quotes and end punctuation around it, layer by layer
    ("**Paris**." → "**Paris**" → "Paris")."""
    previous = None
    while previous != text:
        previous = text
        text = text.strip(_WRAPPING).rstrip(".,;:").strip()
    return text


def _number_with_units(stated: str) -> str:
    """The number of "18 dollars" or "$5 per day"; anything else as it is."""
    numbers = list(_NUMBER_RE.finditer(stated))
    if len(numbers) != 1:
        return stated
    number = numbers[0]
    before = stated[:number.start()].strip()
    after = stated[number.end():]
    if before not in ("", "$", "\\$", "€", "£") or not _WORDS.fullmatch(after):
        return stated
    return stated[:number.end()].strip() if before else number.group()


def _as_number(key: str) -> Fraction | None:
    """The exact value of a key that is one number (``"1/2"``, ``"-3.5"``), else None."""
    if not _NUMERIC.fullmatch(key):
        return None
    try:
        return Fraction(key)
    except (ValueError, ZeroDivisionError):
        return None


def _canonical_match(match: re.Match[str]) -> str:
    number = _as_number(match.group())
    return match.group() if number is None else _canonical(number)


def _canonical(number: Fraction) -> str:
    """``3`` for 3.0, ``0.5`` for 1/2 (a float's shortest repr when not an integer)."""
    if number.denominator == 1:
        return str(number.numerator)
    return repr(float(number))
