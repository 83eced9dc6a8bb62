"""The counter node: acme's Counter, saved to and restored from the run directory."""

import json
import pathlib
from typing import Dict, Optional

import launchpad as lp
from acme.utils import counting

from agents.common.files import atomic_write_bytes
from agents.common.logs import get_logger
from launch.nodes.process import announce_process, quiet_node_logs
from launch.nodes.stopping import wait_for_stop

COUNTER_FILE = 'counter.json'

log = get_logger('counter')


def flush_counts(counter: counting.Counter) -> Dict[str, float]:
  """Sends what a node's acme Counter still holds locally to its parent now; returns the
  program's counts as the parent has them then.

  acme's Counter syncs at most once a second, and only on the next increment: a
  node that stops incrementing (an actor idling between iterated collect phases,
  a learner at its budget) would otherwise leave its last counts unsent.
  """
  # acme 0.4.0's Counter has no public flush: zeroing the time of its last sync (checked
  # against dm-acme 0.4.0, acme/utils/counting.py) makes the next get_counts() sync now.
  counter._last_sync_time = 0.0  # pylint: disable=protected-access
  return counter.get_counts()


class PersistentCounter(counting.Counter):
  """A Counter served over Courier that keeps its counts in `<run>/counter.json`."""

  def __init__(self, run_dir: str, save_every_seconds: float = 5.0):
    quiet_node_logs()
    announce_process('counter')
    super().__init__()
    self._path = pathlib.Path(run_dir) / COUNTER_FILE
    self._save_every = save_every_seconds
    if self._path.exists():
      self.restore(json.loads(self._path.read_text()))

  def persist(self) -> None:
    # Courier threads increment while this runs: serialise a copy taken under the lock.
    with self._lock:
      state = {k: dict(v) for k, v in self.save().items()}
    atomic_write_bytes(self._path, json.dumps(state).encode())

  def run(self, stop_event: Optional[object] = None):
    stop = stop_event or lp.stop_event()
    while not wait_for_stop(stop, self._save_every):
      self.persist()
    self.persist()
    log.info('stopped; counts saved to %s', self._path)
