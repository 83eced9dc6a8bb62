"""Robot side: the durable outbox of episodes on the robot PC's disk."""

import os
import pathlib
import secrets
import threading
from typing import Dict, List, Set

from agents.common.files import atomic_write_bytes
from launch.store.episodes import Episode, EpisodeStore

PARTS = ('store', 'replay')  # Where each episode goes.


class EpisodeOutbox:
  """The robot PC's durable outbox: every validated episode and what has been delivered.

  Episodes go into an EpisodeStore in `directory` under writer `name` (appended
  and fsynced before `append` returns). `<name>.delivered` is an append-only
  ledger of '<part> <episode id>' lines (part: store, replay or rejected),
  fsynced per line, so a restarted attach process sends exactly what is left.
  `<name>.token` names this outbox for good (see `key`). `append` is for the
  control loop; the rest for the sender thread.
  """

  def __init__(self, directory: os.PathLike, name: str):
    self._dir = pathlib.Path(directory)
    self._dir.mkdir(parents=True, exist_ok=True)
    self._writer = EpisodeStore(self._dir).writer(name)  # Holds the name: one process per outbox.
    self._store = EpisodeStore(self._dir)
    self._lock = threading.Lock()  # The store reader and the ledger: sender and status threads.
    self._name = name
    self._ledger_path = self._dir / f'{name}.delivered'
    self.token = self._token()
    self._delivered: Dict[str, Set[str]] = {}
    self._load_ledger()
    self._ledger = os.open(self._ledger_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

  def _token(self) -> str:
    path = self._dir / f'{self._name}.token'
    try:
      return path.read_text().strip()
    except FileNotFoundError:
      token = secrets.token_hex(8)
      atomic_write_bytes(path, token.encode() + b'\n')
      return token

  def key(self, episode_id: str) -> str:
    """The episode's name in the program's store (metadata EPISODE_KEY)."""
    return f'{self.token}:{episode_id}'

  def _load_ledger(self) -> None:
    try:
      text = self._ledger_path.read_bytes().decode(errors='replace')
    except FileNotFoundError:
      return
    for line in text.split('\n')[:-1]:  # A torn last line (no newline) is ignored.
      part, _, episode_id = line.partition(' ')
      if part in PARTS + ('rejected',) and episode_id:
        self._delivered.setdefault(episode_id, set()).add(part)

  @property
  def directory(self) -> pathlib.Path:
    return self._dir

  def append(self, episode: Episode) -> str:
    """Stores `episode` durably; returns its id. ValueError if it can't be stored."""
    return self._writer.append(episode)

  def _done(self, episode_id: str) -> bool:
    parts = self._delivered.get(episode_id, set())
    return 'rejected' in parts or all(p in parts for p in PARTS)

  def _ids(self) -> List[str]:
    self._store.refresh()
    return [i.episode_id for i in self._store.index() if i.writer == self._name]

  def pending(self) -> List[str]:
    """Ids of buffered episodes not yet fully delivered, oldest first."""
    with self._lock:
      return [i for i in self._ids() if not self._done(i)]

  def counts(self) -> Dict[str, int]:
    """Buffered episodes, and how many reached the store, the replay, or were rejected."""
    with self._lock:
      ids = self._ids()
      parts = [self._delivered.get(i, set()) for i in ids]
      return {'buffered': len(ids), 'store': sum('store' in p for p in parts),
              'replay': sum('replay' in p for p in parts),
              'rejected': sum('rejected' in p for p in parts),
              'pending': sum(not self._done(i) for i in ids)}

  def read(self, episode_id: str) -> Episode:
    with self._lock:
      return self._store.read(episode_id)

  def delivered(self, episode_id: str) -> Set[str]:
    with self._lock:
      return set(self._delivered.get(episode_id, set()))

  def mark(self, episode_id: str, part: str) -> None:
    """Records durably that `part` of the episode was delivered (or that it was rejected)."""
    with self._lock:
      os.write(self._ledger, f'{part} {episode_id}\n'.encode())
      os.fsync(self._ledger)
      self._delivered.setdefault(episode_id, set()).add(part)

  def close(self) -> None:
    with self._lock:
      self._writer.close()
      if self._ledger >= 0:
        os.close(self._ledger)
        self._ledger = -1
