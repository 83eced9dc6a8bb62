"""Random-shift image augmentation (DrQ): pad by replicating the border, crop back at a
random offset. Pure functions of uint8 images [B, H, W, C]."""

import jax
import jax.numpy as jnp


def shift_images(images: jnp.ndarray, offsets: jnp.ndarray, pad: int) -> jnp.ndarray:
  """Each image padded by `pad` pixels (edges replicated), then cropped to its own size at
  `offsets[b] = (row, column)`, each in [0, 2 * pad]; (pad, pad) gives the image back.

  images [B, H, W, C]; offsets int [B, 2]. The content moves by (pad - row, pad - column).
  """
  height, width, channels = images.shape[-3:]
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='edge')

  def crop(image, offset):
    return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, channels))

  return jax.vmap(crop)(padded, offsets.astype(jnp.int32))


def random_shift(key: jnp.ndarray, images: jnp.ndarray, pad: int) -> jnp.ndarray:
  """Every image of the batch shifted by its own random offset of up to `pad` pixels."""
  if pad == 0:
    return images
  offsets = jax.random.randint(key, (images.shape[0], 2), 0, 2 * pad + 1)
  return shift_images(images, offsets, pad)
