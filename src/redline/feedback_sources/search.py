"""Search sources: where the fact-check critic looks for evidence.

A `SearchSource` answers ``await source.search(query, k)`` with up to `k` `Hit` objects,
best first. Two ship:

- `BM25Index`: BM25 (``bm25s``, the ``tools`` extra) over local text and Markdown files,
  folders of them, or JSONL rows, split into passages so that hits are snippets; it is
  saved to and loaded from a directory.
- `HttpSearch`: a JSON search API over HTTP, SearxNG's ``format=json`` by default and
  any other through a `FieldMap`, with a timeout, retries for transient failures, and
  `FeedbackSourceError` naming the URL when the service cannot answer.
"""

from redline.feedback_sources._bm25 import BM25Index
from redline.feedback_sources._hits import Document, Hit, SearchSource
from redline.feedback_sources._http_search import FieldMap, HttpSearch

__all__ = ["BM25Index", "Document", "FieldMap", "Hit", "HttpSearch", "SearchSource"]
