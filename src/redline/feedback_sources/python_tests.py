"""Running Python tests against a candidate's code in the sandbox, with verdicts decided
apart from the candidate's process (see `redline.feedback_sources._pytests`).

What the test critics use, public for plugin authors writing their own test critics.
"""

from redline.feedback_sources._pytests import (
    TestOutcome,
    TestReport,
    TestSuite,
    feedback,
    run_tests,
)

__all__ = ["TestOutcome", "TestReport", "TestSuite", "feedback", "run_tests"]
