"""The external tools critics consult: search (and, beside it, sandboxes and commands).

Heavy dependencies (``bm25s``, ``jsonschema``) load when a source is built, not here.
"""

from redline.feedback_sources.commands import CommandResult, run_command
from redline.feedback_sources.sandbox import Isolation, Sandbox, SandboxResult
from redline.feedback_sources.search import (
    BM25Index,
    Document,
    FieldMap,
    Hit,
    HttpSearch,
    SearchSource,
)

__all__ = [
    "BM25Index",
    "Document",
    "FieldMap",
    "Hit",
    "HttpSearch",
    "SearchSource",
    # Python sandbox and commands
    "CommandResult",
    "Isolation",
    "Sandbox",
    "SandboxResult",
    "run_command",
]
