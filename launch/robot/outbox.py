"""Robot side: the durable outbox of episodes on the robot PC's disk, pruned as it delivers."""

import errno
import fcntl
import os
import pathlib
import re
import secrets
import shutil
import threading
import time
from typing import Dict, List, Optional, Set, Tuple

from agents.common.files import atomic_write_bytes, fsync_dir
from agents.common.logs import get_logger
from launch.robot.wire import episode_nbytes
from launch.store.episodes import Episode, EpisodeStore, WriterBusyError

log = get_logger('attach')

# Where each episode goes: the program's store (its gateway inserts the replay part itself).
# Ledgers of earlier versions also hold 'replay' lines; they are ignored.
PARTS = ('store',)
REJECTED = 'rejected'  # The program refused the episode (or it is unreadable): never sent again.
DEFAULT_MAX_BYTES = 4 << 30
_GENERATION_BYTES = 64 << 20  # A generation is pruned whole: at most this much waits on one.
_GENERATION_RE = re.compile(r'^(\d{6})$')


class OutboxFull(Exception):
  """The outbox holds `max_bytes` already: the new episode was not written."""


class EpisodeOutbox:
  """The robot PC's durable outbox: every validated episode and what has been delivered.

  Episodes go into generations: `<directory>/<name>.outbox/<k>/` (k = 000000, ...)
  is an EpisodeStore with writer `name`, appended and fsynced before `append`
  returns. Each process starts a new generation and moves on to the next one past
  64 MiB; a generation that is no longer written to and whose episodes are all
  delivered (to the store) or rejected is deleted whole, so delivered episodes
  leave the disk. `<name>.delivered` is the ledger of '<part> <episode id>[ <reason>]'
  lines (part: store or rejected), fsynced per line and rewritten without
  the pruned generations' lines, so a restarted attach process sends exactly what is
  left; `<name>.rejected` keeps '<time> <episode id> <reason>' of every rejected
  episode for good. `<name>.token` names this outbox for good (see `key`).

  At `max_bytes` (the episodes not yet pruned) a new episode is refused with
  OutboxFull: what is already written is kept and delivered, nothing is evicted.
  A disk error (ENOSPC) in `append` raises OSError, and everything written before
  stays readable; the next `append` starts a new generation. `append` is for the
  control loop; the rest for the sender and status threads.
  """

  def __init__(self, directory: os.PathLike, name: str, max_bytes: int = DEFAULT_MAX_BYTES):
    self._dir = pathlib.Path(directory)
    self._dir.mkdir(parents=True, exist_ok=True)
    self._name = name
    self._max_bytes = int(max_bytes)
    self._lock_fd = self._lock_name()
    self._root = self._dir / f'{name}.outbox'
    self._root.mkdir(exist_ok=True)
    self._ledger_path = self._dir / f'{name}.delivered'
    self._rejected_path = self._dir / f'{name}.rejected'
    self._migrate()
    self._lock = threading.Lock()  # Stores, ledger and sizes: control, sender and status threads.
    self.token = self._token()
    self._delivered: Dict[str, Set[str]] = {}
    self._reasons: Dict[str, str] = {}
    self._marked = {part: 0 for part in PARTS + (REJECTED,)}  # Since opened.
    self._load_ledger()
    self._ledger = os.open(self._ledger_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    self._ledger_torn = False
    self._stores: Dict[str, EpisodeStore] = {}  # Generation -> reader.
    self._writer = None
    self._current: Optional[str] = None
    self._current_bytes = 0
    self.prune()

  def _lock_name(self) -> int:
    fd = os.open(self._dir / f'{self._name}.lock', os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      raise WriterBusyError(f'the outbox {self._name!r} in {self._dir} is open elsewhere') from None
    return fd

  def _migrate(self) -> None:
    """An outbox of the earlier layout (one store in `directory`) becomes generation 000000."""
    legacy = self._dir / f'{self._name}.index'
    if not legacy.exists():
      return
    target = self._root / f'{0:06d}'
    target.mkdir(exist_ok=True)  # It exists if a migration was cut short: finish it.
    segment = re.compile(re.escape(self._name) + r'\.\d+\.seg$')
    for entry in os.scandir(self._dir):
      if segment.match(entry.name):
        os.replace(entry.path, target / entry.name)
    try:
      text = self._ledger_path.read_text(errors='replace')
    except FileNotFoundError:
      text = ''
    lines = []
    for line in text.split('\n')[:-1]:
      part, _, episode_id = line.partition(' ')
      if episode_id and '/' not in episode_id.partition(' ')[0]:
        line = f'{part} {target.name}/{episode_id}'
      lines.append(line + '\n')
    atomic_write_bytes(self._ledger_path, ''.join(lines).encode())
    os.replace(legacy, target / legacy.name)  # Last: until then, the next start migrates again.
    fsync_dir(self._root)
    fsync_dir(self._dir)
    log.info('outbox %s: moved the episodes of the earlier layout into %s', self._dir, target)

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
      part, _, rest = line.partition(' ')
      episode_id, _, reason = rest.partition(' ')
      if part in PARTS + (REJECTED,) and episode_id:
        self._delivered.setdefault(episode_id, set()).add(part)
        if reason:
          self._reasons[episode_id] = reason

  @property
  def directory(self) -> pathlib.Path:
    return self._dir

  # --------------------------------------------------------------------------
  # Generations.

  def _generations(self) -> List[str]:
    return sorted(e.name for e in os.scandir(self._root) if _GENERATION_RE.match(e.name))

  def _size(self, generation: str) -> int:
    return sum(e.stat().st_size for e in os.scandir(self._root / generation) if e.is_file())

  def _store(self, generation: str) -> EpisodeStore:
    store = self._stores.get(generation)
    if store is None:
      store = self._stores[generation] = EpisodeStore(self._root / generation)
    return store

  def _new_generation(self) -> None:
    # Numbers are never reused (pruning removes the directories): an episode id, and so
    # its key in the program's store, names one episode for good.
    counter = self._dir / f'{self._name}.generation'
    try:
      last = int(counter.read_text().strip())
    except (FileNotFoundError, ValueError):
      last = -1
    generations = self._generations()
    number = max([last] + [int(g) for g in generations]) + 1
    atomic_write_bytes(counter, f'{number}\n'.encode())
    generation = f'{number:06d}'
    (self._root / generation).mkdir()
    fsync_dir(self._root)
    self._writer = EpisodeStore(self._root / generation).writer(self._name)
    self._current, self._current_bytes = generation, 0

  def _ids(self) -> List[str]:
    ids = []
    for generation in self._generations():
      store = self._store(generation)
      store.refresh()
      ids.extend(f'{generation}/{i.episode_id}' for i in store.index())
    return ids

  def _split(self, episode_id: str) -> Tuple[str, str]:
    generation, sep, store_id = episode_id.partition('/')
    if not sep or not _GENERATION_RE.match(generation):
      raise KeyError(episode_id)
    return generation, store_id

  # --------------------------------------------------------------------------
  # The control loop's side.

  def bytes_used(self) -> int:
    """Bytes the episodes not yet pruned take on disk."""
    with self._lock:
      return sum(self._size(g) for g in self._generations())

  def append(self, episode: Episode) -> str:
    """Stores `episode` durably; returns its id.

    OutboxFull at the size cap, OSError for a disk error (e.g. ENOSPC; nothing
    written before is lost), ValueError if it can't be stored.
    """
    estimate = episode_nbytes(episode)
    with self._lock:
      used = sum(self._size(g) for g in self._generations())
      if used + estimate > self._max_bytes:
        raise OutboxFull(
          f'the outbox holds {used / 2**20:.1f} MiB of undelivered episodes (cap '
          f'{self._max_bytes / 2**20:.1f} MiB)'
        )
      if self._writer is None or self._writer.closed or self._current_bytes >= _GENERATION_BYTES:
        if self._writer is not None:
          self._writer.close()
          self._writer = None
        self._new_generation()
      try:
        store_id = self._writer.append(episode)
      except OSError:
        # The writer closed itself (its files may end in a torn record, which no
        # reader sees); the next append starts a new generation.
        self._writer.close()
        raise
      self._current_bytes += estimate
      return f'{self._current}/{store_id}'

  # --------------------------------------------------------------------------
  # The sender's side.

  def _done(self, episode_id: str) -> bool:
    parts = self._delivered.get(episode_id, set())
    return REJECTED in parts or all(p in parts for p in PARTS)

  def pending(self) -> List[str]:
    """Ids of buffered episodes not yet fully delivered, oldest first."""
    with self._lock:
      return [i for i in self._ids() if not self._done(i)]

  def counts(self) -> Dict[str, int]:
    """Episodes on disk now ('buffered', of them 'pending'), and the parts delivered
    ('store') and episodes rejected since this outbox was opened."""
    with self._lock:
      ids = self._ids()
      return dict(
        buffered=len(ids),
        **self._marked,
        pending=sum(not self._done(i) for i in ids),
      )

  def read(self, episode_id: str) -> Episode:
    """The episode; KeyError if unknown, CorruptRecordError if damaged on disk."""
    generation, store_id = self._split(episode_id)
    with self._lock:
      return self._store(generation).read(store_id)

  def delivered(self, episode_id: str) -> Set[str]:
    with self._lock:
      return set(self._delivered.get(episode_id, set()))

  def reason(self, episode_id: str) -> Optional[str]:
    """Why the episode was rejected, when it was."""
    with self._lock:
      return self._reasons.get(episode_id)

  def mark(self, episode_id: str, part: str, reason: Optional[str] = None) -> None:
    """Records durably that `part` of the episode was delivered (or that it was rejected).

    Memory first: a disk error (raised) does not make this process send the part
    again; only a restart before the ledger could be written would.
    """
    line = f'{part} {episode_id}'
    if reason:
      reason = ' '.join(str(reason).split())[:1000]
      line += f' {reason}'
    with self._lock:
      if part not in self._delivered.setdefault(episode_id, set()):
        self._marked[part] += 1
      self._delivered[episode_id].add(part)
      if reason:
        self._reasons[episode_id] = reason
      # After a torn write, start on a fresh line so this one still parses.
      data = ('\n' if self._ledger_torn else '') + line + '\n'
      self._ledger_torn = True
      os.write(self._ledger, data.encode())
      os.fsync(self._ledger)
      self._ledger_torn = False
      if part == REJECTED:
        # Kept after the episode is pruned: what the operator looks at.
        fd = os.open(self._rejected_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
          os.write(fd, f'{time.time():.3f} {episode_id} {reason or "?"}\n'.encode())
          os.fsync(fd)
        finally:
          os.close(fd)

  def prune(self) -> int:
    """Deletes the generations no longer written whose episodes are all done; how many."""
    with self._lock:
      pruned = []
      for generation in self._generations():
        store = self._store(generation)
        store.refresh()
        done = all(self._done(f'{generation}/{i.episode_id}') for i in store.index())
        if done and generation == self._current:
          if not len(store):
            continue  # Nothing written to it yet.
          self._writer.close()  # Retired: the next append starts a new generation.
          self._writer, self._current = None, None
        if done:
          shutil.rmtree(self._root / generation)
          self._stores.pop(generation, None)
          pruned.append(generation)
      if pruned:
        fsync_dir(self._root)
        self._compact_ledger()
      return len(pruned)

  def _compact_ledger(self) -> None:
    """Rewrites the ledger with the lines of the episodes still on disk (lock held)."""
    live = set(self._generations())
    kept = {i: p for i, p in self._delivered.items() if i.partition('/')[0] in live}
    lines = [
      f'{part} {i}' + (f' {self._reasons[i]}' if part == REJECTED and i in self._reasons else '')
      for i, parts in kept.items()
      for part in sorted(parts)
    ]
    try:
      atomic_write_bytes(self._ledger_path, ''.join(line + '\n' for line in lines).encode())
    except OSError as e:
      # The old ledger stays whole, and its extra lines name pruned episodes only.
      if e.errno != errno.ENOSPC:
        raise
      log.warning('outbox %s: disk full; the ledger is compacted later', self._dir)
      return
    os.close(self._ledger)
    self._ledger = os.open(self._ledger_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    self._ledger_torn = False
    self._delivered = kept
    self._reasons = {i: r for i, r in self._reasons.items() if i in kept}

  def close(self) -> None:
    with self._lock:
      if self._writer is not None:
        self._writer.close()
      if self._ledger >= 0:
        os.close(self._ledger)
        self._ledger = -1
      if self._lock_fd >= 0:
        os.close(self._lock_fd)
        self._lock_fd = -1
