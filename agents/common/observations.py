"""What an agent's observation is: a flat float vector, or a uint8 camera image."""

from typing import Any, Tuple, Union

import jax.numpy as jnp
import numpy as np

# A flat observation's size, or an observation spec (anything with shape and dtype).
ObservationShape = Union[int, Any]


def is_image(spec: Any) -> bool:
  """Whether the spec is one uint8 image [H, W, C] (a pixel task's observation)."""
  return getattr(spec, 'dtype', None) == np.uint8 and len(getattr(spec, 'shape', ())) == 3


def shape_and_dtype(obs: ObservationShape) -> Tuple[Tuple[int, ...], Any]:
  if isinstance(obs, (int, np.integer)):
    return (int(obs),), jnp.float32
  return tuple(int(d) for d in obs.shape), (jnp.uint8 if is_image(obs) else jnp.float32)


def example_observations(obs: ObservationShape) -> jnp.ndarray:
  """A batch of one zero observation, for initialising networks."""
  shape, dtype = shape_and_dtype(obs)
  return jnp.zeros((1,) + shape, dtype)
