"""The replay node: Reverb tables from the builder, checkpointed inside the run directory."""

import math
import os
import pathlib
import threading
import time
from typing import Any, Dict, Mapping, Optional

import reverb
from launchpad.launch import worker_manager

from agents.common.logs import get_logger
from launch.logs import make_logger
from launch.nodes.process import announce_process, quiet_node_logs
from launch.nodes.stopping import wait_for_stop

log = get_logger('replay')

# How often the replay node logs its tables (CSV and TensorBoard under <run>/logs/replay).
METRICS_PERIOD_S = 10.0
METRICS_LABEL = 'replay'


def table_metrics(info: Mapping[str, Any]) -> Dict[str, float]:
  """Cumulative figures of each table in `reverb.Client.server_info()`, keyed '<table>/<name>'.

  size, episodes: items and episodes in the table now. inserts, samples: calls
  the rate limiter let through since the server started (restored items are not
  inserts). unique_samples: distinct items ever sampled. insert_wait_s,
  sample_wait_s: seconds the table sat with inserts blocked by the rate limiter
  until a sample freed them, and with samples blocked until an insert came.
  (Reverb 0.7 reports no per-call wait times; its table worker's blocked time
  is what is left of them.)
  """
  out: Dict[str, float] = {}
  for name in sorted(info):
    table = info[name]
    limiter, worker = table.rate_limiter_info, table.table_worker_time
    out.update(
      {
        f'{name}/size': float(table.current_size),
        f'{name}/episodes': float(table.num_episodes),
        f'{name}/inserts': float(limiter.insert_stats.completed),
        f'{name}/samples': float(limiter.sample_stats.completed),
        f'{name}/unique_samples': float(table.num_unique_samples),
        f'{name}/insert_wait_s': worker.waiting_for_sampling_ms / 1000.0,
        f'{name}/sample_wait_s': worker.waiting_for_inserts_ms / 1000.0,
      }
    )
  return out


class ReplayMetricsLogger:
  """Logs `table_metrics`, with insert and sample rates, every `period_s` from a daemon thread.

  One row per poll at <run>/logs/replay/logs.csv and as TensorBoard scalars
  (step: `elapsed_s`, whole seconds since this logger started). A failed poll is
  reported and skipped: logging never stops or holds up the replay node.
  """

  def __init__(
    self,
    address: str,
    run_dir: pathlib.Path,
    period_s: float = METRICS_PERIOD_S,
    server_info_timeout_s: int = 5,
  ):
    self._client = reverb.Client(address)
    self._run_dir = pathlib.Path(run_dir)
    self._period_s = period_s
    self._timeout_s = server_info_timeout_s
    self._logger = None
    self._start = time.monotonic()
    self._previous: Optional[Dict[str, float]] = None
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None
    self._lock = threading.Lock()  # One poll at a time; close() waits for a poll in progress.

  def poll(self) -> Dict[str, float]:
    """Gathers one row, writes it and returns it."""
    with self._lock:
      now = time.monotonic()
      row = {'elapsed_s': int(now - self._start)}
      metrics = table_metrics(self._client.server_info(timeout=self._timeout_s))
      row.update(metrics)
      previous, self._previous = self._previous, {**metrics, 'time': now}
      for key in [k for k in metrics if k.endswith(('/inserts', '/samples'))]:
        # NaN on the first row: CSV columns are fixed by the first row written.
        rate = math.nan
        if previous is not None and now > previous['time'] and key in previous:
          rate = (metrics[key] - previous[key]) / (now - previous['time'])
        row[f'{key}_per_s'] = rate
      if self._logger is None:
        self._logger = make_logger(self._run_dir, METRICS_LABEL, steps_key='elapsed_s')
      self._logger.write(row)
      return row

  def start(self) -> 'ReplayMetricsLogger':
    self._thread = threading.Thread(target=self._run, name='replay-metrics', daemon=True)
    self._thread.start()
    return self

  def _run(self) -> None:
    failures = 0
    while not self._stop.wait(self._period_s):
      try:
        self.poll()
        failures = 0
      except Exception as e:  # pylint: disable=broad-except
        failures += 1
        if failures in (1, 10) or failures % 100 == 0:  # Reported, not repeated every poll.
          log.warning('table metrics not logged (%dx): %s', failures, e)

  def close(self, timeout_s: float = 2.0) -> None:
    """Stops the thread; flushes and closes the logs unless a poll is stuck past `timeout_s`."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=timeout_s)
    if self._lock.acquire(timeout=timeout_s):
      try:
        if self._logger is not None:
          self._logger.close()
          self._logger = None
      finally:
        self._lock.release()


def newest_checkpoint(replay_dir: str) -> Optional[str]:
  """The newest complete Reverb checkpoint in `replay_dir` (Reverb marks those with DONE)."""
  done = sorted(p.parent for p in pathlib.Path(replay_dir).glob('*/DONE'))
  return str(done[-1]) if done else None


def serve(port: int, priority_tables_fn, replay_dir: str) -> None:
  """The replay node's process: a Reverb server on `port` until the program stops.

  Reverb's default checkpointer writes to a fresh temp dir, so a relaunched program would
  start empty. This one checkpoints into the run directory (restored at start-up by
  `DefaultCheckpointer`) and once more when the program stops.
  """
  quiet_node_logs()
  announce_process('replay')
  checkpoint = newest_checkpoint(replay_dir)
  server = reverb.Server(
    tables=priority_tables_fn(),
    port=port,
    checkpointer=reverb.checkpointers.DefaultCheckpointer(replay_dir),
  )
  if checkpoint is None:
    log.info('serving on port %s; empty tables (no checkpoint yet in %s)', port, replay_dir)
  else:
    sizes = {n: i.current_size for n, i in reverb.Client(f'localhost:{port}').server_info().items()}
    log.info('serving on port %s; restored table sizes %s from %s', port, sizes, checkpoint)
  metrics = None
  try:
    # The run directory holds replay_dir (<run>/replay) and the logs.
    run_dir = pathlib.Path(replay_dir).parent
    metrics = ReplayMetricsLogger(f'localhost:{port}', run_dir).start()
  except Exception as e:  # pylint: disable=broad-except
    log.warning('table metrics disabled: %s', e)
  stop = worker_manager.stop_event()
  while not wait_for_stop(stop, 3600.0):
    pass
  if metrics is not None:
    try:
      metrics.close()
    except Exception as e:  # pylint: disable=broad-except
      log.warning('closing the table metrics failed: %s', e)
  saved, start, took = None, time.time(), 0.0
  try:
    saved = reverb.Client(f'localhost:{port}').checkpoint()
    took = time.time() - start
  except Exception as e:  # pylint: disable=broad-except
    log.warning('final checkpoint failed: %s', e)
  # Actors parked on a rate-limited insert keep their streams open, and a
  # gRPC shutdown waits for them: give it a moment, then, with replay saved,
  # end this node's own process so those actors see the server go away.
  stopper = threading.Thread(target=server.stop, daemon=True)
  stopper.start()
  stopper.join(timeout=5)
  if saved:
    # A server that stops in time checkpoints once more, and Reverb keeps only the newest.
    log.info('final checkpoint %s (saved in %.1f s)', newest_checkpoint(replay_dir) or saved, took)
  if stopper.is_alive() and threading.current_thread() is threading.main_thread():
    log.info('stopped (in-flight inserts abandoned)')
    os._exit(0)  # pylint: disable=protected-access
  log.info('stopped')
