"""Shared test stand-ins: a batch feed, tiny configs, episode builders.

Process helpers for end-to-end tests live in tests/e2e_util.py.
"""

import pathlib
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import reverb
from acme import types

from launch.config import ExperimentConfig
from launch.store.episodes import Episode

# ----------------------------------------------------------------------------
# Tiny configs: these check the system, not learning.

# Agent settings for programs run in one test process (nodes as plain objects).
TINY_AGENT: Dict[str, Any] = dict(
  policy_layer_sizes=(16, 16),
  critic_layer_sizes=(16, 16),
  num_samples=4,
  replay=dict(batch_size=16, min_replay_size=100, samples_per_insert=None),
)

# Command-line flags for programs launched as a user would (tests/e2e_util.start_cli).
TINY = [
  '--agent',
  'policy_layer_sizes=[32,32]',
  '--agent',
  'critic_layer_sizes=[32,32]',
  '--agent',
  'replay.batch_size=32',
  '--agent',
  'replay.min_replay_size=200',
  '--agent',
  'num_samples=4',
  '--eval_every_seconds',
  '8',
  '--eval_episodes',
  '1',
  # Rendering a GIF costs seconds of CPU per evaluation; the shared budget run makes them.
  '--no_eval_gifs',
]
# TINY with an evaluation GIF each evaluation, as a user's run has.
TINY_WITH_GIFS = [flag for flag in TINY if flag != '--no_eval_gifs']


def tiny_config(run_dir: Union[str, pathlib.Path], **overrides) -> ExperimentConfig:
  """An ExperimentConfig with TINY_AGENT, one actor, short evaluations and timeouts."""
  values = dict(
    run_dir=str(run_dir),
    max_actor_steps=2000,
    eval_every_seconds=1.0,
    eval_episodes=1,
    progress_every_seconds=1.0,
    num_actors=1,
    learner_sample_timeout_s=0.5,
    agent=TINY_AGENT,
  )
  values.update(overrides)
  return ExperimentConfig.from_dict(values)


# ----------------------------------------------------------------------------
# A learner's data.


class Feed:
  """An endless iterator of reverb samples holding whichever batch is set."""

  def __init__(self, batch: types.Transition):
    self.batch = batch
    self.served = 0

  def __iter__(self):
    return self

  def __next__(self) -> reverb.ReplaySample:
    self.served += 1
    return reverb.ReplaySample(info=None, data=self.batch)


# ----------------------------------------------------------------------------
# Episodes.


def random_episode(
  rng: np.random.Generator,
  steps: int,
  *,
  terminal: bool = False,
  obs_shape: Sequence[int] = (4,),
  obs_dtype=np.float32,
  action_shape: Sequence[int] = (2,),
  action_dtype=np.float32,
  reward: Optional[float] = None,
  reward_dtype=np.float32,
  discount_dtype=np.float32,
  metadata: Optional[Dict[str, Any]] = None,
) -> Episode:
  """An episode of `steps` steps (`steps + 1` observations) drawn from `rng`.

  Observations and rewards are standard normal, actions uniform in [-1, 1] (integers in
  [0, 100) for integer dtypes); `reward` makes every reward that value. Discounts are 1,
  and 0 at the last step when `terminal`. Metadata defaults to {'seed': steps}.
  """

  def values(shape, dtype, low=None):
    if np.dtype(dtype).kind in 'iu':
      return rng.integers(0, 100, size=shape).astype(dtype)
    if low is not None:
      return rng.uniform(low, -low, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)

  discounts = np.ones(steps, discount_dtype)
  if terminal:
    discounts[-1] = 0
  rewards = (
    values((steps,), reward_dtype) if reward is None else np.full((steps,), reward, reward_dtype)
  )
  return Episode(
    observations=values((steps + 1,) + tuple(obs_shape), obs_dtype),
    actions=values((steps,) + tuple(action_shape), action_dtype, low=-1.0),
    rewards=rewards,
    discounts=discounts,
    metadata=dict(metadata) if metadata is not None else {'seed': steps},
  )
