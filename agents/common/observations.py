"""What an agent's observation is: a flat float vector, a uint8 camera image, or an image
with the task's state features beside it ({'features': float32 [F], 'pixels': uint8 [H, W,
C]}, a pixel run with `pixel_features`)."""

from typing import Any, Tuple, Union

import jax.numpy as jnp
import numpy as np

from networks.encoder import FEATURES, PIXELS

# A flat observation's size, or an observation spec (anything with shape and dtype, or the
# dict of an image with features).
ObservationShape = Union[int, Any]


def is_image(spec: Any) -> bool:
  """Whether the spec is one uint8 image [H, W, C] (a pixel task's observation)."""
  return getattr(spec, 'dtype', None) == np.uint8 and len(getattr(spec, 'shape', ())) == 3


def is_image_with_features(spec: Any) -> bool:
  """Whether the spec is {'features': a float vector [F], 'pixels': a uint8 image}."""
  if not isinstance(spec, dict) or set(spec) != {PIXELS, FEATURES}:
    return False
  features = spec[FEATURES]
  return (
    is_image(spec[PIXELS])
    and len(getattr(features, 'shape', ())) == 1
    and np.dtype(getattr(features, 'dtype', None)).kind == 'f'
  )


def is_pixels(spec: Any) -> bool:
  """A camera image, with or without state features beside it."""
  return is_image(spec) or is_image_with_features(spec)


def image_spec(spec: Any) -> Any:
  """The image part of a pixel observation spec."""
  return spec[PIXELS] if isinstance(spec, dict) else spec


def shape_and_dtype(obs: ObservationShape) -> Tuple[Tuple[int, ...], Any]:
  if isinstance(obs, (int, np.integer)):
    return (int(obs),), jnp.float32
  return tuple(int(d) for d in obs.shape), (jnp.uint8 if is_image(obs) else jnp.float32)


def example_observations(obs: ObservationShape) -> Any:
  """A batch of one zero observation, for initialising networks."""
  if isinstance(obs, dict):
    return {key: example_observations(value) for key, value in obs.items()}
  shape, dtype = shape_and_dtype(obs)
  return jnp.zeros((1,) + shape, dtype)


def as_policy_input(observation: Any) -> Any:
  """An environment's observation as the policy takes it: images stay uint8 (the network
  scales them), everything else float32 (a no-op for the float32 environments)."""
  if isinstance(observation, dict):
    return {key: as_policy_input(value) for key, value in observation.items()}
  observation = np.asarray(observation)
  if observation.dtype != np.uint8:
    observation = observation.astype(np.float32, copy=False)
  return observation
