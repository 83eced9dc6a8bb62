"""Iterated collect-and-infer: the schedule of collect and infer phases the learner paces.

Each iteration collects exactly `collect_episodes` more episodes into the run's store (the
actors ask for each one, see `reserve_episode`), then trains `infer_steps` learner steps on
everything stored; after `iterations` of them the schedule is done. Actors follow the phase
through `collect_status`; the learner drives it with `run`.
"""

import threading
import time
from typing import Any, Callable, Dict, Optional, Protocol, Tuple

from agents.common.logs import get_logger
from launch.nodes.stopping import wait_for_stop

# How long a granted episode of a collect phase may take before its grant lapses.
LEASE_SECONDS = 600.0

log = get_logger('learner')


class Trainee(Protocol):
  """What the schedule drives: the learner's step count and updates."""

  def steps(self) -> int:
    """Learner steps so far."""

  def step(self) -> None:
    """One learner update (it may return without one when sampling timed out)."""

  def start_infer(self, iteration: int, reinitialise: bool) -> None:
    """Before an infer phase: fresh parameters if `reinitialise`; iteration-dependent settings."""

  def collecting(self) -> None:
    """Called every poll while a collect phase waits for its episodes (e.g. to flush counts)."""


class IteratedSchedule:
  """The phase ('collect', 'infer', 'done'), the iteration and the episode grants.

  `store_size` returns the number of episodes in the run's store now (re-reading it);
  `clock` gives seconds for lease expiry. `iteration` and `collect_target` restore a
  position saved by `state()`.
  """

  def __init__(self, *, iterations: int, collect_episodes: int, infer_steps: int,
               warm_start: bool, store_size: Callable[[], int],
               clock: Callable[[], float] = time.time, lease_seconds: float = LEASE_SECONDS,
               iteration: int = 0, collect_target: Optional[int] = None):
    self._iterations = iterations
    self._collect_episodes = collect_episodes
    self._infer_steps = infer_steps
    self._warm_start = warm_start
    self._store_size = store_size
    self._clock = clock
    self._lease_seconds = lease_seconds
    self._iteration = iteration
    # The store size that ends this iteration's collection (None until it starts).
    self._collect_target = collect_target
    self._phase = 'collect'
    # Episodes granted to actors and not yet stored: actor -> (iteration, time granted).
    # They make each collect phase gather exactly `collect_episodes`.
    self._leases: Dict[str, Tuple[int, float]] = {}
    self._lock = threading.Lock()  # Store reads and grants.

  @property
  def iteration(self) -> int:
    return self._iteration

  @property
  def collect_target(self) -> Optional[int]:
    return self._collect_target

  @property
  def phase(self) -> str:
    return self._phase

  @property
  def done(self) -> bool:
    return self._phase == 'done'

  def state(self) -> Dict[str, Any]:
    """The position to checkpoint (restored through the constructor)."""
    return {'iteration': self._iteration, 'collect_target': self._collect_target}

  def collect_status(self) -> Dict[str, Any]:
    """The phase actors follow: collect episodes only while 'wanted' > 0."""
    wanted = 0
    if self._phase == 'collect' and self._collect_target is not None:
      with self._lock:
        wanted = max(0, self._collect_target - self._store_size())
    return {'phase': self._phase, 'iteration': self._iteration, 'wanted': wanted}

  def reserve_episode(self, actor: str) -> bool:
    """May `actor` start one more episode of this collect phase?

    Granted only while stored plus granted-in-progress episodes fall short of
    the target, so N actors collect exactly `collect_episodes`, not up to N-1
    more. Asking again releases the actor's previous grant (its episode is
    stored by then); a grant lapses after `lease_seconds` (its actor died).
    """
    with self._lock:
      if self._phase != 'collect' or self._collect_target is None:
        return False
      stored = self._store_size()
      now = self._clock()
      self._leases.pop(actor, None)
      active = sum(1 for it, t in self._leases.values()
                   if it == self._iteration and now - t < self._lease_seconds)
      if stored + active >= self._collect_target:
        return False
      self._leases[actor] = (self._iteration, now)
      return True

  def run(self, stop: threading.Event, trainee: Trainee,
          wait: Callable[[threading.Event, float], bool] = wait_for_stop) -> None:
    """Collects, then infers, per iteration, until all are done or `stop` is set."""
    while self._iteration < self._iterations and not stop.is_set():
      if self._collect_target is None:
        with self._lock:
          self._collect_target = self._store_size() + self._collect_episodes
      self._phase = 'collect'
      log.info('iteration %d: collecting until the store holds %d episodes', self._iteration,
               self._collect_target)
      while not stop.is_set():
        with self._lock:
          collected = self._store_size() >= self._collect_target
        if collected:
          break
        trainee.collecting()  # E.g. the counts of the last infer phase.
        wait(stop, 0.5)
      if stop.is_set():
        return
      self._phase = 'infer'
      trainee.start_infer(self._iteration,
                          reinitialise=not self._warm_start and self._iteration > 0)
      end = (trainee.steps() // self._infer_steps + 1) * self._infer_steps
      log.info('iteration %d: inferring on all stored episodes up to learner step %d',
               self._iteration, end)
      while trainee.steps() < end and not stop.is_set():
        trainee.step()
      if stop.is_set():
        return
      self._iteration += 1
      self._collect_target = None
    self._phase = 'done'
    log.info('all %d iterations done', self._iterations)
