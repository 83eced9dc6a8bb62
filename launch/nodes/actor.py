"""Actor nodes: an acme EnvironmentLoop with a stochastic policy feeding the replay."""

import logging
import pathlib
import threading
from typing import Any, Dict, Optional

import acme
import launchpad as lp
import numpy as np
from acme import core, specs
from acme.utils import counting

from agents.common.logs import get_logger
from environments.actions import ExecutedActionActor
from launch import experiment
from launch.budget import Budget
from launch.logs import make_logger
from launch.nodes.counter import flush_counts
from launch.nodes.process import announce_process, quiet_node_logs
from launch.nodes.stopping import (
  close_adders,
  exit_process_if_stuck,
  run_until_stopped,
  wait_for_stop,
)
from launch.run_dir import RunDir
from launch.store.episodes import EpisodeStore
from launch.store.recorder import EpisodeRecorder
from launch.tasks import assign_task


class _Stopped(Exception):
  """The program stopped during an episode."""


class _StopsAtNextStep(core.Actor):
  """Ends the episode in progress at its next step once `stop` is set.

  Without it an episode runs on after a stop (a 1000-step episode takes seconds), and a
  thread abandoned on a parked insert acts on when the server goes, until its writer
  blocks again, possibly inside JAX as the interpreter exits, which aborts it.
  """

  def __init__(self, actor: core.Actor):
    self._actor = actor
    self.stop: Optional[threading.Event] = None
    self.steps_in_episode = 0  # acme's loop counts an episode's steps only at its end

  def select_action(self, observation):
    if self.stop is not None and self.stop.is_set():
      raise _Stopped()
    return self._actor.select_action(observation)

  def observe_first(self, timestep):
    self.steps_in_episode = 0
    self._actor.observe_first(timestep)

  def observe(self, action, next_timestep):
    self.steps_in_episode += 1
    self._actor.observe(action, next_timestep)

  def update(self, wait: bool = False):
    self._actor.update(wait)


def actor_seed(seed: int, actor_id: int, steps_before: int) -> int:
  """The seed of an actor's environment and exploration noise.

  A fresh run uses `seed * 1000 + actor_id + 1`. An actor that starts after `steps_before`
  environment steps (a relaunched run, a restarted actor) mixes those in: with the fresh
  seed it would replay the first launch's start states and noise, duplicating experience.
  """
  base = seed * 1000 + actor_id + 1
  if steps_before <= 0:
    return base
  return int(np.random.SeedSequence([base, int(steps_before)]).generate_state(1)[0] % 2**31)


def _steps_so_far(counter: Any, log: Optional[logging.Logger] = None) -> int:
  """The program's environment steps so far (restored counts on a relaunch), 0 if unknown."""
  try:
    return int(counter.get_counts().get('actor_steps', 0))
  except Exception as e:  # pylint: disable=broad-except
    (log or get_logger('actor')).warning(
      'could not read the step count (%s); using the fresh-run seed', e
    )
    return 0


class ActorWorker:
  """Runs episodes until the program stops; each actor has its own seeded environment."""

  def __init__(
    self, config: Dict[str, Any], actor_id: int, replay: Any, learner: Any, counter: Any
  ):
    label = f'actor_{actor_id}'
    self._log = get_logger(label)
    quiet_node_logs()
    announce_process(label)
    cfg = experiment.config_from_dict(config)
    task = assign_task(actor_id, cfg.task_weights)  # Spread over the run's tasks by weight.
    self.task = task
    builder = experiment.make_builder(cfg, task)
    steps_before = _steps_so_far(counter, self._log)
    seed = actor_seed(cfg.seed, actor_id, steps_before)
    if steps_before:
      self._log.info(
        "seed %d: starting after %d env steps, so its episodes do not repeat an earlier launch's",
        seed,
        steps_before,
      )
    self.seed = seed
    env = experiment.make_env(cfg, seed=seed, task=task)
    if len(cfg.task_names) > 1:
      self._log.info('acting on task %s', task)
    # Iterated collect-and-infer trains on the store alone: no replay inserts.
    adder = None if cfg.mode == 'iterated' else builder.make_adder(replay)
    self._adders = [adder]
    self._actor = builder.make_actor(learner, adder, seed=seed, version_name='learner_steps')
    self._learner = learner
    self._iterated = cfg.mode == 'iterated'
    self._step_limit = Budget.from_config(cfg).actor_steps_limit
    self._iteration = None
    self._label = label
    observers = []
    if cfg.store_episodes:
      writer = EpisodeStore(RunDir(cfg.run_dir).store).writer(label)
      observers.append(
        EpisodeRecorder(
          writer,
          metadata={'source': label, 'task': task, 'seed': seed},
          policy_version=lambda: self._actor.policy_version,
        )
      )
    self._logger = make_logger(pathlib.Path(cfg.run_dir), label, steps_key='actor_steps')
    self._counter = counting.Counter(counter, prefix='actor')
    # Replay and the store get the action the environment executed (clipped to the
    # bounds), as attached robots' episodes have it: one meaning for `action`.
    executed = ExecutedActionActor(self._actor, specs.make_environment_spec(env).actions)
    self._stoppable = _StopsAtNextStep(executed)
    self._loop = acme.EnvironmentLoop(
      env,
      self._stoppable,
      counter=self._counter,
      logger=self._logger,
      label=label,
      observers=observers,
    )

  def _may_collect(self, stop: threading.Event) -> bool:
    """Iterated mode: wait for the learner's collect phase (fresh parameters each iteration)."""
    if not self._iterated:
      return True
    while not stop.is_set():
      status = self._learner.collect_status()
      if status['phase'] == 'collect' and status['wanted'] > 0:
        if status['iteration'] != self._iteration:
          self._actor.update(wait=True)
          self._iteration = status['iteration']
        if self._learner.reserve_episode(self._label):
          return True
      wait_for_stop(stop, 0.5)
    return False

  def _episodes(self, stop: threading.Event):
    while not stop.is_set():
      try:
        if not self._may_collect(stop):
          return
        # run_episode, not run(): run() installs signal handlers, which only
        # the main thread may do, and Launchpad already handles the signals.
        self._logger.write(self._loop.run_episode())
        # Sent now: idle between collect phases (or at the budget), it would send nothing.
        counts = flush_counts(self._counter)
        if self._budget_spent(counts):
          while not wait_for_stop(stop, 1.0):
            pass
          return
      except _Stopped:
        self._count_cut_episode()
        return
      except Exception:  # pylint: disable=broad-except
        # Replay or learner going away during shutdown interrupts the episode.
        if stop.is_set():
          return
        raise

  def _budget_spent(self, counts: Dict[str, float]) -> bool:
    """Whether the program's env-step budget is spent: acting on would only take the CPU
    from the final evaluation, which the evaluator runs before it stops the program."""
    steps = counts.get('actor_steps', 0)
    if self._step_limit is None or steps < self._step_limit:
      return False
    self._log.info(
      'the budget of %d env steps is spent (%d): no more episodes; the program stops after '
      'its final evaluation',
      self._step_limit,
      steps,
    )
    return True

  def _count_cut_episode(self) -> None:
    """Counts the steps of the episode the stop cut short: the replay holds them."""
    steps = self._stoppable.steps_in_episode
    if not steps:
      return
    try:
      self._counter.increment(steps=steps)
      flush_counts(self._counter)
    except Exception as e:  # pylint: disable=broad-except
      self._log.warning('could not count the last %d steps: %s', steps, e)

  def run(self, stop_event: Optional[threading.Event] = None):
    stop = stop_event or lp.stop_event()
    self._stoppable.stop = stop
    # An insert parked on the rate limiter never returns once the learner has
    # stopped sampling; it must not keep this node alive past shutdown.
    finished = run_until_stopped(self._episodes, stop, grace_seconds=1.0)
    self._log.info('stopped%s', '' if finished else ' (abandoned an in-flight insert)')
    if finished:
      close_adders(self._adders)
    exit_process_if_stuck(finished)
