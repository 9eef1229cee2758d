"""The readability and banned-phrases critics: their verdicts, their arguments, and the
plugin mechanism that finds them (the package must be installed: `pip install -e .`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
import redline
from click.testing import CliRunner
from redline import Candidate, Critique, StopReason, Task
from redline.cli import cli
from redline.errors import ConfigError
from redline.plugins import build_critic, discover
from redline.testing import ScriptedChat, check_critic

from redline_readability import (
    BannedPhrases,
    banned_phrases_critic,
    count_syllables,
    readability,
    readability_critic,
    text_stats,
)

EASY = "The cat sat on the mat. It was a warm day. The dog ran to the park."
MEDIUM = ("Good software is easy to change. Most teams learn this when a small request "
          "takes a week, because the code that handles it is spread over many files.")
HARD = ("The epistemological ramifications of contemporary computational methodologies "
        "necessitate a comprehensive reconsideration of traditional interpretative "
        "frameworks, particularly insofar as algorithmic intermediation transforms "
        "institutional knowledge production.")
SAMPLES = [EASY, MEDIUM, HARD, "", "Delve into it, as an AI would.", "- one\n- two\n- three"]


def judge(critic: redline.Critic, text: str) -> Critique:
    return asyncio.run(critic.critique(Task(prompt="Explain."), Candidate(text=text)))


def grade(text: str) -> float:
    return text_stats(text).grade


# -- readability --------------------------------------------------------------------------

@pytest.mark.parametrize(("word", "syllables"), [
    ("cat", 1), ("make", 1), ("makes", 1), ("jumped", 1), ("played", 1), ("table", 2),
    ("wanted", 2), ("horses", 2), ("simple", 2), ("because", 2), ("beautiful", 3),
    ("university", 5), ("characteristically", 7), ("well-known", 2), ("don't", 1),
])
def test_syllable_heuristic(word: str, syllables: int) -> None:
    assert count_syllables(word) == syllables


def test_grade_follows_the_flesch_kincaid_formula() -> None:
    stats = text_stats("The cat sat on the mat.")
    assert (len(stats.sentences), stats.words, stats.syllable_count) == (1, 6, 6)
    assert stats.grade == pytest.approx(0.39 * 6 + 11.8 * 1 - 15.59)


def test_easy_text_grades_low_and_hard_text_high() -> None:
    assert grade(EASY) < 2 < grade(MEDIUM) < 12
    assert grade(HARD) > 18


def test_grade_rises_with_sentence_and_word_length() -> None:
    short = "We ran. We sat. We ate. We slept."
    longer = "We ran and we sat and we ate and we slept."
    plain = "We used the old tool to fix the car."
    fancy = "We utilized the antiquated instrument to rehabilitate the automobile."
    assert grade(short) < grade(longer)
    assert grade(plain) < grade(fancy)


def test_score_is_one_up_to_the_target_then_halves_every_four_grades() -> None:
    g = grade(HARD)
    at, over4, over8 = (judge(readability(g - d), HARD) for d in (0, 4, 8))
    assert (at.score, at.passed) == (1.0, True) and at.raw == pytest.approx(g)
    assert at.feedback == ""
    assert over4.score == pytest.approx(0.5) and over4.passed is False
    assert over8.score == pytest.approx(0.25)
    scores = [judge(readability(8), t).score for t in (EASY, MEDIUM, HARD)]
    assert scores == sorted(scores, reverse=True) and scores[0] == 1.0 > scores[-1]


def test_feedback_names_grade_target_long_sentences_and_long_words() -> None:
    verdict = judge(readability(8), HARD)
    assert verdict.passed is False
    assert f"Reading grade {verdict.raw:.1f} is above the target 8" in verdict.feedback
    assert "Split this 24-word sentence" in verdict.feedback
    assert "'epistemological' (7 syllables)" in verdict.feedback
    assert verdict.evidence == {
        "grade": pytest.approx(verdict.raw, abs=0.01), "target": 8.0, "sentences": 1,
        "words": 24, "syllables": verdict.evidence["syllables"],
        "words_per_sentence": 24.0, "syllables_per_word": verdict.evidence["syllables_per_word"]}
    assert verdict.evidence["syllables"] > 75


def test_empty_text_scores_zero_with_feedback() -> None:
    for text in ("", "   ", "42 ... !"):
        verdict = judge(readability(), text)
        assert (verdict.score, verdict.passed, verdict.raw) == (0.0, False, None)
        assert "no words" in verdict.feedback


@pytest.mark.parametrize(("arg", "target"), [(None, 8.0), ("", 8.0), ("6", 6.0),
                                             (" 10.5 ", 10.5)])
def test_readability_argument(arg: str | None, target: float) -> None:
    assert judge(readability_critic(arg), EASY).evidence["target"] == target


@pytest.mark.parametrize("arg", ["abc", "8th", "0", "-3", "nan", "inf"])
def test_bad_readability_argument_is_a_config_error(arg: str) -> None:
    with pytest.raises(ConfigError, match=r"number > 0 \(e.g. readability:8\)"):
        readability_critic(arg)


# -- banned -------------------------------------------------------------------------------

def test_banned_matches_whole_phrases_case_insensitively() -> None:
    gate = BannedPhrases(["as an AI", "delve"])
    assert gate.gate and gate.deterministic
    clean = judge(gate, "We delved into it; the answer is as and AI.")
    assert (clean.score, clean.passed, clean.feedback) == (1.0, True, "")
    hit = judge(gate, "Well, AS AN\nai model I must say that the topic is deep. "
                      "As an AI, I delve; I DELVE.")
    assert (hit.score, hit.passed) == (0.0, False)
    assert hit.evidence == {"found": {"as an AI": 2, "delve": 2}, "checked": 2}
    assert ('- "as an AI" (2 times): "Well, AS AN ai model I must say that the…"'
            in hit.feedback)
    assert '- "delve" (2 times): "…topic is deep. As an AI, I delve; I DELVE."' in hit.feedback


def test_banned_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "banned.txt"
    path.write_text("# house style\n\nby the way, honestly\nleverage\n", encoding="utf-8")
    gate = banned_phrases_critic(f"@{path}")
    assert gate.phrases == ["by the way, honestly", "leverage"]
    verdict = judge(gate, "By the way, honestly: we leverage it.")
    assert verdict.evidence["found"] == {"by the way, honestly": 1, "leverage": 1}


@pytest.mark.parametrize("arg", [None, "", " , ,", "@"])
def test_banned_without_phrases_says_how_to_write_them(arg: str | None) -> None:
    with pytest.raises(ConfigError, match=r"banned:@FILE"):
        banned_phrases_critic(arg)


def test_banned_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read banned-phrases file .*missing\.txt"):
        banned_phrases_critic(f"@{tmp_path / 'missing.txt'}")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"empty\.txt' has no phrases"):
        banned_phrases_critic(f"@{empty}")


# -- the contract, the plugin mechanism, the loop -------------------------------------------

@pytest.mark.parametrize("make", [lambda: readability_critic(None),
                                  lambda: readability_critic("6"),
                                  lambda: banned_phrases_critic("as an AI,delve")])
def test_critics_pass_the_conformance_check(make: Callable[[], redline.Critic]) -> None:
    report = check_critic(make(), SAMPLES)
    assert report.ok and len(report.critiques) == len(SAMPLES)


def test_built_through_the_installed_entry_points(tmp_path: Path) -> None:
    plugins, clashes = discover()
    for name in ("readability", "banned"):
        assert plugins[name].package == "redline-readability" and name not in clashes
    made = build_critic("readability:6")
    assert made.name == "readability" and made.deterministic
    assert judge(made, EASY).evidence["target"] == 6.0
    # Everything after the first colon is the argument, colons and spaces included.
    gate = build_critic("banned:note: this,as an AI")
    assert isinstance(gate, BannedPhrases) and gate.phrases == ["note: this", "as an AI"]
    with pytest.raises(ConfigError, match="readability:8"):
        build_critic("readability:easy")
    with pytest.raises(ConfigError, match="needs the phrases to ban"):
        build_critic("banned")


def test_cli_lists_and_shows_the_critics() -> None:
    runner = CliRunner()
    listing = runner.invoke(cli, ["critics", "list"])
    assert listing.exit_code == 0
    for text in ("readability", "Flesch-Kincaid reading grade at or below a target.",
                 "banned", "A gate that fails on any banned phrase.", "redline-readability"):
        assert text in listing.output
    shown = runner.invoke(cli, ["critics", "show", "readability"])
    assert shown.exit_code == 0
    assert "redline_readability:readability_critic" in shown.output
    assert "--critic readability:6" in shown.output


def test_loop_revises_hard_text_until_it_reads_easily() -> None:
    model = ScriptedChat([EASY])
    result = redline.refine(
        Task(prompt="Explain the idea simply.", draft=HARD), model=model,
        critics=[readability(8), BannedPhrases(["as an AI"])], threshold=0.9)
    assert result.stop_reason is StopReason.threshold
    assert [s.candidate.text for r in result.rounds for s in r.scored] == [HARD, EASY]
    assert result.best is not None and result.best.score == 1.0 and result.text == EASY
    # The reviser was told what to simplify.
    assert "Split this 24-word sentence" in model.calls[0]["messages"][-1]["content"]
