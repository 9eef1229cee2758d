"""Every exception redline raises, in one tree.

```
RedlineError
├── ConfigError                a bad argument, environment variable or missing extra
│   └── MissingDependencyError an optional extra is not installed (says which)
├── LLMError                   a chat model call failed
│   ├── LLMUnavailableError    transient failures outlasted the retries (attempts, status)
│   └── LLMResponseError       the model answered with something unusable
├── CriticError                a critic broke (not: the critic disagreed — that is a Critique)
├── HumanInputNeeded           the run paused for a person's verdict (resume= continues it)
├── FeedbackSourceError        an external tool (compiler, sandbox, search) could not run
└── BudgetExceeded             a call would pass a budget limit (the loop stops on it)
```

"The critic disagreed" is data (`Critique(passed=False, feedback=...)`); "the critic
broke" is one of these exceptions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redline.types import BudgetLimit, Task

__all__ = [
    "BudgetExceeded",
    "ConfigError",
    "CriticError",
    "FeedbackSourceError",
    "HumanInputNeeded",
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


class HumanInputNeeded(RedlineError):
    """The run paused: a `HumanCritic` waits for a person's mark (graph mode).

    The run is kept by its checkpointer; ``arefine(task, config, checkpointer=same,
    resume=answer)`` continues it (see `redline.critics.human` for the answer).

    Attributes:
        task: the paused run's task (its id is the run's thread id).
        payload: what to show the person: the interrupt's value (for a `HumanCritic`,
            the critic, the task's prompt, the candidate's text and id, the scale).
        interrupt_id: LangGraph's id of the pause.
    """

    def __init__(self, message: str, *, task: Task, payload: Any,
                 interrupt_id: str | None = None) -> None:
        self.task = task
        self.payload = payload
        self.interrupt_id = interrupt_id
        super().__init__(message)

    @property
    def thread_id(self) -> str:
        """The run's LangGraph thread id (the task's id)."""
        return self.task.id


class FeedbackSourceError(RedlineError):
    """An external feedback source (compiler, sandbox, search service) could not run."""


class BudgetExceeded(RedlineError):
    """A call would pass a budget limit; `limit` names it (e.g. ``"max_tokens"``)."""

    def __init__(self, limit: BudgetLimit, message: str) -> None:
        self.limit = limit
        super().__init__(message)
