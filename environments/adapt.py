"""A typical robot environment, made to look as the program's environments look.

The program's environments (environments.suite) have one float32 observation vector,
float32 actions in [-1, 1], float32 rewards and discounts. A robot environment often has
a dict of float64 readings and actions in its own units; `adapt_to_program` turns it into
that shape, with the same wrappers the program's own tasks use:

  env = adapt_to_program(MyRobotEnv())  # e.g. in the factory given to launch.attach --env

* observations: a dict (or nest) of arrays becomes one vector, each array flattened (a
  [1, 6, 2] reading becomes 12 values, C order) and the arrays concatenated in sorted key
  order (acme's ConcatObservationWrapper, as for the program's suite tasks, so the same
  keys line up with the same task);
* actions: the program's [-1, 1] is scaled to the environment's bounds, and clipped
  (acme's CanonicalSpecWrapper); the environment's action spec must be bounded;
* float64 becomes float32 everywhere (acme's SinglePrecisionWrapper).
"""

import dm_env
import numpy as np
import tree
from acme import wrappers
from dm_env import specs


def _flat_spec(spec: specs.Array) -> specs.Array:
  shape = (int(np.prod(spec.shape)),)
  if isinstance(spec, specs.BoundedArray):
    low = np.broadcast_to(spec.minimum, spec.shape).reshape(shape)
    high = np.broadcast_to(spec.maximum, spec.shape).reshape(shape)
    return specs.BoundedArray(shape, spec.dtype, low, high, name=spec.name)
  return specs.Array(shape, spec.dtype, name=spec.name)


class FlatReadingsWrapper(wrappers.EnvironmentWrapper):
  """Every observation array flattened to one dimension (acme's ConcatObservationWrapper
  needs them so; dm_control.manipulation's readings are [1, n] and [1, 6, 2])."""

  def __init__(self, environment: dm_env.Environment):
    super().__init__(environment)
    self._spec = tree.map_structure(_flat_spec, environment.observation_spec())

  def _flat(self, timestep: dm_env.TimeStep) -> dm_env.TimeStep:
    observation = tree.map_structure(lambda x: np.reshape(x, (-1,)), timestep.observation)
    return timestep._replace(observation=observation)

  def reset(self) -> dm_env.TimeStep:
    return self._flat(self._environment.reset())

  def step(self, action) -> dm_env.TimeStep:
    return self._flat(self._environment.step(action))

  def observation_spec(self):
    return self._spec


def adapt_to_program(env: dm_env.Environment) -> dm_env.Environment:
  """`env` with one float32 observation vector, float32 actions in [-1, 1] and float32 rewards."""
  env = wrappers.ConcatObservationWrapper(FlatReadingsWrapper(env))
  env = wrappers.CanonicalSpecWrapper(env, clip=True)
  return wrappers.SinglePrecisionWrapper(env)
