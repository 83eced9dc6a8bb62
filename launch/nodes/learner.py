"""The learner node: consumes the replay dataset, runs the jitted update, serves variables."""

import pathlib
import re
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import launchpad as lp
import numpy as np
import reverb
from acme.utils import counting

from agents.mpo.builder import EXTERNAL_TABLE
from agents.mpo.labels import make_labeller
from launch import experiment
from launch.checkpointing import Checkpointer
from launch.nodes.counter import flush_counts
from agents.common.errors import ConfigError
from launch.robot.sink import ExternalEpisodeSink
from launch.robot.spec import spec_to_data
from launch.logs import announce_process, make_logger, quiet_node_logs
from launch.run_dir import RunDir
from launch.nodes.stopping import exit_process_if_stuck, run_until_stopped, wait_for_stop
from launch.store.episodes import EpisodeStore
from launch.store.mixing import ExternalShare, MixedBatches
from launch.store.sampling import StoreSampler


LEARNER_STEPS = 'learner_steps'
# How long a granted episode of a collect phase may take before its grant lapses.
LEASE_SECONDS = 600.0


def load_init_checkpoint(path: str) -> Dict[str, Any]:
  """A checkpoint payload from a checkpoint file or a run directory (its newest)."""
  where = pathlib.Path(path)
  if where.is_dir():
    directory = where / 'checkpoints' if (where / 'checkpoints').is_dir() else where
    restored = Checkpointer(directory).restore_latest()
    if restored is None:
      raise ConfigError(f'init_checkpoint={path!r}: no checkpoint in {directory}')
    return restored[1]
  match = re.fullmatch(r'ckpt-(\d+)\.pkl', where.name)
  if not where.is_file() or not match:
    raise ConfigError(f'init_checkpoint={path!r}: not a run directory or a ckpt-<step>.pkl file')
  return Checkpointer(where.parent).restore(int(match.group(1)))


def _labeller(cfg):
  """Success labels for stored episodes when PMPO learns from them, else None."""
  if cfg.algorithm == 'mpo' and cfg.agent.learns_from_labels:
    return make_labeller(cfg.agent.pmpo_success_return)
  return None


def store_dirs(cfg) -> List[pathlib.Path]:
  """The stores a learner trains on: this run's own, then any extra datasets."""
  return [RunDir(cfg.run_dir).store] + [pathlib.Path(d) for d in cfg.datasets]


class LearnerWorker:
  """Owns the MPO learner inside its own process.

  On start it restores the newest valid checkpoint of the run (or, for a new
  run, `init_checkpoint`); on stop it writes a final one, so Ctrl-C never
  loses more than the last few updates. It draws batches from replay, the
  durable store, or both (config `mode` and `store_ratio`), and in iterated
  mode paces the collect and infer phases.
  """

  def __init__(self, config: Dict[str, Any], replay: Any, counter: Any):
    quiet_node_logs()
    announce_process('learner')
    cfg = experiment.config_from_dict(config)
    self._config = cfg
    self._run_dir = pathlib.Path(cfg.run_dir)
    self._builder = experiment.make_builder(cfg)
    self._replay_address = replay.server_address
    self._checkpointer = Checkpointer(RunDir(cfg.run_dir).checkpoints, keep=cfg.keep_checkpoints)
    batch = cfg.agent.batch_size
    ratio = 1.0 if cfg.mode in ('offline', 'iterated') else cfg.store_ratio
    self._store_batch = int(round(batch * ratio))
    self._sampler = None
    if self._store_batch > 0:
      self._sampler = StoreSampler([EpisodeStore(d) for d in store_dirs(cfg)],
                                   n_step=cfg.agent.n_step, discount=cfg.agent.discount,
                                   seed=cfg.seed, labeller=_labeller(cfg))
    self._own_store = EpisodeStore(RunDir(cfg.run_dir).store, verify=False)  # Counted, not read.
    # Attached robots' share, out of the replay share (online modes only).
    replay_share = batch - self._store_batch
    self._external_batch = 0
    if cfg.mode in ('online', 'offline_to_online') and replay_share > 0:
      self._external_batch = min(int(round(batch * cfg.external_ratio)), replay_share)
    self._external_announced = False
    self._external_sink = None  # Opened on the first episode a robot sends.
    self._external_lock = threading.Lock()
    self._counter = counting.Counter(counter, prefix='learner')
    self._learner = self._builder.make_learner(
        self._new_iterator(), seed=cfg.seed, counter=self._counter,
        logger=make_logger(self._run_dir, 'learner', time_delta=5.0, steps_key='learner_steps'))
    self._lock = threading.Lock()
    self._finished = False  # Budget spent and counts flushed (see `done`).
    # Iterated collect-and-infer: which iteration, and the store size that ends its collection.
    self._iteration = 0
    self._collect_target: Optional[int] = None
    self._phase = 'collect' if cfg.mode == 'iterated' else 'train'
    # Episodes granted to actors and not yet stored: actor -> (iteration, time granted).
    # They make each collect phase gather exactly `collect_episodes`.
    self._leases: Dict[str, Tuple[int, float]] = {}
    self._store_lock = threading.Lock()
    restored = self._checkpointer.restore_latest()
    if restored is not None:
      step, payload = restored
      self._learner.restore(payload['learner_state'])
      self._iteration = int(payload.get('iteration', 0))
      self._collect_target = payload.get('collect_target')
      print(f'[learner] resumed from checkpoint at learner step {step}', flush=True)
    elif cfg.init_checkpoint:
      payload = load_init_checkpoint(cfg.init_checkpoint)
      # Parameters, optimisers and duals carry over; the step count starts afresh.
      state = payload['learner_state']
      self._learner.restore(state._replace(steps=np.zeros_like(state.steps)))
      print(f'[learner] initialised from {cfg.init_checkpoint} '
            f'(trained {int(state.steps)} steps there)', flush=True)
    self._set_iteration()
    if self._sampler is not None:
      self._sampler.refresh()
      print(f'[learner] training on {self._store_batch}/{batch} of each batch from stored '
            f'episodes ({self._sampler.num_episodes} now, in {len(store_dirs(cfg))} store(s))',
            flush=True)
      if _labeller(cfg) is not None:
        threshold = cfg.agent.pmpo_success_return
        rule = "metadata 'success'" + ('' if threshold is None else f', else return >= {threshold:g}')
        print(f'[learner] PMPO from episode labels ({rule}): {self._sampler.num_successes} of '
              f'{self._sampler.num_episodes} stored episodes successful', flush=True)

  def _new_iterator(self):
    cfg = self._config
    replay_batch = cfg.agent.batch_size - self._store_batch - self._external_batch
    timeout_ms = int(cfg.learner_sample_timeout_s * 1000)
    replay = None
    if replay_batch > 0:
      replay = self._builder.make_dataset_iterator(
          self._replay_address, batch_size=replay_batch, rate_limiter_timeout_ms=timeout_ms)
    external = None
    if self._external_batch > 0:
      external = ExternalShare(
          make_external=lambda: self._builder.make_dataset_iterator(
              self._replay_address, batch_size=self._external_batch,
              rate_limiter_timeout_ms=timeout_ms, table=EXTERNAL_TABLE),
          make_fallback=lambda: self._builder.make_dataset_iterator(
              self._replay_address, batch_size=self._external_batch,
              rate_limiter_timeout_ms=timeout_ms),
          table_size=self._external_table_size, batch_size=self._external_batch,
          on_active=self._announce_external)
    if self._store_batch == 0 and external is None:
      return replay
    return MixedBatches(replay, self._sampler, self._store_batch,
                        wait_timeout_s=cfg.learner_sample_timeout_s, external=external)

  def _external_table_size(self) -> int:
    """Items in the external table; 0 when the replay server can't say right now."""
    try:
      info = reverb.Client(self._replay_address).server_info(timeout=1)
      return int(info[EXTERNAL_TABLE].current_size)
    except Exception:  # pylint: disable=broad-except
      return 0

  def _announce_external(self, size: int) -> None:
    if not self._external_announced:
      self._external_announced = True
      print(f'[learner] external table holds {size} items: {self._external_batch}/'
            f'{self._config.agent.batch_size} of each batch come from attached robots now',
            flush=True)

  # Served over Courier: robots attaching with launch.attach.
  def environment_spec(self) -> Dict[str, Any]:
    """The program's environment spec as plain data (see launch.external.spec_to_data)."""
    return spec_to_data(self._builder.spec)

  def experiment_config(self) -> Dict[str, Any]:
    """The run's configuration (an attached actor builds its policy from it)."""
    return self._config.to_dict()

  def append_external_episode(self, name: str, episode: Dict[str, Any]) -> Dict[str, Any]:
    """Appends a robot's whole episode to the run's store (writer 'external_<name>'), once.

    Returns {'status': 'stored' or 'duplicate', 'id': ...} or {'status': 'rejected',
    'reason': ...}; see launch.external.ExternalEpisodeSink.
    """
    with self._external_lock:
      if self._external_sink is None:
        self._external_sink = ExternalEpisodeSink(RunDir(self._config.run_dir).store,
                                                  self._builder.spec)
    return self._external_sink.append(name, episode)

  # Served over Courier: iterated collect-and-infer pacing.
  def collect_status(self) -> Dict[str, Any]:
    """The phase actors follow: collect episodes only while 'wanted' > 0."""
    wanted = 0
    if self._phase == 'collect' and self._collect_target is not None:
      with self._store_lock:
        self._own_store.refresh()
        wanted = max(0, self._collect_target - len(self._own_store))
    return {'phase': self._phase, 'iteration': self._iteration, 'wanted': wanted}

  # Served over Courier: iterated collect-and-infer pacing.
  def reserve_episode(self, actor: str) -> bool:
    """May `actor` start one more episode of this collect phase?

    Granted only while stored plus granted-in-progress episodes fall short of
    the target, so N actors collect exactly `collect_episodes`, not up to N-1
    more. Asking again releases the actor's previous grant (its episode is
    stored by then); a grant lapses after LEASE_SECONDS (its actor died).
    """
    with self._store_lock:
      if self._phase != 'collect' or self._collect_target is None:
        return False
      self._own_store.refresh()
      now = time.time()
      self._leases.pop(actor, None)
      active = sum(1 for it, t in self._leases.values()
                   if it == self._iteration and now - t < LEASE_SECONDS)
      if len(self._own_store) + active >= self._collect_target:
        return False
      self._leases[actor] = (self._iteration, now)
      return True

  # Served over Courier.
  def get_variables(self, names: Sequence[str]) -> List[Any]:
    """Parameters by name; 'learner_steps' gives the step they were made at."""
    # No lock: training holds it while parked on the rate limiter. The state is
    # replaced whole per update, so the step read first is at most one behind.
    steps = self._learner.steps
    params = self._learner.get_variables([n for n in names if n != LEARNER_STEPS])
    params.reverse()
    return [steps if n == LEARNER_STEPS else params.pop() for n in names]

  def get_state(self) -> Dict[str, Any]:
    """Full learner state (parameters, optimisers, duals, step) as numpy."""
    with self._lock:
      state = self._learner.save()
    return {'learner_state': state, 'learner_steps': int(state.steps),
            'iteration': self._iteration, 'collect_target': self._collect_target}

  def save_checkpoint(self, extra: Optional[Dict[str, Any]] = None) -> str:
    """Writes the full state (plus `extra`, e.g. counts) atomically; returns the path."""
    payload = {**self.get_state(), 'time': time.time(), **(extra or {})}
    return str(self._checkpointer.save(payload, payload['learner_steps']))

  def steps(self) -> int:
    return self._learner.steps

  def done(self) -> bool:
    """Whether the learner has finished its own budget (steps, or iterations), counts sent."""
    return self._finished

  def _budget_reached(self) -> bool:
    cfg = self._config
    if cfg.mode == 'iterated':
      return self._phase == 'done'
    return cfg.max_learner_steps is not None and self._learner.steps >= cfg.max_learner_steps

  def _step(self) -> None:
    try:
      with self._lock:
        self._learner.step()
    except StopIteration:
      # The rate limiter (or an empty store) held sampling for the timeout:
      # the caller checks for shutdown, then this waits on a fresh iterator.
      self._learner.set_iterator(self._new_iterator())

  def _train(self, stop: threading.Event) -> None:
    if self._config.mode == 'iterated':
      self._train_iterated(stop)
    while not stop.is_set():
      if self._budget_reached():
        # The evaluator ends the program once `done()`: the counts it reads
        # must be final first.
        if not self._finished:
          flush_counts(self._counter)
          self._finished = True
        wait_for_stop(stop, 1.0)
      else:
        self._step()

  def _train_iterated(self, stop: threading.Event) -> None:
    cfg = self._config
    while self._iteration < cfg.iterations and not stop.is_set():
      if self._collect_target is None:
        self._own_store.refresh()
        self._collect_target = len(self._own_store) + cfg.collect_episodes
      self._phase = 'collect'
      print(f'[learner] iteration {self._iteration}: collecting until the store holds '
            f'{self._collect_target} episodes', flush=True)
      while not stop.is_set():
        with self._store_lock:
          self._own_store.refresh()
          collected = len(self._own_store) >= self._collect_target
        if collected:
          break
        flush_counts(self._counter)  # The steps of the last infer phase.
        wait_for_stop(stop, 0.5)
      if stop.is_set():
        return
      self._phase = 'infer'
      if not cfg.warm_start and self._iteration > 0:
        self._reinitialise()
      self._set_iteration()
      end = (self._learner.steps // cfg.infer_steps + 1) * cfg.infer_steps
      print(f'[learner] iteration {self._iteration}: inferring on all stored episodes up to '
            f'learner step {end}', flush=True)
      while self._learner.steps < end and not stop.is_set():
        self._step()
      if stop.is_set():
        return
      self._iteration += 1
      self._collect_target = None
    self._phase = 'done'
    print(f'[learner] all {cfg.iterations} iterations done', flush=True)

  def _set_iteration(self) -> None:
    """Iteration-dependent learner settings (PAC's BC weight); not part of the checkpoint."""
    if hasattr(self._learner, 'set_iteration'):
      with self._lock:
        alpha = self._learner.set_iteration(self._iteration)
      if self._config.agent.policy_loss == 'pac':
        print(f'[learner] iteration {self._iteration}: behaviour-cloning weight {alpha:.2f}',
              flush=True)

  def _reinitialise(self) -> None:
    """From scratch: fresh parameters, optimisers and duals; the step count goes on."""
    fresh = self._builder.make_learner(iter(()), seed=self._config.seed + self._iteration)
    with self._lock:
      steps = self._learner.steps
      state = fresh.save()
      self._learner.restore(state._replace(steps=np.full_like(state.steps, steps)))

  def run(self, stop_event: Optional[threading.Event] = None):
    stop = stop_event or lp.stop_event()
    finished = run_until_stopped(self._train, stop, grace_seconds=5.0)
    # The state is replaced whole after each update, so it is consistent even
    # if training is still parked inside a sample from a vanished server.
    payload = {'learner_state': self._learner.save(), 'time': time.time()}
    payload['learner_steps'] = int(payload['learner_state'].steps)
    path = self._checkpointer.save(payload, payload['learner_steps'])
    print(f'[learner] stopped at step {payload["learner_steps"]}; final checkpoint {path}',
          flush=True)
    with self._external_lock:
      if self._external_sink is not None:
        self._external_sink.close()  # Releases the robots' writer names.
    exit_process_if_stuck(finished)
