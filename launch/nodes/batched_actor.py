"""An actor node stepping `envs_per_actor` environments with one batched policy call a step.

Its K environments are streams s = actor_id * K + j (j < K): stream s is seeded, adds to
replay through its own n-step adder and stores its episodes under source `actor_{s}`,
exactly as the single-environment actor `actor_{s}` of a run with K times the actors
would. With K = 1 the program runs launch.nodes.actor.ActorWorker instead.
"""

import pathlib
import threading
from typing import Any, Dict, List, Optional

import launchpad as lp
from acme import specs
from acme.utils import counting

from agents.batched_actor import make_batched_actor
from agents.common.logs import get_logger
from launch import experiment
from launch.logs import make_logger
from launch.nodes.actor import _steps_so_far, actor_seed
from launch.nodes.batched_loop import BatchedEnvironmentLoop
from launch.nodes.counter import flush_counts
from launch.nodes.process import announce_process, quiet_node_logs
from launch.nodes.stopping import close_adders, exit_process_if_stuck, run_until_stopped
from launch.run_dir import RunDir
from launch.store.episodes import EpisodeStore
from launch.store.recorder import EpisodeRecorder


def stream_ids(actor_id: int, envs_per_actor: int) -> List[int]:
  """The streams (as single-environment actor ids) of actor `actor_id`'s environments."""
  return [actor_id * envs_per_actor + j for j in range(envs_per_actor)]


class BatchedActorWorker:
  """Runs K environments until the program stops (online and offline-to-online modes)."""

  def __init__(
    self, config: Dict[str, Any], actor_id: int, replay: Any, learner: Any, counter: Any
  ):
    label = f'actor_{actor_id}'
    self._log = get_logger(label)
    quiet_node_logs()
    announce_process(label)
    cfg = experiment.config_from_dict(config)
    if cfg.mode == 'iterated':  # ExperimentConfig.validate refuses it; a direct caller may not.
      raise ValueError('a batched actor does not run in iterated mode')
    builder = experiment.make_builder(cfg)
    steps_before = _steps_so_far(counter, self._log)
    self.streams = stream_ids(actor_id, cfg.envs_per_actor)
    self.seeds = [actor_seed(cfg.seed, s, steps_before) for s in self.streams]
    self._log.info('streams %s, seeds %s', self.streams, self.seeds)
    envs = [experiment.make_env(cfg, seed=seed) for seed in self.seeds]
    # One writer (n-step stream) per environment, as separate actors would have.
    stream_adders = [builder.make_adder(replay) for _ in envs]
    self._adders = stream_adders
    self._actor = make_batched_actor(
      builder, learner, stream_adders, self.seeds, version_name='learner_steps'
    )
    self._writers = []
    observers = []
    for stream, seed in zip(self.streams, self.seeds):
      recorders = []
      if cfg.store_episodes:
        source = f'actor_{stream}'
        writer = EpisodeStore(RunDir(cfg.run_dir).store).writer(source)
        self._writers.append(writer)
        recorders.append(
          EpisodeRecorder(
            writer,
            metadata={'source': source, 'task': cfg.task, 'seed': seed},
            policy_version=lambda: self._actor.policy_version,
          )
        )
      observers.append(recorders)
    self._logger = make_logger(pathlib.Path(cfg.run_dir), label, steps_key='actor_steps')
    self._counter = counting.Counter(counter, prefix='actor')
    self._loop = BatchedEnvironmentLoop(
      envs,
      self._actor,
      specs.make_environment_spec(envs[0]).actions,
      counter=self._counter,
      observers=observers,
    )

  def _episodes(self, stop: threading.Event) -> None:
    try:
      while not stop.is_set():
        results = self._loop.step()
        for result in results:
          result['stream'] = self.streams[result['stream']]
          self._logger.write(result)
        if results:
          flush_counts(self._counter)
    except Exception:  # pylint: disable=broad-except
      # Replay or learner going away during shutdown interrupts the step.
      if stop.is_set():
        return
      raise
    self._count_cut_episodes()

  def _count_cut_episodes(self) -> None:
    """Counts the steps of the episodes the stop cut short: the replay holds them."""
    steps = self._loop.steps_in_progress()
    if not steps:
      return
    try:
      self._counter.increment(steps=steps)
      flush_counts(self._counter)
    except Exception as e:  # pylint: disable=broad-except
      self._log.warning('could not count the last %d steps: %s', steps, e)

  def run(self, stop_event: Optional[threading.Event] = None) -> None:
    stop = stop_event or lp.stop_event()
    # An insert parked on the rate limiter never returns once the learner has
    # stopped sampling; it must not keep this node alive past shutdown.
    finished = run_until_stopped(self._episodes, stop, grace_seconds=3.0)
    self._log.info('stopped%s', '' if finished else ' (abandoned an in-flight insert)')
    if finished:
      close_adders(self._adders)
    exit_process_if_stuck(finished)
