"""The values every search source returns, and the protocol they implement."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

__all__ = ["Document", "Hit", "SearchSource"]


class Document(BaseModel):
    """A passage that a search can return."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    id: str
    """Identifies the passage: ``path#3`` for the third passage of a file, a JSONL row's
    id, a result's URL."""
    title: str = ""
    """The document's title (a file's first heading or name, a result's title)."""
    text: str
    """The passage's text (a web result's snippet)."""
    url: str | None = None
    """Where it can be read, when it has an address."""


class Hit(Document):
    """A `Document` returned for a query, with its relevance."""

    score: float | None = None
    """The source's relevance score (BM25 score; None when the API gives none)."""


@runtime_checkable
class SearchSource(Protocol):
    """Anything that answers a text query with hits, best first."""

    async def search(self, query: str, k: int = 5) -> list[Hit]:
        """Up to `k` hits for `query`, best first (fewer, or none, when nothing matches).

        Raises:
            FeedbackSourceError: the source could not answer (a service down, ...).
        """
        ...
