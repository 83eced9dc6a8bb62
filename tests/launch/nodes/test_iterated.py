"""The iterated collect/infer schedule, driven without processes: a store that is a count,
a clock the test sets, and a learner that counts its steps."""

import random
import threading
from typing import List, Tuple

from launch.nodes.iterated import LEASE_SECONDS, IteratedSchedule


class Store:
  """The run's store as the schedule sees it: how many episodes it holds."""

  def __init__(self, size: int = 0):
    self.size = size
    self.reads = 0

  def __call__(self) -> int:
    self.reads += 1
    return self.size


class Clock:
  def __init__(self, now: float = 1000.0):
    self.now = now

  def __call__(self) -> float:
    return self.now


class Learner:
  """Counts steps; records each infer phase's start as (iteration, reinitialise)."""

  def __init__(self, steps: int = 0):
    self._steps = steps
    self.infers: List[Tuple[int, bool]] = []
    self.collect_polls = 0

  def steps(self) -> int:
    return self._steps

  def step(self) -> None:
    self._steps += 1

  def start_infer(self, iteration: int, reinitialise: bool) -> None:
    self.infers.append((iteration, reinitialise))

  def collecting(self) -> None:
    self.collect_polls += 1


def _schedule(store, clock=None, **kw):
  args = dict(iterations=3, collect_episodes=4, infer_steps=10, warm_start=True)
  args.update(kw)
  return IteratedSchedule(store_size=store, clock=clock or Clock(), **args)


def test_n_actors_reserve_exactly_collect_episodes():
  store = Store(size=5)  # Episodes from earlier iterations: the target counts from them.
  schedule = _schedule(store, collect_episodes=4, collect_target=9)
  # Three actors ask at once, each holding its grant while its episode runs.
  assert [schedule.reserve_episode(a) for a in ['a0', 'a1', 'a2']] == [True, True, True]
  assert schedule.collect_status() == {'phase': 'collect', 'iteration': 0, 'wanted': 4}
  store.size += 2  # a0 and a1 store their episodes.
  # a1's grant counts until a1 asks again (its episode may still be on its way to the store).
  assert not schedule.reserve_episode('a0')
  assert schedule.reserve_episode('a1')  # 7 stored + a2 + a1 running = 9: the last one.
  assert not schedule.reserve_episode('a0')
  store.size += 2  # a2 and a1 store theirs.
  assert [schedule.reserve_episode(a) for a in ['a0', 'a1', 'a2']] == [False, False, False]
  assert store.size == 9
  assert schedule.collect_status()['wanted'] == 0


def test_many_actors_in_any_order_never_overshoot_the_target():
  rng = random.Random(0)
  for trial in range(20):
    store = Store(size=trial)
    schedule = _schedule(store, collect_episodes=7, collect_target=trial + 7)
    actors = [f'a{i}' for i in range(rng.randint(1, 6))]
    running = set()
    for _ in range(500):
      actor = rng.choice(actors)
      if actor in running and rng.random() < 0.5:
        running.discard(actor)
        store.size += 1  # Its episode ends and is stored; it asks again later.
      elif actor not in running and schedule.reserve_episode(actor):
        running.add(actor)
      assert store.size + len(running) <= trial + 7
    for _ in sorted(running):
      store.size += 1
    assert store.size == trial + 7, (trial, actors)


def test_grants_lapse_after_the_lease():
  store, clock = Store(), Clock()
  schedule = _schedule(store, clock, collect_episodes=2, collect_target=2)
  assert schedule.reserve_episode('a0') and schedule.reserve_episode('a1')
  assert not schedule.reserve_episode('a2')  # Both episodes are granted.
  clock.now += LEASE_SECONDS - 1
  assert not schedule.reserve_episode('a2')
  clock.now += 1  # a0 and a1 died with their grants: the grants lapse.
  assert schedule.reserve_episode('a2')
  assert schedule.reserve_episode('a3')
  assert not schedule.reserve_episode('a4')


def test_nothing_is_granted_outside_a_started_collect_phase():
  store = Store()
  schedule = _schedule(store)
  assert schedule.phase == 'collect' and schedule.collect_target is None
  assert not schedule.reserve_episode('a0')
  assert schedule.collect_status() == {'phase': 'collect', 'iteration': 0, 'wanted': 0}


def _actors_between_polls(schedule, store, actors, seen):
  """`wait` for `run`: while the learner polls, the actors collect what they are granted."""

  def wait(stop, seconds):
    del seconds
    seen.append(schedule.collect_status())
    granted = [a for a in actors if schedule.reserve_episode(a)]
    store.size += len(granted)  # Each granted episode ends and is stored before the next poll.
    return stop.is_set()

  return wait


def test_phases_go_collect_infer_collect_done():
  store, learner, seen = Store(size=1), Learner(), []
  schedule = _schedule(store, iterations=2, collect_episodes=3, infer_steps=10)
  schedule.run(
    threading.Event(), learner, _actors_between_polls(schedule, store, ['a0', 'a1'], seen)
  )
  assert schedule.done and schedule.phase == 'done'
  assert schedule.iteration == 2 and schedule.collect_target is None
  assert store.size == 1 + 2 * 3  # Two actors, exactly three episodes per iteration.
  assert learner.steps() == 20  # Up to the next multiple of infer_steps, per iteration.
  assert learner.infers == [(0, False), (1, False)]  # Warm start: never reinitialised.
  assert learner.collect_polls >= 2
  phases = [(s['phase'], s['iteration']) for s in seen]
  assert phases[0] == ('collect', 0) and ('collect', 1) in phases
  assert seen[0]['wanted'] == 3
  assert schedule.collect_status() == {'phase': 'done', 'iteration': 2, 'wanted': 0}
  assert not schedule.reserve_episode('a0')


def test_actors_see_the_infer_phase_while_the_learner_trains():
  store = Store()
  schedule = _schedule(store, iterations=1, collect_episodes=1, infer_steps=3)
  during_infer = []

  class Watching(Learner):
    def step(self):
      during_infer.append((schedule.collect_status(), schedule.reserve_episode('a0')))
      super().step()

  schedule.run(threading.Event(), Watching(), _actors_between_polls(schedule, store, ['a0'], []))
  assert [s['phase'] for s, _ in during_infer] == ['infer'] * 3
  assert not any(granted for _, granted in during_infer)
  assert all(s['wanted'] == 0 for s, _ in during_infer)


def test_cold_start_reinitialises_from_the_second_iteration():
  store, learner = Store(), Learner(steps=25)
  schedule = _schedule(store, iterations=3, collect_episodes=1, infer_steps=10, warm_start=False)
  schedule.run(threading.Event(), learner, _actors_between_polls(schedule, store, ['a0'], []))
  assert learner.infers == [(0, False), (1, True), (2, True)]
  assert learner.steps() == 50  # 25 -> 30 -> 40 -> 50.


def test_resume_continues_from_a_saved_iteration_and_collect_target():
  store, learner, stop = Store(size=6), Learner(), threading.Event()
  first = _schedule(store, iterations=3, collect_episodes=4)
  polls = _actors_between_polls(first, store, ['a0'], [])

  def stop_mid_iteration_1(stop_event, seconds):
    polls(stop_event, seconds)
    if first.iteration == 1 and store.size == 12:  # Two of iteration 1's four stored.
      stop_event.set()
    return stop_event.is_set()

  first.run(stop, learner, stop_mid_iteration_1)
  saved = first.state()
  assert saved == {'iteration': 1, 'collect_target': 14}
  assert learner.infers == [(0, False)] and learner.steps() == 10
  seen = []
  resumed = _schedule(store, iterations=3, collect_episodes=4, **saved)
  resumed.run(threading.Event(), learner, _actors_between_polls(resumed, store, ['a0'], seen))
  # Iteration 1 collects only up to its saved target, iteration 2 four more.
  assert seen[0] == {'phase': 'collect', 'iteration': 1, 'wanted': 2}
  assert store.size == 14 + 4
  assert learner.infers == [(0, False), (1, False), (2, False)]
  assert learner.steps() == 30
  assert resumed.done and resumed.state() == {'iteration': 3, 'collect_target': None}


def test_resume_with_every_iteration_done_is_done_at_once():
  store, learner = Store(), Learner()
  schedule = _schedule(store, iterations=2, iteration=2)
  schedule.run(threading.Event(), learner, lambda stop, s: stop.is_set())
  assert schedule.done and learner.infers == [] and store.reads == 0


def test_stop_while_collecting_keeps_the_position():
  store, learner = Store(size=3), Learner()
  schedule = _schedule(store, iterations=2, collect_episodes=5)
  stop = threading.Event()

  def wait(stop_event, seconds):
    del seconds
    stop_event.set()
    return True

  schedule.run(stop, learner, wait)
  assert schedule.phase == 'collect' and not schedule.done
  assert schedule.state() == {'iteration': 0, 'collect_target': 8}
  assert learner.infers == []
