"""The BC baseline on the MPO agent's data pipeline and actors.

Replay tables, adder, dataset and actors are the MPO builder's, so a program built
with either builder collects the same data and serves the same policy network; only
the learner differs.
"""

from typing import Iterator, Optional, Sequence

import reverb
from acme import specs
from acme.utils import counting
from acme.utils import loggers

from agents.bc.config import BCConfig
from agents.bc.learner import BCLearner
from agents.mpo.builder import MPOBuilder
from agents.mpo.config import MPOConfig


class BCBuilder(MPOBuilder):
  """MPOBuilder whose learner is a BCLearner with the MPO config's policy settings."""

  def __init__(self, config: MPOConfig, spec: specs.EnvironmentSpec,
               obs_group_sizes: Optional[Sequence[int]] = None):
    super().__init__(config, spec, obs_group_sizes)
    self.bc_config = BCConfig.from_mpo_config(config)

  def make_learner(self, iterator: Iterator[reverb.ReplaySample], seed: int = 0,
                   counter: Optional[counting.Counter] = None,
                   logger: Optional[loggers.Logger] = None) -> BCLearner:
    return BCLearner(self.make_networks(), self.bc_config, self.obs_dim, iterator, seed=seed,
                     counter=counter, logger=logger)
