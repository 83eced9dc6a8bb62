"""Behaviour-cloning learner configuration."""

import dataclasses
import math
from typing import Tuple

from agents.mpo.config import MPOConfig
from agents.common.errors import ConfigError


@dataclasses.dataclass
class BCConfig:
  """Hyper-parameters of the behaviour-cloning learner.

  Batch size and replay live in the data pipeline (the MPO builder's), not here.
  """
  policy_layer_sizes: Tuple[int, ...] = (256, 256, 256)
  learning_rate: float = 1e-4
  max_grad_norm: float = 40.0

  def __post_init__(self):
    self.policy_layer_sizes = tuple(self.policy_layer_sizes)
    self.validate()

  @classmethod
  def from_mpo_config(cls, config: MPOConfig) -> 'BCConfig':
    """The BC policy matching an MPO config's policy network and optimiser."""
    return cls(policy_layer_sizes=config.policy_layer_sizes,
               learning_rate=config.policy_learning_rate, max_grad_norm=config.max_grad_norm)

  def validate(self) -> None:
    """Raises ConfigError naming the first bad field and what is allowed."""

    def need(cond: bool, field: str, rule: str):
      if not cond:
        raise ConfigError(f'BCConfig.{field}={getattr(self, field)!r} is invalid: must be {rule}')

    def positive(x) -> bool:
      return (isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
              and x > 0)

    sizes = self.policy_layer_sizes
    need(len(sizes) > 0 and all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                for s in sizes),
         'policy_layer_sizes', 'a non-empty sequence of positive ints')
    need(positive(self.learning_rate), 'learning_rate', 'a finite number > 0')
    need(positive(self.max_grad_norm), 'max_grad_norm', 'a finite number > 0')
