"""Robot side: delivers the outbox to the program, episode by episode, with retries and backoff.

Each episode goes to the program's store (the learner's `append_external_episode`),
and, once the program accepted it there, its n-step transitions go to the external
replay table (acme's NStepTransitionAdder).
"""

import dataclasses
import math
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple

from agents.common.logs import get_logger
from launch.robot.link import ProgramLink, ProgramUnavailable, one_line
from launch.robot.outbox import REJECTED, EpisodeOutbox
from launch.robot.spec import SpecMismatchError
from launch.robot.wire import EPISODE_KEY, episode_timesteps, episode_to_data
from launch.store.episodes import CorruptRecordError, Episode

log = get_logger('external')


@dataclasses.dataclass
class _Insert:
  """A replay insert running on its own thread."""

  episode_id: str
  address: str
  thread: threading.Thread
  deadline: float  # time.monotonic() by which it should have finished.
  outcome: Dict[str, BaseException]
  warned: bool = False


class Sender(threading.Thread):
  """Delivers the outbox: each episode to the program's store, then to its replay.

  Episodes go independently: one that fails again and again waits on its own
  backoff (up to `max_backoff_s`) while later ones still go; one the program
  rejects, or that can't be read back from the outbox, is set aside (the ledger
  records it as rejected, with the reason). Two failures in a row mean the program
  is away: then everything waits, with exponential backoff, and the link is
  re-read (a relaunched program is found).

  The store part is exactly once: each episode carries its outbox key
  (metadata EPISODE_KEY) and the program stores a key once, acknowledging a
  resend as a duplicate. The replay part goes only after the store accepted the
  episode, on a helper thread, one insert at a time, and is never retried while an
  earlier attempt may still be running: acme's adder waits without limit for a
  server that vanished mid-episode, and such an attempt is waited for (the store
  part goes on meanwhile) or, once the program's replay address changed (a
  relaunch: the old server and what it held are gone), abandoned.
  """

  def __init__(
    self,
    outbox: EpisodeOutbox,
    link: ProgramLink,
    make_adder: Callable[[Any], Any],
    name: str,
    rpc_timeout_s: float = 10.0,
    max_backoff_s: float = 30.0,
    initial_backoff_s: float = 0.5,
    on_fatal: Optional[Callable[[BaseException], None]] = None,
  ):
    super().__init__(name='episode-sender', daemon=True)
    self._outbox = outbox
    self._link = link
    self._make_adder = make_adder
    self._name = name
    self._timeout = rpc_timeout_s
    self._max_backoff = max_backoff_s
    self._initial_backoff = initial_backoff_s
    self._on_fatal = on_fatal
    self._halt = threading.Event()
    self._wake = threading.Event()
    self._idle = threading.Event()
    self._insert: Optional[_Insert] = None
    self._retry: Dict[Tuple[str, str], Tuple[int, float]] = {}  # (id, part) -> failures, when.
    self.failures = 0
    self.last_error: Optional[str] = None
    self.last_delivery: Optional[float] = None  # time.time() of the last delivered part.
    self.inserts_started = 0

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
      self._collect_insert()
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
      except SpecMismatchError as e:
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
      # Until an insert ends or a backoff runs out (or a new episode arrives).
      self._wake.wait(self._next_retry())  # An insert wakes it when it ends.
      self._wake.clear()

  def _pass(self, pending) -> bool:
    """Tries each pending episode once; True if the program looks away (two failures in a row)."""
    in_a_row = 0
    for episode_id in pending:
      if self._halt.is_set():
        return False
      done = self._outbox.delivered(episode_id)
      part = 'store' if 'store' not in done else 'replay'
      if part == 'replay' and (REJECTED in done or not self._due(episode_id, 'replay')):
        continue
      if not self._due(episode_id, part):
        continue
      try:
        if part == 'store':
          self._deliver_store(episode_id)
        else:
          self._start_insert(episode_id)
        in_a_row = 0
      except SpecMismatchError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        self._failed(episode_id, part, e, len(pending))
        in_a_row += 1
        if in_a_row >= 2:
          return True
    return False

  # --------------------------------------------------------------------------
  # Per-episode retries.

  def _due(self, episode_id: str, part: str) -> bool:
    entry = self._retry.get((episode_id, part))
    return entry is None or time.monotonic() >= entry[1]

  def _next_retry(self) -> float:
    """Seconds until a retry is due (at most 1); replay retries wait for a running insert."""
    now = time.monotonic()
    waits = [
      when - now
      for (_, part), (_, when) in self._retry.items()
      if part == 'store' or self._insert is None
    ]
    return min([max(0.01, w) for w in waits] + [1.0])

  def _failed(self, episode_id: str, part: str, error: BaseException, waiting: int) -> None:
    count = self._retry.get((episode_id, part), (0, 0.0))[0] + 1
    delay = min(self._initial_backoff * 2 ** (count - 1), self._max_backoff)
    self._retry[(episode_id, part)] = (count, time.monotonic() + delay)
    self.failures += 1
    self.last_error = one_line(error)
    if self.failures == 1 or self.failures % 10 == 0 or count == 1:
      log.warning(
        '%s of %s failed (%s); %d episode(s) wait; it is retried in %.1f s (%d failures)',
        part,
        episode_id,
        self.last_error,
        waiting,
        delay,
        self.failures,
      )

  def _succeeded(self, episode_id: str, part: str) -> None:
    self._retry.pop((episode_id, part), None)
    self.last_delivery = time.time()

  def _prune(self) -> None:
    try:
      self._outbox.prune()
    except OSError as e:
      log.warning('could not prune the outbox %s: %s', self._outbox.directory, e)

  # --------------------------------------------------------------------------
  # The store part.

  def _read(self, episode_id: str) -> Optional[Episode]:
    """The episode, or None after setting aside one that can't be read back."""
    try:
      return self._outbox.read(episode_id)
    except (CorruptRecordError, KeyError) as e:
      reason = f'unreadable in the outbox ({one_line(e)})'
      log.error('episode %s is %s; set aside', episode_id, reason)
      self._outbox.mark(episode_id, REJECTED, reason)
      return None

  def _deliver_store(self, episode_id: str) -> None:
    episode = self._read(episode_id)
    if episode is None:
      return
    generation, learner, _ = self._link.connect()
    data = episode_to_data(episode)
    data['metadata'].update({EPISODE_KEY: self._outbox.key(episode_id), 'sent_time': time.time()})
    try:
      reply = learner.append_external_episode(self._name, data)
    except Exception:
      self._link.invalidate(generation)
      raise
    status = reply.get('status') if isinstance(reply, dict) else None
    if status == 'rejected':
      # Validated here, so a bug or a changed program: set it aside, go on with the others.
      reason = str(reply.get('reason'))
      log.error('the program rejected episode %s: %s; set aside', episode_id, reason)
      self._outbox.mark(episode_id, REJECTED, reason)
      self._succeeded(episode_id, 'store')
      return
    if status not in ('stored', 'duplicate'):
      raise ProgramUnavailable(f'the program answered {reply!r:.200}')
    self._outbox.mark(episode_id, 'store')
    self._succeeded(episode_id, 'store')

  # --------------------------------------------------------------------------
  # The replay part.

  def _start_insert(self, episode_id: str) -> None:
    """Starts the replay insert of a stored episode, unless one is still running."""
    running = self._insert
    if running is not None and not running.thread.is_alive():
      self._collect_insert()  # It may have been this episode's.
      running = None
    if running is not None:
      _, _, endpoints = self._link.connect()
      if running.address == endpoints.replay or time.monotonic() < running.deadline:
        return  # It may still insert: never a second attempt next to it.
      log.warning(
        'replay insert of %s into %s hung; the program moved to %s: abandoned, sent again there',
        running.episode_id,
        running.address,
        endpoints.replay,
      )
      self._retry.pop((running.episode_id, 'replay'), None)
      self._insert = None
      if running.episode_id != episode_id:
        return  # That one goes first, in the next pass.
    if self._outbox.delivered(episode_id) & {'replay', REJECTED}:
      return
    episode = self._read(episode_id)
    if episode is None:
      return
    _, _, endpoints = self._link.connect()
    outcome: Dict[str, BaseException] = {}
    thread = threading.Thread(
      target=self._insert_work,
      args=(endpoints.replay, episode, outcome),
      name='replay-insert',
      daemon=True,
    )
    deadline = time.monotonic() + self._timeout + 0.01 * episode.length
    self._insert = _Insert(episode_id, endpoints.replay, thread, deadline, outcome)
    self.inserts_started += 1
    thread.start()

  def _insert_work(self, address: str, episode: Episode, outcome: Dict[str, BaseException]):
    import reverb  # Late: heavy, and only the sender needs it.

    try:
      client = reverb.Client(address)
      client.server_info(timeout=max(1, int(math.ceil(self._timeout))))  # Fails fast if down.
      adder = self._make_adder(client)
      first, rest = episode_timesteps(episode)
      adder.add_first(first)
      # The LAST step makes the adder flush and wait for the server's confirmation.
      for action, timestep in rest:
        adder.add(action, timestep)
    except BaseException as e:  # pylint: disable=broad-except
      outcome['error'] = e
    finally:
      self._wake.set()

  def _collect_insert(self) -> None:
    """Records the outcome of a finished insert; warns once about one past its deadline."""
    running = self._insert
    if running is None:
      return
    if running.thread.is_alive():
      if not running.warned and time.monotonic() > running.deadline:
        running.warned = True
        self.last_error = f'replay insert of {running.episode_id} into {running.address} hangs'
        log.warning(
          '%s; the replay part waits for it (never a second attempt next to it), '
          'the store part goes on',
          self.last_error,
        )
      return
    self._insert = None
    if 'error' in running.outcome:
      self._failed(running.episode_id, 'replay', running.outcome['error'], 1)
      return
    try:
      self._outbox.mark(running.episode_id, 'replay')
    except OSError as e:  # Marked in memory: this process does not send it again.
      log.warning('could not record the replay of %s in the ledger: %s', running.episode_id, e)
    self._succeeded(running.episode_id, 'replay')
