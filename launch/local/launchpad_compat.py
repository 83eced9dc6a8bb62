"""The one place this project reaches into Launchpad's private API.

Checked against dm-launchpad 0.5.0. Three pieces: the per-node log directory (below), the
interpreter a node process starts with (`python_process`), and the WorkerManager internals
that actor restarts need (`WorkerManagerView`).

Launchpad's 'output_to_files' terminal writes each node's
output under a directory it reads from the module global
`launchpad.launch.run_locally.launch_local_output_to_files._LOGGING_DIR`, set once from
$LAUNCHPAD_LOGGING_DIR when the module is first imported; the public setting (the
environment variable) cannot move it per launch, and each launch logs into its own run
directory. tests/launch/local/test_launchpad_compat.py fails if the global goes away or
stops being read.
"""

import os
import subprocess
from typing import Any, Dict, Optional, Tuple


def set_node_log_dir(directory: os.PathLike) -> None:
  """Makes the next 'output_to_files' launch write its per-node files under `directory`."""
  # pylint: disable-next=g-import-not-at-top
  from launchpad.launch.run_locally import launch_local_output_to_files

  if not hasattr(launch_local_output_to_files, '_LOGGING_DIR'):
    raise RuntimeError(
      'this Launchpad has no launch_local_output_to_files._LOGGING_DIR '
      '(checked against dm-launchpad 0.5.0): see launch/local/launchpad_compat.py'
    )
  launch_local_output_to_files._LOGGING_DIR = str(directory)  # pylint: disable=protected-access


def python_process(env: Dict[str, str], interpreter: Optional[str] = None) -> Any:
  """Launchpad's local_mp resources for a group: its environment and, if given, interpreter.

  dm-launchpad 0.5.0's PythonProcess has no public way to name the interpreter; its
  dataclass field `_absolute_interpreter_path` (when set) is what its command starts with.
  The fork server (launch.local.forkserver) is started this way.
  """
  # pylint: disable-next=g-import-not-at-top
  from launchpad.nodes.python.local_multi_processing import PythonProcess

  if interpreter is None:
    return PythonProcess(env=env)
  if '_absolute_interpreter_path' not in getattr(PythonProcess, '__dataclass_fields__', {}):
    raise RuntimeError(
      'this Launchpad PythonProcess has no _absolute_interpreter_path (checked against '
      'dm-launchpad 0.5.0): see launch/local/launchpad_compat.py, or use --no_fork_server'
    )
  process = PythonProcess(env=env, _absolute_interpreter_path=interpreter)
  if process.absolute_interpreter_path != interpreter:
    raise RuntimeError('this Launchpad ignores _absolute_interpreter_path: use --no_fork_server')
  return process


# WorkerManager internals that restarting a dead actor needs. dm-launchpad 0.5.0's
# WorkerManager.wait stops the whole program on the first failed process and has no
# public way to take one failed worker out of its watch list or add a replacement; these
# are the attributes it keeps them in (launchpad/launch/worker_manager.py).
_MANAGER_ATTRIBUTES = (
  '_mutex',
  '_active_workers',
  '_stop_counter',
  '_first_failure',
  '_stop',
  '_check_workers',
)


class WorkerManagerView:
  """What supervising a local_mp program reads and changes in Launchpad's WorkerManager."""

  def __init__(self, manager: Any):
    missing = [a for a in _MANAGER_ATTRIBUTES if not hasattr(manager, a)]
    if missing:
      raise RuntimeError(
        f'this Launchpad WorkerManager lacks {missing} (checked against dm-launchpad 0.5.0): '
        'see launch/local/launchpad_compat.py'
      )
    self._manager = manager

  # pylint: disable=protected-access
  def take_failed(self, prefix: str) -> Dict[str, subprocess.Popen]:
    """Processes of groups named `prefix...` that exited with an error, unwatched from now on.

    Empty while the program is stopping (exits are expected then).
    """
    m = self._manager
    dead = {}
    with m._mutex:
      if m._stop_counter:
        return dead
      for label, workers in m._active_workers.items():
        if not label.startswith(prefix):
          continue
        for worker in list(workers):
          if isinstance(worker, subprocess.Popen) and worker.poll() not in (None, 0):
            workers.remove(worker)
            dead[label] = worker
    return dead

  def add(self, label: str, process: subprocess.Popen) -> None:
    """Watches `process` as a worker of group `label` (a restarted node)."""
    with self._manager._mutex:
      self._manager._active_workers[label].append(process)

  def count(self, prefix: str) -> int:
    """Watched workers of the groups named `prefix...`."""
    with self._manager._mutex:
      return sum(len(w) for g, w in self._manager._active_workers.items() if g.startswith(prefix))

  def stop(self) -> None:
    """Stops the whole program (each node gets its termination notice, then a kill)."""
    with self._manager._mutex:
      self._manager._stop()

  def check(self) -> Tuple[Optional[BaseException], bool]:
    """(the first failure since the last check, or None; whether any worker is still watched)."""
    m = self._manager
    with m._mutex:
      m._check_workers()
      failure, m._first_failure = m._first_failure, None
      return failure, any(m._active_workers.values())

  # pylint: enable=protected-access
