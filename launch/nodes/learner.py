"""The learner node: consumes the replay dataset, runs the jitted update, serves variables."""

import contextlib
import functools
import pathlib
import threading
import time
import types
from typing import Any, Dict, List, Optional, Sequence

import launchpad as lp
import numpy as np
import reverb
from acme.utils import counting

from agents.common.errors import ConfigError
from agents.common.learning_rate import with_fresh_courses
from agents.common.logs import get_logger
from agents.mpo.labels import make_labeller
from agents.replay_pipeline import EXTERNAL_TABLE
from launch import experiment
from launch.budget import Budget
from launch.checkpointing import Checkpointer, load_init_checkpoint, state_mismatch
from launch.logs import make_logger
from launch.nodes.counter import flush_counts
from launch.nodes.iterated import IteratedSchedule
from launch.nodes.process import announce_process, quiet_node_logs
from launch.nodes.stopping import exit_process_if_stuck, run_until_stopped, wait_for_stop
from launch.run_dir import RunDir
from launch.store.episodes import EpisodeStore
from launch.store.mixing import ExternalShare, MixedBatches
from launch.store.sampling import StoreSampler
from launch.store.windows import window_batches

LEARNER_STEPS = 'learner_steps'
# The fields of every checkpoint payload the learner writes itself (see LearnerWorker._payload);
# what a caller of `save_checkpoint` adds may not use these names.
OWN_FIELDS = ('learner_state', LEARNER_STEPS, 'time', 'iteration', 'collect_target')
# Bounds on what a caller may add to checkpoints (counts, an evaluation's return).
MAX_EXTRA_VALUES = 1000
MAX_EXTRA_DEPTH = 3
MAX_EXTRA_TEXT = 256

log = get_logger('learner')


def _labeller(cfg):
  """Success labels for stored episodes when PMPO learns from them, else None."""
  if cfg.agent.learns_from_labels:
    return make_labeller(cfg.agent.success_return)
  return None


def store_dirs(cfg) -> List[pathlib.Path]:
  """The stores a learner trains on: this run's own, then any extra datasets."""
  return [RunDir(cfg.run_dir).store] + [pathlib.Path(d) for d in cfg.datasets]


def check_extra(extra: Any) -> Dict[str, Any]:
  """What a caller adds to a checkpoint: plain counts, or ValueError naming the field.

  A dict of string keys to ints, floats, short strings, None, or dicts of those (nested
  at most MAX_EXTRA_DEPTH deep, MAX_EXTRA_VALUES values in all), under names other than
  OWN_FIELDS: callers add counts, they never replace the learner's state or step.
  """
  if extra is None:
    return {}
  if not isinstance(extra, dict):
    raise ValueError(f'save_checkpoint: extra must be a dict, not {type(extra).__name__}')
  for name in extra:
    if name in OWN_FIELDS:
      raise ValueError(
        f"save_checkpoint: extra field {name!r} is the learner's own (the learner writes "
        f'{", ".join(OWN_FIELDS)}); add counts under other names'
      )
  count = 0

  def check(value: Any, where: str, depth: int) -> None:
    nonlocal count
    count += 1
    if count > MAX_EXTRA_VALUES:
      raise ValueError(f'save_checkpoint: extra holds more than {MAX_EXTRA_VALUES} values')
    if value is None or type(value) in (bool, int, float):
      return
    if type(value) is str:
      if len(value) > MAX_EXTRA_TEXT:
        raise ValueError(f'save_checkpoint: extra field {where} is longer than {MAX_EXTRA_TEXT}')
      return
    if type(value) is dict and depth < MAX_EXTRA_DEPTH:
      for key, child in value.items():
        if type(key) is not str or len(key) > MAX_EXTRA_TEXT:
          raise ValueError(f'save_checkpoint: extra field {where} has a key {key!r:.40}')
        check(child, f'{where}[{key!r}]', depth + 1)
      return
    raise ValueError(
      f'save_checkpoint: extra field {where} is a {type(value).__name__}; only ints, floats, '
      f'strings, None and dicts of them (at most {MAX_EXTRA_DEPTH} deep) are stored'
    )

  for name, value in extra.items():
    if type(name) is not str or len(name) > MAX_EXTRA_TEXT:
      raise ValueError(f'save_checkpoint: extra field name {name!r:.40} is not a short string')
    check(value, repr(name), 1)
  return dict(extra)


class LearnerWorker:
  """Owns the agent's learner inside its own process.

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
    scaled = experiment.agent_for_action_repeat(cfg)
    if scaled is not cfg.agent:
      log.info(
        f'rewards are sums over action_repeat={cfg.action_repeat} steps: the critic values '
        f'them between min_reward={scaled.min_reward:g} and max_reward={scaled.max_reward:g}'
      )
    self._replay_address = replay.server_address
    self._checkpointer = Checkpointer(RunDir(cfg.run_dir).checkpoints, keep=cfg.keep_checkpoints)
    replay_config = cfg.agent.replay  # Batches and transitions: the same for every agent.
    batch = replay_config.batch_size
    ratio = 1.0 if cfg.mode in ('offline', 'iterated') else cfg.store_ratio
    # An agent that trains on windows of stored episodes in every mode brings its own
    # iterator (its builder's make_store_iterator); replay and store shares do not apply.
    self._windows = hasattr(self._builder, 'make_store_iterator')
    self._window_batches = None
    self._store_batch = 0 if self._windows else int(round(batch * ratio))
    self._sampler = None
    if self._store_batch > 0:
      self._sampler = StoreSampler(
        [EpisodeStore(d) for d in store_dirs(cfg)],
        n_step=replay_config.n_step,
        discount=replay_config.discount,
        seed=cfg.seed,
        labeller=_labeller(cfg),
        spec=self._builder.spec,
        own_stores=1,  # store_dirs: the run's own store first.
        memory_cap_bytes=int(cfg.store_memory_gb * 2**30),
        balance_tasks=cfg.balance_tasks and len(cfg.task_names) > 1,
        # Several tasks in one layout: each episode placed by its task on the way in.
        place=getattr(self._builder, 'place_episode', lambda: None)(),
        expert_labels_ok=getattr(self._builder, 'imitates', False),
      )
    self._own_store = EpisodeStore(RunDir(cfg.run_dir).store, verify=False)  # Counted, not read.
    # Attached robots' share, out of the replay share (online modes only).
    replay_share = batch - self._store_batch
    self._external_batch = 0
    if cfg.mode in ('online', 'offline_to_online') and replay_share > 0 and not self._windows:
      self._external_batch = min(int(round(batch * cfg.external_ratio)), replay_share)
    self._external_announced = False
    self._counter = counting.Counter(counter, prefix='learner')
    self._learner = self._builder.make_learner(
      self._new_iterator(),
      seed=cfg.seed,
      counter=self._counter,
      logger=make_logger(self._run_dir, 'learner', time_delta=5.0, steps_key='learner_steps'),
    )
    self._lock = threading.Lock()
    self._budget = Budget.from_config(cfg)
    self._finished = False  # Budget spent and counts flushed (see `done`).
    # Iterated collect-and-infer's position, carried through checkpoints in every mode.
    position = {'iteration': 0, 'collect_target': None}
    self._save_lock = threading.Lock()  # Payload and write in one piece (latest counts last).
    self._stop = threading.Event()  # run()'s, once it runs: a periodic save gives up on it.
    self._extra: Dict[str, Any] = {}
    restored = self._checkpointer.restore_latest()
    if restored is not None:
      step, payload = restored
      self._check_fits(payload['learner_state'], f'the checkpoint at step {step}')
      self._learner.restore(payload['learner_state'])
      position = {
        'iteration': int(payload.get('iteration', 0)),
        'collect_target': payload.get('collect_target'),
      }
      with contextlib.suppress(ValueError):  # The counts it carried, if plain.
        self._extra = check_extra({k: v for k, v in payload.items() if k not in OWN_FIELDS})
      log.info('resumed from checkpoint at learner step %d', step)
    elif cfg.init_checkpoint:
      payload = load_init_checkpoint(cfg.init_checkpoint)
      # Parameters, optimisers and duals carry over; the step count and the learning-rate
      # course start afresh.
      state = with_fresh_courses(self._learner.save(), payload['learner_state'])
      self._check_fits(state, f'init_checkpoint={cfg.init_checkpoint!r}')
      self._learner.restore(state._replace(steps=np.zeros_like(state.steps)))
      log.info(
        'initialised from %s (trained %d steps there)', cfg.init_checkpoint, int(state.steps)
      )
    self._resumed_at = int(restored[0]) if restored is not None else 0
    self._position = position
    self._schedule: Optional[IteratedSchedule] = None
    if cfg.mode == 'iterated':
      self._schedule = IteratedSchedule(
        iterations=cfg.iterations,
        collect_episodes=cfg.collect_episodes,
        infer_steps=cfg.infer_steps,
        warm_start=cfg.warm_start,
        store_size=self._own_store_size,
        **position,
      )
    self._set_iteration()
    if self._windows:
      names = cfg.task_names
      log.info(
        'training on windows of the stored episodes of task%s %s (%d store(s))',
        's' if len(names) > 1 else '',
        ', '.join(names),
        len(store_dirs(cfg)),
      )
    if self._sampler is not None:
      self._sampler.refresh()
      log.info(
        'training on %d/%d of each batch from stored episodes (%d now, in %d store(s))',
        self._store_batch,
        batch,
        self._sampler.num_episodes,
        len(store_dirs(cfg)),
      )
      if _labeller(cfg) is not None:
        threshold = cfg.agent.success_return
        rule = "metadata 'success'" + (
          '' if threshold is None else f', else return >= {threshold:g}'
        )
        log.info(
          'PMPO from episode labels (%s): %d of %d stored episodes successful',
          rule,
          self._sampler.num_successes,
          self._sampler.num_episodes,
        )

  def _check_fits(self, state: Any, what: str) -> None:
    """ConfigError naming the first field of `state` unlike this run's learner state."""
    problem = state_mismatch(self._learner.save(), state)
    if problem is not None:
      raise ConfigError(
        f"{what} does not fit this run's learner: {problem} (a checkpoint of other tasks, "
        'another network or other sizes)'
      )

  def _new_iterator(self):
    cfg = self._config
    if self._windows:
      # One for the learner's life: after a wait on an empty store it is asked again and
      # keeps the episodes it has read (launch.store.windows.WindowBatches).
      if self._window_batches is None:
        self._window_batches = self._builder.make_store_iterator(
          store_dirs(cfg),
          cfg.task_names,
          functools.partial(window_batches, wait_timeout_s=cfg.learner_sample_timeout_s),
          seed=cfg.seed,
        )
      return self._window_batches
    replay_batch = cfg.agent.replay.batch_size - self._store_batch - self._external_batch
    timeout_ms = int(cfg.learner_sample_timeout_s * 1000)
    replay = None
    if replay_batch > 0:
      replay = self._builder.make_dataset_iterator(
        self._replay_address, batch_size=replay_batch, rate_limiter_timeout_ms=timeout_ms
      )
    external = None
    if self._external_batch > 0:
      external = ExternalShare(
        make_external=lambda: self._builder.make_dataset_iterator(
          self._replay_address,
          batch_size=self._external_batch,
          rate_limiter_timeout_ms=timeout_ms,
          table=EXTERNAL_TABLE,
        ),
        make_fallback=lambda: self._builder.make_dataset_iterator(
          self._replay_address, batch_size=self._external_batch, rate_limiter_timeout_ms=timeout_ms
        ),
        table_size=self._external_table_size,
        batch_size=self._external_batch,
        on_active=self._announce_external,
      )
    if self._store_batch == 0 and external is None:
      return replay
    store_fallback = None
    if replay is not None:
      # A fresh online run's store is empty: replay fills its share until it is not.
      store_fallback = lambda: self._builder.make_dataset_iterator(  # noqa: E731
        self._replay_address, batch_size=self._store_batch, rate_limiter_timeout_ms=timeout_ms
      )
    return MixedBatches(
      replay,
      self._sampler,
      self._store_batch,
      wait_timeout_s=cfg.learner_sample_timeout_s,
      external=external,
      store_fallback=store_fallback,
    )

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
      log.info(
        'external table holds %d items: %d/%d of each batch come from attached robots now',
        size,
        self._external_batch,
        self._config.agent.replay.batch_size,
      )

  # Served over Courier: iterated collect-and-infer pacing.
  def collect_status(self) -> Dict[str, Any]:
    """The phase actors follow: collect episodes only while 'wanted' > 0."""
    if self._schedule is None:
      return {'phase': 'train', 'iteration': self._iteration, 'wanted': 0}
    return self._schedule.collect_status()

  # Served over Courier: iterated collect-and-infer pacing.
  def reserve_episode(self, actor: str) -> bool:
    """May `actor` start one more episode of this collect phase? (see IteratedSchedule)"""
    return self._schedule is not None and self._schedule.reserve_episode(actor)

  def _own_store_size(self) -> int:
    """Episodes in the run's own store now (the schedule serialises its calls)."""
    self._own_store.refresh()
    return len(self._own_store)

  @property
  def _iteration(self) -> int:
    return self._schedule.iteration if self._schedule is not None else self._position['iteration']

  def _schedule_state(self) -> Dict[str, Any]:
    """The iterated position to checkpoint (carried unchanged outside iterated mode)."""
    return self._schedule.state() if self._schedule is not None else dict(self._position)

  # Served over Courier.
  def get_variables(self, names: Sequence[str]) -> List[Any]:
    """Parameters by name; 'learner_steps' gives the step they were made at."""
    # No lock: training holds it while parked on the rate limiter. The state is
    # replaced whole per update, so the step read first is at most one behind.
    steps = self._learner.steps
    params = self._learner.get_variables([n for n in names if n != LEARNER_STEPS])
    params.reverse()
    return [steps if n == LEARNER_STEPS else params.pop() for n in names]

  def _payload(self, wait_for_update: bool = True) -> Dict[str, Any]:
    """What every checkpoint holds: state, step, iterated position, the latest counts.

    `wait_for_update`: take the state between updates (a periodic save). The final save
    does not wait: training may be parked in a sample from a vanished server, and the
    state is replaced whole after each update, so it is consistent anyway.
    """
    if wait_for_update:
      state = self._state_between_updates()
    else:
      state = self._learner.save()
    return {
      # What callers added last (the evaluator's counts): kept by every later save, so a
      # final save at the same step does not drop them.
      **self._extra,
      'learner_state': state,
      LEARNER_STEPS: int(state.steps),
      'time': time.time(),
      **self._schedule_state(),
    }

  def _state_between_updates(self) -> Any:
    """The state once the update in progress ends, unless the learner stops first.

    Training may be parked in a sample from a vanished server while the program stops; a
    periodic save waiting on it would hold the save lock past the node's stop grace and cost
    the final checkpoint, so it gives up instead (its caller gets the error).
    """
    while not self._lock.acquire(timeout=0.25):
      if self._stop.is_set():
        raise RuntimeError('the learner is stopping: its final checkpoint replaces this save')
    try:
      return self._learner.save()
    finally:
      self._lock.release()

  def get_state(self) -> Dict[str, Any]:
    """Full learner state (parameters, optimisers, duals, step) as numpy: a checkpoint's payload."""
    return self._payload()

  def save_checkpoint(self, extra: Optional[Dict[str, Any]] = None) -> str:
    """Writes the full state plus `extra` (e.g. counts) atomically; returns the path.

    `extra` adds fields; it can never replace the learner's own (ValueError naming the
    field, see `check_extra`), so the checkpoint's step is always the learner's real one and
    a save can only overwrite the current step's file with the current state.
    """
    extra = check_extra(extra)
    with self._save_lock:
      self._extra = extra
      payload = self._payload()
      return str(self._checkpointer.save(payload, payload[LEARNER_STEPS]))

  def steps(self) -> int:
    return self._learner.steps

  def done(self) -> bool:
    """Whether the learner has finished its own budget (steps, or iterations), counts sent."""
    return self._finished

  def _budget_reached(self) -> bool:
    return self._budget.learner_finished(self._learner.steps, self._iteration)

  def _step(self) -> None:
    try:
      with self._lock:
        self._learner.step()
    except StopIteration:
      # The rate limiter (or an empty store) held sampling for the timeout:
      # the caller checks for shutdown, then this waits on a fresh iterator.
      self._learner.set_iterator(self._new_iterator())

  def _catch_up_counts(self) -> None:
    """Raises the counter's learner steps to the restored step if a stop left them behind.

    The learner sends its counts at most once a second and the counter saves its file as it
    stops, so a stop can save a checkpoint at a later step than the counter recorded. The
    counter's learner steps count every update done, and the checkpoint's step is one of them.
    """
    flush_counts(self._counter)
    counted = int(self._counter.get_counts().get(LEARNER_STEPS, 0))
    behind = self._resumed_at - counted
    if behind > 0:
      self._counter.increment(steps=behind)
      flush_counts(self._counter)
      log.info(
        'counter had %d learner steps, the checkpoint %d: caught up', counted, self._resumed_at
      )

  def _train(self, stop: threading.Event) -> None:
    if self._resumed_at:
      self._catch_up_counts()
    if self._schedule is not None:
      self._schedule.run(
        stop,
        types.SimpleNamespace(
          steps=self.steps,
          step=self._step,
          start_infer=self._start_infer,
          collecting=lambda: flush_counts(self._counter),
        ),
      )  # The last infer phase's steps.
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

  def _start_infer(self, iteration: int, reinitialise: bool) -> None:
    """Before iteration `iteration`'s infer phase (see IteratedSchedule.run)."""
    del iteration  # The schedule's, which `_iteration` reads.
    if reinitialise:
      self._reinitialise()
    self._set_iteration()

  def _set_iteration(self) -> None:
    """Iteration-dependent learner settings (PAC's BC weight); not part of the checkpoint."""
    if hasattr(self._learner, 'set_iteration'):
      with self._lock:
        self._learner.set_iteration(self._iteration)
      note = getattr(self._learner, 'iteration_note', lambda: None)()
      if note:
        log.info('iteration %d: %s', self._iteration, note)

  def _reinitialise(self) -> None:
    """From scratch: fresh parameters, optimisers and duals; the step count goes on."""
    fresh = self._builder.make_learner(iter(()), seed=self._config.seed + self._iteration)
    with self._lock:
      steps = self._learner.steps
      state = fresh.save()
      self._learner.restore(state._replace(steps=np.full_like(state.steps, steps)))

  def run(self, stop_event: Optional[threading.Event] = None):
    stop = self._stop = stop_event or lp.stop_event()
    finished = run_until_stopped(self._train, stop, grace_seconds=5.0)
    # After a periodic save in flight: one waiting on an update gives up on the stop, and one
    # stuck writing must not cost the final checkpoint (Launchpad kills a node 10 s after its
    # stop, this grace included).
    ordered = self._save_lock.acquire(timeout=3.0)
    try:
      payload = self._payload(wait_for_update=False)
      path = self._checkpointer.save(payload, payload[LEARNER_STEPS])
    finally:
      if ordered:
        self._save_lock.release()
    log.info('stopped at step %d; final checkpoint %s', payload[LEARNER_STEPS], path)
    exit_process_if_stuck(finished)
