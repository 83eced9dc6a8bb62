"""Records every episode an environment loop runs into the durable store."""

from typing import Any, Callable, Dict, List, Optional

import dm_env
import numpy as np
from acme.utils import observers

from agents.common.logs import get_logger
from launch.store.episodes import Episode

log = get_logger('store')


def _copy(observation: Any) -> Any:
  if isinstance(observation, dict):
    return {key: np.array(value, copy=True) for key, value in observation.items()}
  return np.array(observation, copy=True)


class EpisodeRecorder(observers.EnvLoopObserver):
  """An acme EnvLoopObserver that appends each completed episode to a store writer.

  An episode is written only when it ends (a LAST timestep): one cut short by
  shutdown or a crash is never stored in part.
  """

  def __init__(
    self,
    writer: Any,
    metadata: Optional[Dict[str, Any]] = None,
    policy_version: Optional[Callable[[], Optional[int]]] = None,
  ):
    self._writer = writer
    self._metadata = dict(metadata or {})
    self._policy_version = policy_version or (lambda: None)
    self._stored = 0
    self._dropped = 0
    self._reset()

  def _reset(self) -> None:
    self._obs: List[np.ndarray] = []
    self._actions: List[np.ndarray] = []
    self._rewards: List[float] = []
    self._discounts: List[float] = []
    self._versions: List[int] = []

  def observe_first(self, env: dm_env.Environment, timestep: dm_env.TimeStep) -> None:
    del env
    self._reset()
    self._obs.append(_copy(timestep.observation))

  def observe(self, env: dm_env.Environment, timestep: dm_env.TimeStep, action: np.ndarray) -> None:
    del env
    self._actions.append(np.array(action, copy=True))
    self._obs.append(_copy(timestep.observation))
    self._rewards.append(timestep.reward)
    self._discounts.append(timestep.discount)
    version = self._policy_version()
    if version is not None:
      self._versions.append(int(version))
    if timestep.last():
      self._write()

  def _write(self) -> None:
    metadata = dict(self._metadata)
    if self._versions:
      metadata['policy_version'] = [min(self._versions), max(self._versions)]
    features = None
    if isinstance(self._obs[0], dict):  # Camera images with the state features beside them.
      features = np.stack([o['features'] for o in self._obs])
      self._obs = [o['pixels'] for o in self._obs]
    episode = Episode(
      observation_features=features,
      observations=np.stack(self._obs),
      actions=np.stack(self._actions),
      rewards=np.asarray(self._rewards, np.float32),
      discounts=np.asarray(self._discounts, np.float32),
      metadata=metadata,
    )
    self._reset()
    try:
      self._writer.append(episode)
    except ValueError as e:
      # The store validates every episode (shapes, NaN): a bad one is dropped, loudly.
      self._dropped += 1
      log.warning('episode not stored (%s); %d dropped so far', e, self._dropped)
      return
    self._stored += 1

  def get_metrics(self) -> Dict[str, int]:
    return {'stored_episodes': self._stored}
