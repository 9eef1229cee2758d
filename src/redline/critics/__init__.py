"""Everything that scores a candidate and says why.

`Critic` is the contract, `@critic` turns a function into one, `Panel` combines several,
and `LLMJudge` is the self-critique critic. The tool and reward-model critics load on
first use (their modules bring httpx, bm25s or torch along when they are built).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from redline.critics.base import Critic, FunctionCritic, critic, run_critic
from redline.critics.judge import LLMJudge
from redline.critics.panel import Panel

if TYPE_CHECKING:
    from redline.critics.code_tests import DoctestCritic, PythonTestsCritic
    from redline.critics.command import CommandCritic
    from redline.critics.factcheck import FactCheckCritic
    from redline.critics.generated_tests import GeneratedTestsCritic
    from redline.critics.human import HumanCritic
    from redline.critics.interpreter import InterpreterCritic
    from redline.critics.remote_reward import RemoteRewardCritic
    from redline.critics.reward_model import (
        Calibration,
        RewardCritic,
        RewardModelCritic,
        calibrate,
    )
    from redline.critics.schema import SchemaCritic
    from redline.critics.task_tests import TaskTestsCritic

__all__ = [
    "Calibration",
    "CommandCritic",
    "Critic",
    "DoctestCritic",
    "FactCheckCritic",
    "FunctionCritic",
    "GeneratedTestsCritic",
    "HumanCritic",
    "InterpreterCritic",
    "LLMJudge",
    "Panel",
    "PythonTestsCritic",
    "RemoteRewardCritic",
    "RewardCritic",
    "RewardModelCritic",
    "SchemaCritic",
    "TaskTestsCritic",
    "calibrate",
    "critic",
    "run_critic",
]

_LAZY = {
    "PythonTestsCritic": "code_tests",
    "DoctestCritic": "code_tests",
    "CommandCritic": "command",
    "FactCheckCritic": "factcheck",
    "GeneratedTestsCritic": "generated_tests",
    "HumanCritic": "human",
    "InterpreterCritic": "interpreter",
    "RemoteRewardCritic": "remote_reward",
    "RewardCritic": "reward_model",
    "RewardModelCritic": "reward_model",
    "Calibration": "reward_model",
    "calibrate": "reward_model",
    "SchemaCritic": "schema",
    "TaskTestsCritic": "task_tests",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"redline.critics.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'redline.critics' has no attribute {name!r}")
