"""An actor for K environments at once: one policy call per step for all of them.

Each environment is a stream of its own, as if K separate actors ran it: its own
exploration key, its own adder (its own n-step writer into replay). Only the policy call
and the parameters are shared. A builder may provide `make_batched_actor` (one jitted,
batched call, see agents.mpo.batched_actor); any other agent gets `SeparateActors`, K of
its ordinary actors side by side, which writes the same data without the batching.
"""

from typing import Any, Optional, Protocol, Sequence, runtime_checkable

import dm_env
import numpy as np
from acme import adders, core


@runtime_checkable
class BatchedActor(Protocol):
  """acme's Actor with a stream index: actions for a batch of observations."""

  def select_actions(self, observations: Any) -> np.ndarray:
    """Actions [K, ...] for stacked observations [K, ...], stream i's from row i."""

  def observe_first(self, stream: int, timestep: dm_env.TimeStep) -> None: ...

  def observe(self, stream: int, action: np.ndarray, next_timestep: dm_env.TimeStep) -> None: ...

  def update(self, wait: bool = False) -> None: ...

  @property
  def policy_version(self) -> Optional[int]: ...


class SeparateActors:
  """K ordinary actors behind the BatchedActor interface (one policy call each)."""

  def __init__(self, actors: Sequence[core.Actor]):
    self._actors = list(actors)

  def select_actions(self, observations: Any) -> np.ndarray:
    return np.stack([np.asarray(a.select_action(o)) for a, o in zip(self._actors, observations)])

  def observe_first(self, stream: int, timestep: dm_env.TimeStep) -> None:
    self._actors[stream].observe_first(timestep)

  def observe(self, stream: int, action: np.ndarray, next_timestep: dm_env.TimeStep) -> None:
    self._actors[stream].observe(action, next_timestep)

  def update(self, wait: bool = False) -> None:
    for actor in self._actors:
      actor.update(wait)

  @property
  def policy_version(self) -> Optional[int]:
    return getattr(self._actors[0], 'policy_version', None)


def make_batched_actor(
  builder: Any,
  variable_source: core.VariableSource,
  stream_adders: Sequence[Optional[adders.Adder]],
  seeds: Sequence[int],
  version_name: Optional[str] = None,
) -> BatchedActor:
  """The builder's batched actor for len(seeds) streams, or K of its actors side by side.

  Stream i explores with `seeds[i]` and writes through `stream_adders[i]`, as a
  single-environment actor made with that seed and adder would.
  """
  if len(stream_adders) != len(seeds):
    raise ValueError(f'{len(stream_adders)} adders for {len(seeds)} streams')
  make = getattr(builder, 'make_batched_actor', None)
  if make is not None:
    return make(variable_source, stream_adders, seeds, version_name=version_name)
  return SeparateActors(
    [
      builder.make_actor(variable_source, adder, seed=seed, version_name=version_name)
      for adder, seed in zip(stream_adders, seeds)
    ]
  )
