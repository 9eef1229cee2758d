"""What a critic keeps per task (generated tests, a verifying program): a bounded map."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["PerTask"]

S = TypeVar("S")


class PerTask(Generic[S]):
    """Each task's state, made on first use, the least recently used dropped first.

    Args:
        make: makes a new task's state.
        size: how many tasks are kept.
    """

    def __init__(self, make: Callable[[], S], size: int) -> None:
        self.make = make
        self.size = size
        self._states: OrderedDict[str, S] = OrderedDict()

    def get(self, task_id: str) -> S:
        """The state of task `task_id` (made now if it has none)."""
        state = self._states.get(task_id)
        if state is None:
            state = self._states[task_id] = self.make()
            while len(self._states) > self.size:
                self._states.popitem(last=False)
        self._states.move_to_end(task_id)
        return state
