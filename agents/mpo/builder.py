"""The MPO algorithm as acme-style building blocks: tables, adder, dataset, learner, actor.

The builder knows nothing about processes; launch/ wires these pieces into a
Launchpad program, and tests use them in one process.
"""

from typing import Iterator, List, Optional, Sequence

import numpy as np
import reverb
from acme import adders
from acme import core
from acme import specs
from acme.adders import reverb as reverb_adders
from acme.utils import counting
from acme.utils import loggers

from agents.mpo.actor import MPOActor
from agents.mpo.config import MPOConfig
from agents.mpo.learner import MPOLearner
from agents.variable_client import VariableClient
from networks.mpo import MPONetworks, make_mpo_networks

REPLAY_TABLE = 'priority_table'
# Experience from actors outside the program (robots attached with launch.attach).
# Its rate limiter never holds an insert: a robot's data must never wait. (Its
# name sorts after REPLAY_TABLE, so listings by name, such as the replay node's
# restored table sizes, still start with the main table.)
EXTERNAL_TABLE = 'robot_table'
# Unconfirmed items an actor's writer may hold before `add` blocks. An item waits
# for the chunk holding its last step, and chunks span up to n_step + 1 steps: at
# acme's 5 nearly every flush forced a premature chunk and a wait for the server
# (about 70 us per step here). A rate-limited actor runs at most this many items
# ahead of the limiter; what the table holds is the same.
ADDER_MAX_IN_FLIGHT_ITEMS = 32


def check_spec(spec: specs.EnvironmentSpec) -> None:
  """The MLP learners need one flat float observation and a bounded action vector."""
  obs, act = spec.observations, spec.actions
  if not hasattr(obs, 'shape') or len(obs.shape) != 1:
    raise ValueError(f'expected one flat observation vector, got {obs}; '
                     'wrap the environment with acme.wrappers.ConcatObservationWrapper')
  if not isinstance(act, specs.BoundedArray) or len(act.shape) != 1:
    raise ValueError(f'expected a bounded action vector, got {act}')


class MPOBuilder:
  """Builds every piece of an MPO agent for one environment spec."""

  def __init__(self, config: MPOConfig, spec: specs.EnvironmentSpec,
               obs_group_sizes: Optional[Sequence[int]] = None):
    """`obs_group_sizes`: how the flat observation splits into the environment's
    observation groups (the Perceiver's tokens); one group when not given."""
    check_spec(spec)
    self.config = config
    self.spec = spec
    self.obs_dim = int(spec.observations.shape[0])
    self.action_dim = int(spec.actions.shape[0])
    self.obs_group_sizes = tuple(obs_group_sizes or (self.obs_dim,))
    if sum(self.obs_group_sizes) != self.obs_dim:
      raise ValueError(f'observation groups {self.obs_group_sizes} do not add up to the '
                       f'observation size {self.obs_dim}')

  def make_networks(self) -> MPONetworks:
    c = self.config
    if c.network == 'perceiver':
      from networks.perceiver import make_perceiver_networks
      return make_perceiver_networks(
          self.action_dim, self.obs_group_sizes, num_atoms=c.num_atoms,
          latent_dim=c.perceiver_latent_dim, num_latents=c.perceiver_num_latents,
          num_heads=c.perceiver_num_heads, num_self_attend_blocks=c.perceiver_blocks)
    return make_mpo_networks(self.action_dim, c.policy_layer_sizes, c.critic_layer_sizes,
                             c.num_atoms)

  def make_rate_limiter(self) -> reverb.rate_limiters.RateLimiter:
    c = self.config
    if c.samples_per_insert is None:
      return reverb.rate_limiters.MinSize(c.min_replay_size)
    # Learner and actors may drift from the target ratio by this many samples.
    error_buffer = max(c.min_replay_size * c.samples_per_insert_tolerance * c.samples_per_insert,
                       2.0 * c.batch_size)
    return reverb.rate_limiters.SampleToInsertRatio(
        samples_per_insert=c.samples_per_insert, min_size_to_sample=c.min_replay_size,
        error_buffer=error_buffer)

  def make_replay_tables(self) -> List[reverb.Table]:
    signature = reverb_adders.NStepTransitionAdder.signature(self.spec)
    return [
        reverb.Table(
            name=REPLAY_TABLE, sampler=reverb.selectors.Uniform(),
            remover=reverb.selectors.Fifo(), max_size=self.config.max_replay_size,
            rate_limiter=self.make_rate_limiter(), signature=signature),
        # MinSize(1) only gates sampling; inserts are never blocked.
        reverb.Table(
            name=EXTERNAL_TABLE, sampler=reverb.selectors.Uniform(),
            remover=reverb.selectors.Fifo(), max_size=self.config.max_replay_size,
            rate_limiter=reverb.rate_limiters.MinSize(1), signature=signature),
    ]

  def make_adder(self, client: reverb.Client) -> adders.Adder:
    """The actors' adder: acme's n-step transitions into REPLAY_TABLE."""
    return reverb_adders.NStepTransitionAdder(
        client=client, n_step=self.config.n_step, discount=self.config.discount,
        max_in_flight_items=ADDER_MAX_IN_FLIGHT_ITEMS)

  def make_external_adder(self, client: reverb.Client) -> adders.Adder:
    """The n-step adder of attached (external) actors: same items, into EXTERNAL_TABLE."""
    return reverb_adders.NStepTransitionAdder(
        client=client, n_step=self.config.n_step, discount=self.config.discount,
        priority_fns={EXTERNAL_TABLE: None})

  def make_dataset_iterator(self, server_address: str, rate_limiter_timeout_ms: int = -1,
                            batch_size: Optional[int] = None,
                            table: str = REPLAY_TABLE) -> Iterator[reverb.ReplaySample]:
    """Batches of transitions as numpy.

    With a timeout, the iterator ends (StopIteration) when the rate limiter
    blocks that long, so a learner can notice shutdown instead of hanging.
    """
    import tensorflow as tf  # Imported late: actors and tests that never sample skip it.
    dataset = reverb.TrajectoryDataset.from_table_signature(
        server_address=server_address, table=table,
        max_in_flight_samples_per_worker=2 * self.config.batch_size,
        rate_limiter_timeout_ms=rate_limiter_timeout_ms)
    dataset = dataset.batch(batch_size or self.config.batch_size, drop_remainder=True)
    return dataset.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()

  def make_learner(self, iterator: Iterator[reverb.ReplaySample], seed: int = 0,
                   counter: Optional[counting.Counter] = None,
                   logger: Optional[loggers.Logger] = None) -> MPOLearner:
    return MPOLearner(self.make_networks(), self.config, self.obs_dim, iterator, seed=seed,
                      counter=counter, logger=logger)

  def make_actor(self, variable_source: core.VariableSource, adder: Optional[adders.Adder],
                 seed: int = 0, deterministic: bool = False,
                 version_name: Optional[str] = None) -> MPOActor:
    """A stochastic actor refreshes every `variable_update_period` steps.

    A deterministic (evaluation) actor never refreshes on its own: its owner
    calls `update(wait=True)` once before each evaluation, so one evaluation
    uses one policy and costs one fetch, not one per step.
    """
    update_period = 2**62 if deterministic else self.config.variable_update_period
    client = VariableClient(variable_source, ['policy'], update_period=update_period,
                            version_name=version_name)
    return MPOActor(self.make_networks(), client, adder, seed=seed, deterministic=deterministic)
