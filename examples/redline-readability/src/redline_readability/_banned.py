"""The banned-phrases gate: a `Critic` subclass."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from redline import Candidate, Critic, Critique, Task
from redline.errors import ConfigError

__all__ = ["BannedPhrases", "banned_phrases_critic"]

_CONTEXT = 30
"""Characters of context quoted on each side of a banned phrase."""


class BannedPhrases(Critic):
    """A gate that fails when the text contains any banned phrase.

    Matching is case-insensitive and whole-phrase: ``"delve"`` matches "Delve into" but
    not "delved", and the words of a phrase may be separated by any whitespace, line
    breaks included. The score is 1.0 when no phrase is found, else 0.0; as a gate, a
    failure caps the panel's score at 0.

    Args:
        phrases: the phrases to ban (blank ones are ignored, duplicates merged).
        name: the critic's name.

    Raises:
        ConfigError: no phrase to ban.
    """

    gate = True
    deterministic = True

    def __init__(self, phrases: Iterable[str], *, name: str = "banned") -> None:
        self.name = name
        self.phrases = list(dict.fromkeys(
            " ".join(p.split()) for p in phrases if p.strip()))
        if not self.phrases:
            raise ConfigError(f"critic {name!r} needs at least one phrase to ban")
        self._patterns = [
            re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, p.split())) + r"(?!\w)",
                       re.IGNORECASE)
            for p in self.phrases]

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: str) -> BannedPhrases:
        """Phrases from a UTF-8 text file, one a line; blank lines and ``#`` lines are skipped.

        Raises:
            ConfigError: the file cannot be read or holds no phrase.
        """
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"cannot read banned-phrases file {str(path)!r}: {reason}"
                              ) from exc
        phrases = [line for line in lines if not line.lstrip().startswith("#")]
        if not any(p.strip() for p in phrases):
            raise ConfigError(f"banned-phrases file {str(path)!r} has no phrases "
                              "(one a line; blank and # lines are skipped)")
        return cls(phrases, **kwargs)

    async def critique(self, task: Task, candidate: Candidate) -> Critique:
        text = candidate.text
        found: dict[str, int] = {}
        lines = []
        for phrase, pattern in zip(self.phrases, self._patterns, strict=True):
            matches = list(pattern.finditer(text))
            if not matches:
                continue
            found[phrase] = len(matches)
            times = f" ({len(matches)} times)" if len(matches) > 1 else ""
            lines.append(f'- "{phrase}"{times}: {_context(text, matches[0])}')
        if not found:
            return Critique(critic=self.name, score=1.0, passed=True,
                            evidence={"found": {}, "checked": len(self.phrases)})
        return Critique(
            critic=self.name, score=0.0, passed=False,
            feedback="Remove or reword these banned phrases:\n" + "\n".join(lines),
            evidence={"found": found, "checked": len(self.phrases)})


def _context(text: str, match: re.Match[str]) -> str:
    """The match with up to `_CONTEXT` characters each side, cut at whole words."""
    before = text[max(0, match.start() - _CONTEXT):match.start()]
    after = text[match.end():match.end() + _CONTEXT]
    cut_before, cut_after = match.start() > _CONTEXT, match.end() + _CONTEXT < len(text)
    if cut_before:
        before = "…" + re.sub(r"^\S*\s*", "", before)
    if cut_after:
        after = re.sub(r"\s*\S*$", "", after) + "…"
    return '"' + " ".join((before + match.group(0) + after).split()) + '"'


def banned_phrases_critic(arg: str | None) -> BannedPhrases:
    """A gate that fails on any banned phrase.

    Argument (required): the phrases, separated by commas, or @FILE for a text file with
    one phrase a line (blank lines and lines starting with # are skipped; use a file for
    phrases that contain commas). A match caps the run's score at 0, and the feedback
    quotes each phrase found in its context.

    Examples:
        --critic 'banned:as an AI,delve,rich tapestry'
        --critic banned:@banned-phrases.txt
    """
    usage = ("write --critic 'banned:PHRASE,PHRASE,...' or --critic banned:@FILE "
             "(one phrase a line)")
    if arg is None or not arg.strip():
        raise ConfigError(f"critic 'banned' needs the phrases to ban: {usage}")
    if arg.startswith("@"):
        if not arg[1:].strip():
            raise ConfigError(f"critic 'banned': '@' needs a file name: {usage}")
        return BannedPhrases.from_file(arg[1:])
    phrases = [p for p in arg.split(",") if p.strip()]
    if not phrases:
        raise ConfigError(f"critic 'banned' got no phrases in {arg!r}: {usage}")
    return BannedPhrases(phrases)
