"""Final answers stated in candidates, their keys, their comparison (`answers`)."""

from __future__ import annotations

import doctest

import pytest

import redline.feedback_sources.answers as answers
from redline.feedback_sources.answers import answer_key, final_answer, same_answer

GSM8K = """Natalia sold 48/2 = <<48/2=24>>24 clips in May.
Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.
#### 72"""

PROSE = """Janet's ducks lay 16 eggs per day. She eats 3 for breakfast and bakes muffins
with 4, so she sells 16 - 3 - 4 = 9 eggs. At $2 per egg she makes 9 * 2 = $18 every day.
The answer is $18."""

BOXED = r"""We need $\frac{3}{6}$ of the pie, which simplifies.
Some other braces {x} here.
Therefore the probability is $\boxed{\frac{1}{2}}$."""


@pytest.mark.parametrize(("text", "expected"), [
    (GSM8K, "72"),
    (PROSE, "$18"),
    (BOXED, r"\frac{1}{2}"),
    (r"First \boxed{3}, then corrected: \boxed{4}", "4"),
    (r"\boxed{\text{(B)}}", r"\text{(B)}"),
    ("Answer: 1,250", "1,250"),
    ("**Final Answer:** 42", "42"),
    ("The answer is 42. Let me double-check: 6 * 7 = 42, and 40 + 2 = 42.", "42"),
    ("The answer is 3.5 apples.", "3.5"),
    ("the answer is 18 dollars per day", "18"),
    ("I first thought the answer is 12, but I missed one.\nSo the answer is 13.", "13"),
    ("The answer is Paris.", "Paris"),
    ("The answer is:\n-7", "-7"),
    ("She has 5 apples and gives away 2, leaving 3", "3"),
    ("The temperature dropped to -4 overnight.", "-4"),
    ("x-3 is the factor with value 10", "10"),
    ("Paris", "Paris"),
    ("**Paris**.", "Paris"),
    ("", None),
    ("   \n ", None),
    ("No number anywhere here.\nAnd a second line of prose without one.", None),
])
def test_final_answer(text: str, expected: str | None) -> None:
    assert final_answer(text) == expected


def test_a_cut_off_box_falls_back_to_the_other_rules() -> None:
    assert final_answer(r"so 2 + 2 = 4 and the result is \boxed{4") == "4"


@pytest.mark.parametrize(("answer", "expected"), [
    ("1,000", "1000"),
    ("$1,000.00", "1000"),
    (" **$18** ", "18"),
    ("3.0", "3"),
    ("0.50", "0.5"),
    ("1/2", "0.5"),
    (r"\frac{1}{2}", "0.5"),
    (r"\dfrac{3}{4}", "0.75"),
    ("-4.", "-4"),
    ("50%", "50"),
    (r"50\%", "50"),
    ("£7", "7"),
    ("1e3", "1000"),
    ("  Paris. ", "paris"),
    ("New   York\nCity", "new york city"),
    (r"\text{Paris}", "paris"),
    ("3.0 apples", "3 apples"),
    ("`x = 5`", "x = 5"),
    ("1/0", "1/0"),
])
def test_answer_key(answer: str, expected: str) -> None:
    assert answer_key(answer) == expected


@pytest.mark.parametrize(("a", "b", "same"), [
    ("18", "$18.00", True),
    ("18", "18.000000000000004", True),  # a program's float arithmetic
    ("1/3", "0.3333333333333333", True),
    ("0.33", "1/3", False),
    ("72", "73", False),
    ("1,000", "1000.0", True),
    ("0", "0.0", True),
    ("0", "1e-12", True),
    ("0", "0.001", False),
    ("Paris", "paris.", True),
    ("Paris", "London", False),
    ("5", "five", False),
])
def test_same_answer(a: str, b: str, same: bool) -> None:
    assert same_answer(a, b) is same
    assert same_answer(b, a) is same


def test_same_answer_tolerance_is_a_parameter() -> None:
    assert not same_answer("100", "100.5")
    assert same_answer("100", "100.5", rel_tol=0.01)


def test_answers_stated_differently_vote_together() -> None:
    drafts = [GSM8K.replace("72", "72.0"), "So in total 72 clips were sold.",
              "The answer is 72 clips.", r"$\boxed{72}$", "The answer is 71."]
    keys = [answer_key(final_answer(d) or "") for d in drafts]
    assert keys == ["72", "72", "72", "72", "71"]


def test_the_docstring_examples_hold() -> None:
    result = doctest.testmod(answers)
    assert result.attempted >= 8 and result.failed == 0
