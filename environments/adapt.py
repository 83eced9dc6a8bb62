"""A typical robot environment, made to look as the program's environments look.

The program's environments (environments.suite) have one float32 observation vector,
float32 actions in [-1, 1], float32 rewards and discounts. A robot environment often has
a dict of float64 readings and actions in its own units; `adapt_to_program` turns it into
that shape, with the same wrappers the program's own tasks use:

  env = adapt_to_program(MyRobotEnv())  # e.g. in the factory given to launch.attach --env

* observations: a dict (or nest) of arrays becomes one vector, the arrays flattened and
  concatenated in sorted key order (as acme's ConcatObservationWrapper does for the
  program's suite tasks, so the same keys line up with the same task);
* actions: the program's [-1, 1] is scaled to the environment's bounds, and clipped
  (acme's CanonicalSpecWrapper); the environment's action spec must be bounded;
* float64 becomes float32 everywhere (acme's SinglePrecisionWrapper).
"""

import dm_env
from acme import wrappers


def adapt_to_program(env: dm_env.Environment) -> dm_env.Environment:
  """`env` with one float32 observation vector, float32 actions in [-1, 1] and float32 rewards."""
  env = wrappers.ConcatObservationWrapper(env)
  env = wrappers.CanonicalSpecWrapper(env, clip=True)
  return wrappers.SinglePrecisionWrapper(env)
