"""What the generalist's learner trains on (made by launch.store.windows from stored episodes)."""

from typing import NamedTuple

import numpy as np


class SequenceBatch(NamedTuple):
  """A batch of windows, numpy, ready for the sequence model."""

  tokens: np.ndarray  # [B, L] int32
  positions: np.ndarray  # [B, L] int32: position within the timestep (0 for the rest)
  loss_mask: np.ndarray  # [B, L] bool: the episode's action tokens
  task: np.ndarray  # [B] int32: the task's index in the sampler's `tasks`
