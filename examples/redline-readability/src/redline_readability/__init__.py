"""Readability and banned-phrases critics for redline, installed as a plugin.

Two critics, registered in the ``redline.critics`` entry-point group:

- ``readability[:GRADE]``: the Flesch-Kincaid grade level at or below a target
  (`readability`, built by `readability_critic`), written as an ``@critic`` function.
- ``banned:PHRASES`` / ``banned:@FILE``: a gate failing on banned phrases
  (`BannedPhrases`, built by `banned_phrases_critic`), written as a `Critic` subclass.
"""

from redline_readability._banned import BannedPhrases, banned_phrases_critic
from redline_readability._readability import (
    TextStats,
    count_syllables,
    readability,
    readability_critic,
    text_stats,
)

__all__ = [
    "BannedPhrases",
    "TextStats",
    "banned_phrases_critic",
    "count_syllables",
    "readability",
    "readability_critic",
    "text_stats",
]
