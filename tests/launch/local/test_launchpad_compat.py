"""The private Launchpad global launch.local.launchpad_compat sets is still there and still read."""

from launchpad.launch.run_locally import launch_local_output_to_files

from launch.local.launchpad_compat import set_node_log_dir


def test_node_log_dir_is_the_global_launchpad_writes_under(tmp_path):
  before = launch_local_output_to_files._LOGGING_DIR  # pylint: disable=protected-access
  try:
    set_node_log_dir(tmp_path / 'nodes')
    assert launch_local_output_to_files._LOGGING_DIR == str(tmp_path / 'nodes')  # pylint: disable=protected-access
    # The function that opens the per-node files reads the global when it runs.
    launch = launch_local_output_to_files.launch_and_output_to_files
    assert '_LOGGING_DIR' in launch.__code__.co_names
  finally:
    launch_local_output_to_files._LOGGING_DIR = before  # pylint: disable=protected-access


_VIEW_SCRIPT = """
import subprocess, sys, time
from absl import flags
from launchpad.launch import worker_manager
from launch.local.launchpad_compat import WorkerManagerView

flags.FLAGS(['view'], known_only=True)
manager = worker_manager.WorkerManager(register_signals=False)
view = WorkerManagerView(manager)
manager.process_worker('actor/0', [sys.executable, '-c', 'import sys; sys.exit(3)'])
manager.process_worker('learner', [sys.executable, '-c', 'import time; time.sleep(30)'])
deadline = time.time() + 20
failed = {}
while not failed and time.time() < deadline:
  failed = view.take_failed('actor')
  time.sleep(0.05)
assert list(failed) == ['actor/0'] and failed['actor/0'].returncode == 3, failed
assert view.count('actor') == 0 and view.count('learner') == 1
replacement = subprocess.Popen([sys.executable, '-c', 'pass'])
view.add('actor/0', replacement)
assert view.count('actor') == 1
replacement.wait()
failure, running = view.check()  # A clean exit is no failure; the learner still runs.
assert failure is None and running, (failure, running)
assert view.count('actor') == 0
for worker in manager._active_workers['learner']:
  worker.kill()
  worker.wait()
failure, running = view.check()
assert running is False
print('ok')
"""


def test_worker_manager_view_takes_failed_actors_and_watches_replacements():
  # In a fresh process: the first WorkerManager of a process takes over its signals.
  import subprocess
  import sys

  from tests.e2e_util import ROOT

  done = subprocess.run(
    [sys.executable, '-c', _VIEW_SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120
  )
  assert done.returncode == 0 and done.stdout.strip().endswith('ok'), done.stderr[-3000:]


def test_worker_manager_view_refuses_a_manager_without_the_internals():
  import pytest

  from launch.local.launchpad_compat import WorkerManagerView

  with pytest.raises(RuntimeError, match='checked against dm-launchpad 0.5.0'):
    WorkerManagerView(object())
