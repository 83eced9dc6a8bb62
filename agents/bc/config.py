"""Behaviour-cloning learner configuration."""

import dataclasses
from typing import Any, Dict, Tuple

from agents.common.config import AgentConfig, Need, finite, positive_ints, tuple_or_none
from agents.common.encoder_config import EncoderConfig
from agents.common.learning_rate import LearningRateDecay
from agents.common.replay_config import LEGACY_REPLAY_KEYS, ReplayConfig


@dataclasses.dataclass
class BCConfig(AgentConfig):
  """Hyper-parameters of the behaviour-cloning learner, and its data pipeline."""

  policy_layer_sizes: Tuple[int, ...] = (256, 256, 256)
  learning_rate: float = 1e-4
  max_grad_norm: float = 40.0
  # Warm-up and cosine decay of learning_rate; default constant (agents.common.learning_rate).
  lr_decay: LearningRateDecay = dataclasses.field(default_factory=LearningRateDecay)
  # Pixel observations (--pixels) go through this encoder, trained by the BC loss.
  encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
  # Batches, replay and actors' refresh period, as for every agent.
  replay: ReplayConfig = dataclasses.field(default_factory=ReplayConfig)

  legacy_keys = {**LEGACY_REPLAY_KEYS, 'policy_learning_rate': 'learning_rate'}

  def __post_init__(self):
    self.policy_layer_sizes = tuple_or_none(self.policy_layer_sizes)
    super().__post_init__()

  @property
  def takes_pixels(self) -> bool:
    return True  # Through its own convolutional encoder.

  @classmethod
  def migrate_legacy(cls, values: Dict[str, Any]) -> Dict[str, Any]:
    """Before BC had its own config, a BC run stored a whole (flat) MPOConfig, recognised by
    its policy_learning_rate: BC read only the policy network, its optimiser and the data
    pipeline from it, so the MPO-only fields are dropped."""
    if 'policy_learning_rate' in values and 'learning_rate' not in values:
      from agents.mpo.config import MPOConfig  # pylint: disable=g-import-not-at-top

      used = set(cls.legacy_keys) | {f.name for f in dataclasses.fields(cls)}
      mpo_only = {f.name for f in dataclasses.fields(MPOConfig)} | set(MPOConfig.legacy_keys)
      values = {k: v for k, v in values.items() if k in used or k not in mpo_only}
    return super().migrate_legacy(values)

  def check(self, need: Need) -> None:
    need(
      positive_ints(self.policy_layer_sizes),
      'policy_layer_sizes',
      'a non-empty sequence of positive ints',
    )
    need(
      finite(self.learning_rate) and self.learning_rate > 0, 'learning_rate', 'a finite number > 0'
    )
    need(
      finite(self.max_grad_norm) and self.max_grad_norm > 0, 'max_grad_norm', 'a finite number > 0'
    )
