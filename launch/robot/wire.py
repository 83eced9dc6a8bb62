"""Episodes over the wire between an attached robot and the program, as plain data.

`EPISODE_KEY` names an episode for good, so the program stores each exactly once;
`check_episode` is what the program requires of an episode before it stores it.
"""

from typing import Any, Dict, List, Mapping, Optional, Tuple

import dm_env
import numpy as np
from acme import specs

from launch.store.episodes import Episode

# Metadata: '<outbox token>:<episode id in the outbox>', unique across outboxes (a
# wiped and recreated outbox has a new token, so its ids are never taken for resends).
EPISODE_KEY = 'robot_episode_id'


def episode_to_data(episode: Episode) -> Dict[str, Any]:
  return {'observations': np.asarray(episode.observations), 'actions': np.asarray(episode.actions),
          'rewards': np.asarray(episode.rewards), 'discounts': np.asarray(episode.discounts),
          'metadata': dict(episode.metadata)}


def episode_from_data(data: Mapping[str, Any]) -> Episode:
  return Episode(observations=np.asarray(data['observations']),
                 actions=np.asarray(data['actions']), rewards=np.asarray(data['rewards']),
                 discounts=np.asarray(data['discounts']), metadata=dict(data['metadata']))


def episode_timesteps(episode: Episode) -> Tuple[dm_env.TimeStep, List[Tuple[np.ndarray,
                                                                              dm_env.TimeStep]]]:
  """The FIRST timestep and the (action, next timestep) pairs an adder is fed."""
  steps = episode.length
  first = dm_env.restart(episode.observations[0])
  rest = []
  for t in range(steps):
    kind = dm_env.StepType.LAST if t == steps - 1 else dm_env.StepType.MID
    rest.append((episode.actions[t], dm_env.TimeStep(kind, episode.rewards[t],
                                                     episode.discounts[t],
                                                     episode.observations[t + 1])))
  return first, rest


def check_episode(episode: Episode, spec: specs.EnvironmentSpec) -> Optional[str]:
  """Why `episode` does not fit a program with `spec` (one flat observation and action), or None."""
  steps = episode.actions.shape[0] if episode.actions.ndim else 0
  expected = {'observations': ((steps + 1,) + tuple(spec.observations.shape),
                               spec.observations.dtype),
              'actions': ((steps,) + tuple(spec.actions.shape), spec.actions.dtype),
              'rewards': ((steps,) + tuple(spec.rewards.shape), spec.rewards.dtype),
              'discounts': ((steps,) + tuple(spec.discounts.shape), spec.discounts.dtype)}
  for field, (shape, dtype) in expected.items():
    value = getattr(episode, field)
    if value.shape != shape or value.dtype != np.dtype(dtype):
      return (f'{field}: expected shape {shape} and dtype {np.dtype(dtype).name}, got '
              f'{value.shape} {value.dtype}')
  if steps < 1:
    return 'actions: an episode needs at least one step'
  actions = spec.actions
  if isinstance(actions, specs.BoundedArray):
    with np.errstate(invalid='ignore'):
      outside = (episode.actions < actions.minimum) | (episode.actions > actions.maximum)
    if np.any(outside):
      step = int(np.argwhere(outside)[0][0])
      return f'actions: outside the action bounds at step {step}'
  return None
