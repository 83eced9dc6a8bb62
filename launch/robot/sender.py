"""Robot side: delivers the outbox to the program's gateway, episode by episode, with retries.

Each episode goes to the program's store through the gateway (AppendEpisode), which
inserts its n-step transitions into the external replay table itself: the robot needs no
Reverb client, and a resent episode is never inserted twice.
"""

import threading
import time
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from agents.common.logs import get_logger
from launch.robot.link import FATAL, ProgramLink, ProgramUnavailable, one_line
from launch.robot.outbox import REJECTED, EpisodeOutbox
from launch.robot.wire import EPISODE_KEY, episode_nbytes, episode_to_data
from launch.store.episodes import CorruptRecordError, Episode

log = get_logger('external')


class Sender(threading.Thread):
  """Delivers the outbox: each episode to the program's store, through its gateway.

  Episodes go independently: one that fails again and again waits on its own
  backoff (up to `max_backoff_s`) while later ones still go; one the program
  rejects, one larger than the program takes (`limits`, from its hello), or one
  that can't be read back from the outbox, is set aside (the ledger records it as
  rejected, with the reason). Two failures in a row mean the program is away: then
  everything waits, with exponential backoff, and the link is re-read (a relaunched
  program is found).

  Delivery is exactly once: each episode carries its outbox key (metadata
  EPISODE_KEY) and the program stores a key once, acknowledging a resend as a
  duplicate (and inserting its transitions into replay only the first time).
  """

  def __init__(
    self,
    outbox: EpisodeOutbox,
    link: ProgramLink,
    name: str,
    limits: Optional[Mapping[str, Any]] = None,
    max_backoff_s: float = 30.0,
    initial_backoff_s: float = 0.5,
    on_fatal: Optional[Callable[[BaseException], None]] = None,
  ):
    super().__init__(name='episode-sender', daemon=True)
    self._outbox = outbox
    self._link = link
    self._name = name
    self._limits = dict(limits or {})
    self._max_backoff = max_backoff_s
    self._initial_backoff = initial_backoff_s
    self._on_fatal = on_fatal
    self._halt = threading.Event()
    self._wake = threading.Event()
    self._idle = threading.Event()
    self._retry: Dict[str, Tuple[int, float]] = {}  # Episode id -> failures, when due.
    self.failures = 0
    self.last_error: Optional[str] = None
    self.last_delivery: Optional[float] = None  # time.time() of the last delivery.

  def notify(self) -> None:
    """A new episode is in the outbox."""
    self._idle.clear()
    self._wake.set()

  def flush(self, timeout_s: float) -> bool:
    """Waits up to `timeout_s` until nothing is pending; returns whether it got there."""
    self._wake.set()
    return self._idle.wait(timeout_s)

  def halt(self) -> None:
    self._halt.set()
    self._wake.set()

  def run(self) -> None:
    backoff = self._initial_backoff
    while not self._halt.is_set():
      pending = self._outbox.pending()
      if not pending:
        self._prune()
        self._idle.set()
        self._wake.wait(1.0)
        self._wake.clear()
        continue
      self._idle.clear()
      try:
        away = self._pass(pending)
      except FATAL as e:
        if self._on_fatal:
          self._on_fatal(e)
        return
      self._prune()
      if away:
        self._halt.wait(backoff)
        backoff = min(2 * backoff, self._max_backoff)
        continue
      if backoff > self._initial_backoff:
        log.info('delivering again: the program answers')
      backoff = self._initial_backoff
      # Until a backoff runs out (or a new episode arrives).
      self._wake.wait(self._next_retry())
      self._wake.clear()

  def _pass(self, pending) -> bool:
    """Tries each pending episode once; True if the program looks away (two failures in a row)."""
    in_a_row = 0
    for episode_id in pending:
      if self._halt.is_set():
        return False
      if not self._due(episode_id):
        continue
      try:
        self._deliver(episode_id)
        in_a_row = 0
      except FATAL:
        raise
      except Exception as e:  # pylint: disable=broad-except
        self._failed(episode_id, e, len(pending))
        in_a_row += 1
        if in_a_row >= 2:
          return True
    return False

  # --------------------------------------------------------------------------
  # Per-episode retries.

  def _due(self, episode_id: str) -> bool:
    entry = self._retry.get(episode_id)
    return entry is None or time.monotonic() >= entry[1]

  def _next_retry(self) -> float:
    """Seconds until a retry is due (at most 1)."""
    now = time.monotonic()
    return min([max(0.01, when - now) for _, when in self._retry.values()] + [1.0])

  def _failed(self, episode_id: str, error: BaseException, waiting: int) -> None:
    count = self._retry.get(episode_id, (0, 0.0))[0] + 1
    delay = min(self._initial_backoff * 2 ** (count - 1), self._max_backoff)
    self._retry[episode_id] = (count, time.monotonic() + delay)
    self.failures += 1
    self.last_error = one_line(error)
    if self.failures == 1 or self.failures % 10 == 0 or count == 1:
      log.warning(
        'delivery of %s failed (%s); %d episode(s) wait; it is retried in %.1f s (%d failures)',
        episode_id,
        self.last_error,
        waiting,
        delay,
        self.failures,
      )

  def _succeeded(self, episode_id: str) -> None:
    self._retry.pop(episode_id, None)
    self.last_delivery = time.time()

  def _prune(self) -> None:
    try:
      self._outbox.prune()
    except OSError as e:
      log.warning('could not prune the outbox %s: %s', self._outbox.directory, e)

  # --------------------------------------------------------------------------
  # Delivery.

  def _read(self, episode_id: str) -> Optional[Episode]:
    """The episode, or None after setting aside one that can't be read back."""
    try:
      return self._outbox.read(episode_id)
    except (CorruptRecordError, KeyError) as e:
      self._set_aside(episode_id, f'unreadable in the outbox ({one_line(e)})')
      return None

  def _set_aside(self, episode_id: str, reason: str) -> None:
    log.error('episode %s: %s; set aside', episode_id, reason)
    self._outbox.mark(episode_id, REJECTED, reason)
    self._succeeded(episode_id)

  def _too_large(self, episode: Episode) -> Optional[str]:
    """Why the program would refuse `episode` for its size (its hello's limits), or None."""
    size = episode_nbytes(episode)
    limit = self._limits.get('max_episode_bytes')
    if isinstance(limit, int) and size > limit:
      return f'{size} bytes of arrays, more than the program takes ({limit})'
    limit = self._limits.get('max_episode_steps')
    if isinstance(limit, int) and episode.length > limit:
      return f'{episode.length} steps, more than the program takes ({limit})'
    return None

  def _deliver(self, episode_id: str) -> None:
    episode = self._read(episode_id)
    if episode is None:
      return
    too_large = self._too_large(episode)
    if too_large:
      self._set_aside(episode_id, too_large)
      return
    generation, gateway, _ = self._link.connect()
    data = episode_to_data(episode)
    data['metadata'].update({EPISODE_KEY: self._outbox.key(episode_id), 'sent_time': time.time()})
    try:
      reply = gateway.append_episode(self._name, data)
    except Exception:
      self._link.invalidate(generation)
      raise
    status = reply.get('status')
    if status == 'rejected':
      # Validated here, so a bug or a changed program: set it aside, go on with the others.
      self._set_aside(episode_id, f'the program rejected it: {reply.get("reason")}')
      return
    if status not in ('stored', 'duplicate'):
      raise ProgramUnavailable(f'the program answered {reply!r:.200}')
    self._outbox.mark(episode_id, 'store')
    self._succeeded(episode_id)
