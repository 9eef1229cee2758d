"""The external tools critics consult: search, reward models, sandboxes and commands.

Heavy dependencies (``bm25s``, ``jsonschema``, torch and transformers) load when a
source is built or first used, not here.
"""

from redline.feedback_sources.commands import CommandResult, run_command
from redline.feedback_sources.rewards import (
    Reward,
    RewardSource,
    ServedRewardModel,
    TransformersRewardModel,
)
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
    # reward models
    "Reward",
    "RewardSource",
    "ServedRewardModel",
    "TransformersRewardModel",
    # Python sandbox and commands
    "CommandResult",
    "Isolation",
    "Sandbox",
    "SandboxResult",
    "run_command",
]
