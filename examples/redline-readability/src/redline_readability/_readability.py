"""The readability critic: Flesch-Kincaid grade level against a target (an `@critic`)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from redline import Critic, Critique, critic
from redline.errors import ConfigError

__all__ = [
    "DEFAULT_MAX_GRADE",
    "HALF_LIFE",
    "TextStats",
    "count_syllables",
    "readability",
    "readability_critic",
    "text_stats",
]

DEFAULT_MAX_GRADE = 8.0
HALF_LIFE = 4.0
"""Grades above the target over which the score halves."""
_GRADE_AT_TYPICAL_WORDS = 11.8 * 1.5 - 15.59
"""The syllables-per-word term of the grade at a typical 1.5 syllables a word."""

_WORD = re.compile(r"[A-Za-z]+(?:['’-][A-Za-z]+)*")
# A sentence ends at . ! or ? (before closing quotes/brackets and whitespace), at a blank
# line, or where a new list item or heading starts: bullet lists rarely end in a full stop.
_SENTENCE_BREAK = re.compile(
    r"(?<=[.!?])[\"'”’)\]]*\s+|\n\s*\n|\n(?=[ \t]*(?:[-*+•]|\d+[.)]|#+)[ \t])")
_VOWEL_GROUP = re.compile(r"[aeiouy]+")
# Endings that add no syllable: "makes", "jumped", "make" (but not "table", "wanted",
# "boxes", "pages").
_SILENT_ENDING = re.compile(r"(?:[^laeiouycgsxz]es|(?<=[^td])ed|[^laeiouy]e)$")


def count_syllables(word: str) -> int:
    """Syllables in an English word, by a vowel-group heuristic (0 for a non-word).

    Counts groups of vowels (``y`` included) after dropping endings that are usually
    silent (``-e``, ``-es``, ``-ed``); every word has at least one. Hyphenated words
    count each part. Right for most everyday words, off by one on some ("created": 2).
    """
    parts = [re.sub(r"[^a-z]", "", p) for p in word.lower().split("-")]
    return sum(_part_syllables(p) for p in parts if p)


def _part_syllables(word: str) -> int:
    if len(word) <= 3:
        return 1
    return max(1, len(_VOWEL_GROUP.findall(_SILENT_ENDING.sub("", word))))


@dataclass(frozen=True)
class TextStats:
    """Counts that the Flesch-Kincaid grade is computed from."""

    sentences: list[list[str]]
    """Each sentence's words (sentences without words are left out)."""
    syllables: dict[str, int]
    """Syllables of each distinct word (lower-cased)."""

    @property
    def words(self) -> int:
        """Words in the text."""
        return sum(len(s) for s in self.sentences)

    @property
    def syllable_count(self) -> int:
        """Syllables in the text."""
        return sum(self.syllables[w.lower()] for s in self.sentences for w in s)

    @property
    def grade(self) -> float:
        """The Flesch-Kincaid grade level (US school grade; can be below 0 or above 18).

        ``0.39 * words / sentences + 11.8 * syllables / words - 15.59``
        """
        if not self.words:
            raise ValueError("no words to grade")
        return (0.39 * self.words / len(self.sentences)
                + 11.8 * self.syllable_count / self.words - 15.59)


def text_stats(text: str) -> TextStats:
    """Split a text into sentences and words and count each word's syllables."""
    sentences = [words for chunk in _SENTENCE_BREAK.split(text)
                 if (words := _WORD.findall(chunk))]
    syllables = {w.lower(): count_syllables(w) for s in sentences for w in s}
    return TextStats(sentences=sentences, syllables=syllables)


def readability(max_grade: float = DEFAULT_MAX_GRADE, *, name: str = "readability",
                longest: int = 2) -> Critic:
    """A critic that wants text at or below a Flesch-Kincaid grade level.

    The score is 1.0 at or below `max_grade` and halves for every `HALF_LIFE` (4) grades
    above it: ``score = 0.5 ** ((grade - max_grade) / 4)``, so one grade over scores
    0.84, four over 0.5, eight over 0.25. ``passed`` is ``grade <= max_grade`` and
    ``raw`` is the grade. An empty text (no words) scores 0.

    Args:
        max_grade: the target maximum grade, > 0.
        name: the critic's name.
        longest: how many of the longest sentences and words the feedback names.

    Raises:
        ConfigError: `max_grade` is not a finite number > 0.
    """
    if isinstance(max_grade, bool) or not isinstance(max_grade, int | float) \
            or not math.isfinite(max_grade) or max_grade <= 0:
        raise ConfigError(f"critic {name!r}: the target grade must be a number > 0, "
                          f"got {max_grade!r}")
    target = float(max_grade)

    @critic(name=name, deterministic=True)
    def check_readability(text: str) -> Critique:
        stats = text_stats(text)
        if not stats.words:
            return Critique(critic=name, score=0.0, passed=False,
                            feedback="The answer has no words to read: write the answer.",
                            evidence={"target": target, "sentences": 0, "words": 0,
                                      "syllables": 0})
        grade = stats.grade
        passed = grade <= target
        return Critique(
            critic=name,
            score=1.0 if passed else 0.5 ** ((grade - target) / HALF_LIFE),
            passed=passed,
            raw=grade,
            feedback="" if passed else _feedback(stats, grade, target, longest),
            evidence={"grade": round(grade, 2), "target": target,
                      "sentences": len(stats.sentences), "words": stats.words,
                      "syllables": stats.syllable_count,
                      "words_per_sentence": round(stats.words / len(stats.sentences), 2),
                      "syllables_per_word": round(stats.syllable_count / stats.words, 2)})

    return check_readability


def _feedback(stats: TextStats, grade: float, target: float, longest: int) -> str:
    lines = [(f"Reading grade {grade:.1f} is above the target {target:g} (Flesch-Kincaid): "
              "use shorter sentences and plainer words.")]
    # At a typical 1.5 syllables a word, the target allows about this many words a sentence.
    fits = max(5, round((target - _GRADE_AT_TYPICAL_WORDS) / 0.39))
    for words in sorted(stats.sentences, key=len, reverse=True)[:longest]:
        if len(words) > fits:
            lines.append(f"- Split this {len(words)}-word sentence (aim for {fits} words or "
                         f"fewer): {_quote(words)}")
    hard = sorted((w for w, n in stats.syllables.items() if n >= 3),
                  key=lambda w: (-stats.syllables[w], w))[:longest + 1]
    if hard:
        lines.append("- Use simpler words than: " + ", ".join(
            f"{w!r} ({stats.syllables[w]} syllables)" for w in hard))
    return "\n".join(lines)


def _quote(words: list[str], limit: int = 8) -> str:
    shown = " ".join(words[:limit])
    return f'"{shown} …"' if len(words) > limit else f'"{shown}"'


def readability_critic(arg: str | None) -> Critic:
    """Flesch-Kincaid reading grade at or below a target.

    Argument: the target maximum grade, a number > 0 (default 8, plain English). The
    score is 1.0 at or below the target and halves for every 4 grades above it; the
    feedback names the longest sentences and words to simplify.

    Examples:
        --critic readability
        --critic readability:6
        --critic readability:10.5
    """
    if arg is None or not arg.strip():
        return readability()
    try:
        target = float(arg)
    except ValueError:
        raise ConfigError(f"critic 'readability': the argument is the target grade, a "
                          f"number > 0 (e.g. readability:8); got {arg!r}") from None
    if not math.isfinite(target) or target <= 0:
        raise ConfigError(f"critic 'readability': the target grade must be a number > 0 "
                          f"(e.g. readability:8); got {arg!r}")
    return readability(target)
