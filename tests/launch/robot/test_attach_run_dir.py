"""`launch.attach --run_dir`: a wrong directory fails at once with its reason, in one line;
only a real run that is not up yet is waited for, saying so. The real command, as a user
runs it."""

import json
import os
import subprocess
import sys
import time

from launch.config import ExperimentConfig
from launch.run_dir import RunDir
from tests.e2e_util import ROOT

_TOKEN = 'x' * 43


def _attach(run_dir, *extra):
  env = {**os.environ, 'COLLECT_INFER_GATEWAY_TOKEN': _TOKEN}
  env.pop('MUJOCO_GL', None)  # As a user's shell has it.
  start = time.monotonic()
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'launch.attach',
      '--run_dir',
      str(run_dir),
      '--env',
      'environments.simulated_robot:make_simulated_robot_env',
      *extra,
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
    env=env,
  )
  return proc, time.monotonic() - start


def test_a_missing_or_foreign_run_dir_fails_at_once_in_one_line(tmp_path):
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'broken').mkdir()
  (tmp_path / 'broken' / 'config.json').write_text('[1, 2]')
  cases = {
    tmp_path / 'nope': f'error: --run_dir {tmp_path / "nope"}: no such directory',
    tmp_path / 'empty': (
      f'error: --run_dir {tmp_path / "empty"}: not a run directory (no config.json); give '
      'the --run_dir the program was launched with'
    ),
    tmp_path / 'broken': f'error: --run_dir {tmp_path / "broken"}: not a run directory (',
  }
  for run_dir, message in cases.items():
    proc, seconds = _attach(run_dir)
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.splitlines()  # Nothing else: no banner, no warning.
    assert line.startswith(message), line
    assert seconds < 60  # Not the 120 s connect timeout.


def test_a_run_that_is_not_up_is_waited_for_saying_what_for(tmp_path):
  run = RunDir(tmp_path / 'run')
  run.create()
  run.write_config(ExperimentConfig.from_dict(dict(run_dir=str(run.path))).to_dict())
  proc, _ = _attach(run.path, '--connect_timeout_s', '2', '--max_backoff_s', '0.5')
  assert proc.returncode == 2, proc.stderr
  waiting = [line for line in proc.stdout.splitlines() if 'waiting for the program' in line]
  assert waiting, proc.stdout
  assert (
    f'the run is not up yet: waiting for its program to write {run.path / "addresses.json"}'
    in waiting[0]
  )
  [line] = proc.stderr.splitlines()
  assert line.startswith('error: could not reach the program'), line
  assert json.loads((run.path / 'config.json').read_text())['run_dir'] == str(run.path)
