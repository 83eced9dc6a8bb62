"""The data-pipeline settings every agent shares (its `replay` sub-config).

Kept apart from agents.replay_pipeline, which builds the pipeline, so reading a config
imports no Reverb.
"""

import dataclasses
from typing import Optional

from agents.common.config import Config, Need, finite, is_int


@dataclasses.dataclass
class ReplayConfig(Config):
  """Transitions, replay and batches; the program reads these for every agent."""

  # n-step transitions: rewards over n_step steps, discounted by `discount` (the learner
  # bootstraps with it too).
  discount: float = 0.99
  n_step: int = 5
  batch_size: int = 256
  min_replay_size: int = 1_000
  max_replay_size: int = 1_000_000
  # Average number of times each transition is sampled; None disables rate limiting.
  samples_per_insert: Optional[float] = 32.0
  samples_per_insert_tolerance: float = 0.5
  # Actors refresh parameters from the learner every this many actor steps.
  variable_update_period: int = 250
  # Each replay item as one float32 column (agents.packed_items) where the observation is
  # one float32 vector: the same numbers, a third of the learner pipeline's CPU a batch.
  # Images keep acme's five columns.
  packed_items: bool = False
  # Batches the learner's dataset draws from TensorFlow a call, handed out one by one
  # (state items; images draw one): each call costs ~0.5 ms of the learner thread whatever
  # its size. At the rate limiter the learner then steps that many batches at a time.
  batches_per_draw: int = 1

  def check(self, need: Need) -> None:
    need(finite(self.discount) and 0.0 < self.discount < 1.0, 'discount', 'in (0, 1)')
    for f in (
      'n_step',
      'batch_size',
      'min_replay_size',
      'max_replay_size',
      'variable_update_period',
      'batches_per_draw',
    ):
      need(is_int(getattr(self, f)) and getattr(self, f) >= 1, f, 'an int >= 1')
    need(isinstance(self.packed_items, bool), 'packed_items', 'true or false')
    need(self.max_replay_size >= self.min_replay_size, 'max_replay_size', '>= min_replay_size')
    if self.samples_per_insert is not None:
      need(
        finite(self.samples_per_insert) and self.samples_per_insert > 0,
        'samples_per_insert',
        'a finite number > 0, or None to disable rate limiting',
      )
    need(
      finite(self.samples_per_insert_tolerance) and self.samples_per_insert_tolerance > 0,
      'samples_per_insert_tolerance',
      'a finite number > 0',
    )


# The flat names these fields had in earlier runs' config.json (and on --agent); fields
# added since the replay settings were nested never had one.
_NEWER_FIELDS = ('packed_items', 'batches_per_draw')
LEGACY_REPLAY_KEYS = {
  f.name: f'replay.{f.name}'
  for f in dataclasses.fields(ReplayConfig)
  if f.name not in _NEWER_FIELDS
}
