"""Robot side: delivers the outbox to the program, in order, with retries and backoff.

Each episode goes to the program's store (the learner's `append_external_episode`),
and its n-step transitions to the external replay table (acme's NStepTransitionAdder).
"""

import logging
import math
import threading
import time
from typing import Any, Callable, Dict, Optional

from launch.robot.link import ProgramLink, ProgramUnavailable, one_line
from launch.robot.outbox import EpisodeOutbox
from launch.robot.spec import SpecMismatchError
from launch.robot.wire import EPISODE_KEY, episode_timesteps, episode_to_data
from launch.store.episodes import Episode

log = logging.getLogger('collect_infer.external')


class Sender(threading.Thread):
  """Delivers the outbox in order: each episode to the program's store, then to its replay.

  Failures are retried with exponential backoff (up to `max_backoff_s`),
  reconnecting through the link, so episodes finished while the program was
  away go out once it is back. A replay insert runs on a helper thread with a
  deadline: acme's adder waits without limit for a server that vanished
  mid-episode, and such an attempt is abandoned rather than waited on.
  """

  def __init__(self, outbox: EpisodeOutbox, link: ProgramLink, make_adder: Callable[[Any], Any],
               name: str, rpc_timeout_s: float = 10.0, max_backoff_s: float = 30.0,
               initial_backoff_s: float = 0.5,
               on_fatal: Optional[Callable[[BaseException], None]] = None):
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
    self.failures = 0
    self.last_error: Optional[str] = None
    self.last_delivery: Optional[float] = None  # time.time() of the last delivered episode.

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
        self._idle.set()
        self._wake.wait(1.0)
        self._wake.clear()
        continue
      self._idle.clear()
      for episode_id in pending:
        if self._halt.is_set():
          return
        try:
          self._deliver(episode_id)
          if backoff > self._initial_backoff:
            log.info('delivering again: %s reached the program', episode_id)
          backoff = self._initial_backoff
        except SpecMismatchError as e:
          if self._on_fatal:
            self._on_fatal(e)
          return
        except Exception as e:  # pylint: disable=broad-except
          self.failures += 1
          self.last_error = one_line(e)
          if self.failures == 1 or self.failures % 10 == 0:
            log.warning('delivery of %s failed (%s); %d episode(s) wait; retrying in %.1f s '
                        '(%d failures)', episode_id, self.last_error, len(pending), backoff,
                        self.failures)
          self._halt.wait(backoff)
          backoff = min(2 * backoff, self._max_backoff)
          break

  def _deliver(self, episode_id: str) -> None:
    episode = self._outbox.read(episode_id)
    done = self._outbox.delivered(episode_id)
    generation, learner, endpoints = self._link.connect()
    try:
      if 'store' not in done:
        data = episode_to_data(episode)
        data['metadata'].update({EPISODE_KEY: self._outbox.key(episode_id),
                                 'sent_time': time.time()})
        reply = learner.append_external_episode(self._name, data)
        if reply.get('status') == 'rejected':
          # Validated here, so this is a bug or a changed program: keep the
          # episode in the outbox, record why, and go on with the others.
          log.error('the program rejected episode %s: %s; it stays in %s', episode_id,
                    reply.get('reason'), self._outbox.directory)
          self._outbox.mark(episode_id, 'rejected')
          return
        self._outbox.mark(episode_id, 'store')
      if 'replay' not in done:
        self._insert(endpoints.replay, episode)
        self._outbox.mark(episode_id, 'replay')
    except Exception:
      self._link.invalidate(generation)
      raise
    self.last_delivery = time.time()

  def _insert(self, address: str, episode: Episode) -> None:
    import reverb  # Late: heavy, and only the sender needs it.
    outcome: Dict[str, BaseException] = {}

    def work():
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

    worker = threading.Thread(target=work, name='replay-insert', daemon=True)
    worker.start()
    worker.join(self._timeout + 0.01 * episode.length)
    if worker.is_alive():
      raise ProgramUnavailable(f'replay insert into {address} did not finish; abandoned it')
    if 'error' in outcome:
      raise outcome['error']
