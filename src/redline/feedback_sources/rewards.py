"""Reward sources: where the reward-model critic gets its raw rewards.

A `RewardSource` answers ``await source.rewards([(prompt, answer), ...])`` with one raw
reward (a float, higher is better, any scale) per pair. Two ship:

- `TransformersRewardModel`: a Hugging Face sequence classifier run in this process
  (the ``rm`` extra), GPU and bfloat16 when present, chat template or text pair,
  truncation that keeps the answer's end, concurrent calls coalesced into batched
  forward passes in a worker thread.
- `ServedRewardModel`: a reward model served by vLLM (``/classify``, ``/pooling``) or
  text-embeddings-inference (``/predict``), concurrent calls coalesced into batched
  requests, transient failures retried, `FeedbackSourceError` naming the URL when the
  server cannot answer.

`redline.critics.RewardCritic` turns any source into a critic and maps its raw
rewards to [0, 1] with a `redline.critics.Calibration`.
"""

from redline.feedback_sources._rewards import Reward, RewardSource
from redline.feedback_sources._rm_local import TransformersRewardModel
from redline.feedback_sources._rm_served import ServedRewardModel

__all__ = ["Reward", "RewardSource", "ServedRewardModel", "TransformersRewardModel"]
