"""Packed replay items: an n-step transition's five fields in one float32 column.

Reverb keeps each column of an item as a chunk of its own, and pays per chunk: an acme
transition has five columns (observation, action, n-step return, discount, next
observation), so every item written or sampled moves five chunks. Where all five are flat
float32 (state runs) they concatenate into one row, [observation, action, return,
discount, next observation], without changing a number: the same transition in one chunk.
Measured on walker:walk (experiments/results/throughput/README.md, section 7): the
learner's pipeline 0.91 ms of CPU a batch of 128 against 2.62, the adder 0.83x its CPU an
item.
`replay.packed_items` turns it on; the dataset splits each batch back into acme's
Transition, so a learner sees the same batches either way.
"""

from typing import TYPE_CHECKING, Optional, Tuple

import numpy as np
from acme import specs, types

if TYPE_CHECKING:
  import tensorflow as tf


def packed_sizes(spec: specs.EnvironmentSpec) -> Optional[Tuple[int, int]]:
  """(observation size, action size) when the transition can be packed: a flat float32
  observation and action, and float32 reward and discount; None otherwise (images, a dict
  of image and features), whose items keep acme's five columns."""
  fields = (spec.observations, spec.actions, spec.rewards, spec.discounts)
  if not all(hasattr(f, 'dtype') and np.dtype(f.dtype) == np.float32 for f in fields):
    return None
  if len(spec.observations.shape) != 1 or len(spec.actions.shape) != 1:
    return None
  if spec.rewards.shape != () or spec.discounts.shape != ():
    return None
  return int(spec.observations.shape[0]), int(spec.actions.shape[0])


def packed_signature(obs_size: int, action_size: int) -> 'tf.TensorSpec':
  """The table's signature for packed items: one float32 row."""
  import tensorflow as tf

  return tf.TensorSpec([2 * obs_size + action_size + 2], tf.float32, name='transition')


def pack(observation, action, n_step_return, discount, next_observation) -> np.ndarray:
  """One transition as its packed row (float32 in, float32 out: no number changes)."""
  return np.concatenate(
    (
      observation,
      action,
      np.reshape(n_step_return, 1),
      np.reshape(discount, 1),
      next_observation,
    )
  )


def unpack(rows: np.ndarray, obs_size: int, action_size: int) -> types.Transition:
  """A batch of packed rows [B, width] as acme's Transition (views into `rows`)."""
  a = obs_size + action_size
  width = 2 * obs_size + action_size + 2
  if rows.ndim != 2 or rows.shape[1] != width:
    raise ValueError(
      f'packed items of {obs_size} observation and {action_size} action values are rows of '
      f'{width}; got an array of shape {rows.shape}'
    )
  return types.Transition(
    observation=rows[:, :obs_size],
    action=rows[:, obs_size:a],
    reward=rows[:, a],
    discount=rows[:, a + 1],
    next_observation=rows[:, a + 2 :],
  )
