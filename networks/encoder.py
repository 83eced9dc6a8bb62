"""A convolutional image encoder: uint8 camera images in, a feature vector out."""

from typing import Sequence

import haiku as hk
import jax
import jax.numpy as jnp

ENCODER_NAME = 'encoder'
# The keys of an observation with state features beside the image (environments.pixels).
PIXELS, FEATURES = 'pixels', 'features'


def scale_pixels(images: jnp.ndarray) -> jnp.ndarray:
  """uint8 [0, 255] -> float32 [-0.5, 0.5]: images stay uint8 until the network."""
  return images.astype(jnp.float32) / 255.0 - 0.5


class ResidualBlock(hk.Module):
  """relu -> conv3x3 -> relu -> conv3x3, added to its input (pre-activation, as IMPALA's)."""

  def __init__(self, channels: int, name: str = 'residual_block'):
    super().__init__(name=name)
    self._channels = channels

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    y = hk.Conv2D(self._channels, 3)(jax.nn.relu(x))
    y = hk.Conv2D(self._channels, 3)(jax.nn.relu(y))
    return x + y


class ConvEncoder(hk.Module):
  """ResNet-style stack: per stage a strided 3x3 conv then `blocks` residual blocks; then a
  linear layer to `feature_dim`, LayerNorm and tanh (bounded features for both heads).

  Takes uint8 images [*B, H, W, C]; returns float32 [*B, feature_dim].
  """

  def __init__(
    self,
    channels: Sequence[int] = (32, 32, 32),
    blocks: int = 1,
    feature_dim: int = 64,
    name: str = ENCODER_NAME,
  ):
    super().__init__(name=name)
    if not channels or any(int(c) <= 0 for c in channels):
      raise ValueError(f'channels must be positive integers, got {channels}')
    if int(blocks) < 0 or int(feature_dim) <= 0:
      raise ValueError(f'blocks must be >= 0 and feature_dim > 0, got {blocks}, {feature_dim}')
    self._channels = tuple(int(c) for c in channels)
    self._blocks = int(blocks)
    self._feature_dim = int(feature_dim)

  def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
    batch = images.shape[:-3]
    x = scale_pixels(images).reshape((-1,) + images.shape[-3:])
    for channels in self._channels:
      x = hk.Conv2D(channels, 3, stride=2)(x)
      for _ in range(self._blocks):
        x = ResidualBlock(channels)(x)
    x = jax.nn.relu(x).reshape(x.shape[0], -1)
    x = hk.Linear(self._feature_dim)(x)
    x = jnp.tanh(hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)(x))
    return x.reshape(batch + (self._feature_dim,))
