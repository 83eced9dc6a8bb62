"""The learner node: consumes the replay dataset, runs the jitted update, serves variables."""

import pathlib
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

import launchpad as lp
from acme.utils import counting

from launch import experiment
from launch.checkpointing import Checkpointer
from launch.logs import make_logger, quiet_node_logs
from launch.run_dir import RunDir
from launch.stopping import exit_process_if_stuck, run_until_stopped


class LearnerWorker:
  """Owns the MPO learner inside its own process.

  On start it restores the newest valid checkpoint of the run; on stop it
  writes a final one, so Ctrl-C never loses more than the last few updates.
  """

  def __init__(self, config: Dict[str, Any], replay: Any, counter: Any):
    quiet_node_logs()
    cfg = experiment.config_from_dict(config)
    self._config = cfg
    self._run_dir = pathlib.Path(cfg.run_dir)
    self._builder = experiment.make_builder(cfg)
    self._replay_address = replay.server_address
    self._checkpointer = Checkpointer(RunDir(cfg.run_dir).checkpoints, keep=cfg.keep_checkpoints)
    self._learner = self._builder.make_learner(
        self._new_iterator(), seed=cfg.seed,
        counter=counting.Counter(counter, prefix='learner'),
        logger=make_logger(self._run_dir, 'learner', time_delta=5.0, steps_key='learner_steps'))
    self._lock = threading.Lock()
    restored = self._checkpointer.restore_latest()
    if restored is not None:
      step, payload = restored
      self._learner.restore(payload['learner_state'])
      print(f'[learner] resumed from checkpoint at learner step {step}', flush=True)

  def _new_iterator(self):
    return self._builder.make_dataset_iterator(
        self._replay_address,
        rate_limiter_timeout_ms=int(self._config.learner_sample_timeout_s * 1000))

  # Served over Courier.
  def get_variables(self, names: Sequence[str]) -> List[Any]:
    return self._learner.get_variables(names)

  def get_state(self) -> Dict[str, Any]:
    """Full learner state (parameters, optimisers, duals, step) as numpy."""
    with self._lock:
      state = self._learner.save()
    return {'learner_state': state, 'learner_steps': int(state.steps)}

  def save_checkpoint(self, extra: Optional[Dict[str, Any]] = None) -> str:
    """Writes the full state (plus `extra`, e.g. counts) atomically; returns the path."""
    payload = {**self.get_state(), 'time': time.time(), **(extra or {})}
    return str(self._checkpointer.save(payload, payload['learner_steps']))

  def steps(self) -> int:
    return self._learner.steps

  def _train(self, stop: threading.Event) -> None:
    while not stop.is_set():
      try:
        with self._lock:
          self._learner.step()
      except StopIteration:
        # The rate limiter held sampling for the timeout (actors slow or gone):
        # check for shutdown, then wait on a fresh iterator.
        self._learner.set_iterator(self._new_iterator())

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
    exit_process_if_stuck(finished)
