"""Every exception redline raises, in one tree.

```
RedlineError
├── ConfigError                a bad argument, environment variable or missing extra
│   └── MissingDependencyError an optional extra is not installed (says which)
├── LLMError                   a chat model call failed
│   ├── LLMUnavailableError    transient failures outlasted the retries (attempts, status)
│   └── LLMResponseError       the model answered with something unusable
├── CriticError                a critic broke (not: the critic disagreed — that is a Critique)
├── FeedbackSourceError        an external tool (compiler, sandbox, search) could not run
└── BudgetExceeded             a call would pass a budget limit (the loop stops on it)
```

"The critic disagreed" is data (`Critique(passed=False, feedback=...)`); "the critic
broke" is one of these exceptions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redline.types import BudgetLimit

__all__ = [
    "BudgetExceeded",
    "ConfigError",
    "CriticError",
    "FeedbackSourceError",
    "LLMError",
    "LLMResponseError",
    "LLMUnavailableError",
    "MissingDependencyError",
    "RedlineError",
]


class RedlineError(Exception):
    """Base class of every error redline raises."""


class ConfigError(RedlineError, ValueError):
    """A bad argument, environment variable or configuration value."""


class MissingDependencyError(ConfigError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, what: str, extra: str) -> None:
        self.extra = extra
        super().__init__(f"{what} needs the {extra!r} extra: pip install \"redline[{extra}]\"")


class LLMError(RedlineError):
    """A chat model call failed; `status` is the HTTP status when the server sent one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class LLMUnavailableError(LLMError):
    """Transient failures (429, 5xx, timeouts, connection errors) outlasted the retries."""

    def __init__(self, message: str, *, attempts: int, last_status: int | None) -> None:
        self.attempts = attempts
        self.last_status = last_status
        super().__init__(message, status=last_status)


class LLMResponseError(LLMError):
    """The model answered, but with something that cannot be used."""


class CriticError(RedlineError):
    """A critic broke: it could not produce a verdict at all."""

    def __init__(self, message: str, *, critic: str | None = None) -> None:
        self.critic = critic
        super().__init__(message)


class FeedbackSourceError(RedlineError):
    """An external feedback source (compiler, sandbox, search service) could not run."""


class BudgetExceeded(RedlineError):
    """A call would pass a budget limit; `limit` names it (e.g. ``"max_tokens"``)."""

    def __init__(self, limit: BudgetLimit, message: str) -> None:
        self.limit = limit
        super().__init__(message)
