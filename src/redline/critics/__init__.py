"""Everything that scores a candidate and says why.

`Critic` is the contract, `@critic` turns a function into one, `Panel` combines several,
and `LLMJudge` is the self-critique critic.
"""

from redline.critics.base import Critic, FunctionCritic, critic, run_critic
from redline.critics.judge import LLMJudge
from redline.critics.panel import Panel

__all__ = ["Critic", "FunctionCritic", "LLMJudge", "Panel", "critic", "run_critic"]
