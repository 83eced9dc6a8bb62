"""Settings of the convolutional encoder that pixel observations go through."""

import dataclasses
from typing import Tuple

from agents.common.config import Config, Need, is_int, positive_ints, tuple_or_none


@dataclasses.dataclass
class EncoderConfig(Config):
  """The image encoder (networks.encoder.ConvEncoder) and the learner's random shift.

  Used only when the observation is a camera image (--pixels); state runs ignore it.
  """

  channels: Tuple[int, ...] = (32, 32, 32)  # one stride-2 stage each
  blocks: int = 1  # residual blocks per stage
  feature_dim: int = 64
  shift_pad: int = 4  # DrQ's random shift, pixels each way (0: none)

  def __post_init__(self):
    self.channels = tuple_or_none(self.channels)

  def check(self, need: Need) -> None:
    need(positive_ints(self.channels), 'channels', 'a non-empty sequence of positive ints')
    need(is_int(self.blocks) and self.blocks >= 0, 'blocks', 'an int >= 0')
    need(is_int(self.feature_dim) and self.feature_dim >= 1, 'feature_dim', 'an int >= 1')
    need(is_int(self.shift_pad) and 0 <= self.shift_pad <= 32, 'shift_pad', 'an int in [0, 32]')
