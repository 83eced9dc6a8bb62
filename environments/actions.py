"""The executed action: what every source of experience stores as an episode's `action`.

A Gaussian policy samples past the action bounds and the environment clips what it is
given (acme's CanonicalSpecWrapper, RobotEnvironment). Stored episodes and replay hold
the action after that clipping, the command the environment executed, whoever acted: the
program's actors, attached robots and the dataset generator. The learner loses nothing by
it: the critic clips its actions to the same box (networks.mpo.clip_to_action_box), MPO's
policy step uses actions it samples itself, and behaviour cloning (BC, PAC, PMPO labels)
should imitate what was executed.
"""

from typing import Any

import dm_env
import numpy as np
from acme import core, specs


def clip_action(action: Any, spec: Any) -> Any:
  """`action` clipped to a bounded action spec, keeping its dtype; unchanged otherwise.

  NaN survives the clip, so a validator still catches it.
  """
  if not isinstance(spec, specs.BoundedArray):
    return action
  array = np.asarray(action)
  return np.clip(array, spec.minimum, spec.maximum).astype(array.dtype)


class ExecutedActionActor(core.Actor):
  """An actor whose `select_action` returns the executed (clipped) action.

  Wrapped around a policy's actor, the environment loop steps the environment, feeds
  the adder (replay) and its observers (the store) with that same action.
  """

  def __init__(self, actor: core.Actor, action_spec: Any):
    self._actor = actor
    self._spec = action_spec

  def select_action(self, observation: Any) -> Any:
    return clip_action(self._actor.select_action(observation), self._spec)

  def observe_first(self, timestep: dm_env.TimeStep) -> None:
    self._actor.observe_first(timestep)

  def observe(self, action: Any, next_timestep: dm_env.TimeStep) -> None:
    self._actor.observe(action, next_timestep)

  def update(self, wait: bool = False) -> None:
    self._actor.update(wait)

  @property
  def policy_version(self) -> Any:
    """The wrapped actor's policy version (None when it has none)."""
    return getattr(self._actor, 'policy_version', None)
