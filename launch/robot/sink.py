"""Program side: the sink for attached actors' episodes (the robot gateway hands them in)."""

import os
import pathlib
import threading
import time
from typing import Any, Dict, Mapping, Optional

from acme import specs

from agents.common.logs import get_logger
from launch.robot.wire import (
  EPISODE_KEY,
  EpisodeLimits,
  check_data,
  check_episode,
  check_metadata,
  episode_from_data,
)
from launch.store.episodes import EpisodeStore

EXTERNAL_WRITER_PREFIX = 'external_'

log = get_logger('gateway')


class ExternalEpisodeSink:
  """Appends attached actors' episodes to a store: writer f'external_{name}', each once.

  An episode carries its id in the robot's outbox (metadata 'robot_episode_id');
  one already stored under that name is acknowledged again, not stored twice,
  so a robot that lost an acknowledgement can simply resend. Everything the
  learner relies on later is checked first (launch.robot.wire: sizes within
  `limits` before any other work, then the spec, then the metadata schema); a
  rejection names the robot, the episode, the field and the step. Thread-safe
  (the gateway serves calls on several threads). It does not depend on the transport.
  """

  def __init__(
    self,
    directory: os.PathLike,
    spec: specs.EnvironmentSpec,
    limits: Optional[EpisodeLimits] = None,
  ):
    self._dir = pathlib.Path(directory)
    self._spec = spec
    self._limits = limits or EpisodeLimits()
    self._lock = threading.Lock()
    self._writers: Dict[str, Any] = {}
    self._stored: Dict[str, Dict[str, str]] = {}  # name -> robot episode id -> store id

  def append(self, name: str, data: Mapping[str, Any]) -> Dict[str, Any]:
    """{'status': 'stored' | 'duplicate', 'id': store id} or {'status': 'rejected', 'reason'}."""
    robot = name[:100] if isinstance(name, str) else repr(name)[:100]
    metadata = data.get('metadata') if isinstance(data, Mapping) else None
    key = metadata.get(EPISODE_KEY) if isinstance(metadata, dict) else None
    key = key if isinstance(key, str) and key else None  # For the messages.
    problem = check_data(data, self._limits)  # Sizes first: nothing big is touched before.
    if problem is None and key is None:
      problem = f'metadata {EPISODE_KEY!r} is missing'
    if problem is None:
      episode = episode_from_data(data)
      problem = check_episode(episode, self._spec) or check_metadata(episode.metadata)
    if problem is not None:
      reason = f'{robot}: episode {key or "?":.100}: {problem}'
      log.warning('rejected an episode: %s', reason)
      return {'status': 'rejected', 'reason': reason}
    with self._lock:
      try:
        writer, stored = self._writer(name)
      except ValueError as e:  # A bad name.
        return {'status': 'rejected', 'reason': str(e)}
      if key in stored:
        return {'status': 'duplicate', 'id': stored[key]}
      episode.metadata.update(source=name, external=True, received_time=time.time())
      try:
        episode_id = writer.append(episode)
      except ValueError as e:  # What the store refuses beyond the checks above.
        return {'status': 'rejected', 'reason': f'{robot}: episode {key}: {e}'}
      except Exception:  # pylint: disable=broad-except
        self._writers.pop(name, None)  # A failed append closes the writer; reopen next time.
        raise
      stored[key] = episode_id
    return {'status': 'stored', 'id': episode_id}

  def _writer(self, name: str):
    writer = self._writers.get(name)
    if writer is None or writer.closed:
      if not isinstance(name, str):
        raise ValueError(f'robot name {name!r}: not a string')
      store = EpisodeStore(self._dir, verify=False)
      writer = store.writer(EXTERNAL_WRITER_PREFIX + name)
      # What this robot delivered before (maybe to an earlier gateway process).
      self._stored[name] = {
        info.metadata[EPISODE_KEY]: info.episode_id
        for info in store.index()
        if info.writer == writer.name and isinstance(info.metadata.get(EPISODE_KEY), str)
      }
      self._writers[name] = writer
    return writer, self._stored[name]

  def close(self) -> None:
    with self._lock:
      for writer in self._writers.values():
        writer.close()
      self._writers.clear()
