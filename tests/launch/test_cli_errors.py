"""Bad input at the command line: one line saying what to change, exit 2, nothing created.

The command's `main` runs in this process (each refusal comes before any launch, and a
process start costs more than the check); the real command runs as a user's would where
the process matters: the no-noise test, and a run directory locked by another process.
"""

import contextlib
import io
import os
import subprocess
import sys

import pytest

from experiments import collect_infer
from launch.run_dir import RunDir
from tests.e2e_util import ROOT


def run_cli(*args):
  """`python -m experiments.collect_infer ARGS`, in this process: (exit code, stderr)."""
  err = io.StringIO()
  with contextlib.redirect_stderr(err):
    try:
      rc = collect_infer.main(list(args))
    except SystemExit as e:  # argparse's own refusals
      rc = e.code
  return rc, err.getvalue().strip()


def run_command(*args, timeout=120):
  """The real command in its own process: (exit code, stderr)."""
  proc = subprocess.run(
    [sys.executable, '-m', 'experiments.collect_infer', *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  return proc.returncode, proc.stderr.strip()


def assert_one_line_error(rc, err, *needles):
  assert rc == 2, err
  lines = [line for line in err.splitlines() if line.startswith('error:')]
  assert len(lines) == 1, err
  assert 'Traceback' not in err, err
  for needle in needles:
    assert needle in lines[0], lines[0]


def test_unknown_task_lists_valid_ones(tmp_path):
  rc, err = run_cli('--task', 'cartpole:fly', '--run_dir', str(tmp_path / 'r'))
  assert_one_line_error(rc, err, "unknown task 'cartpole:fly'", 'cartpole:swingup')
  assert not (tmp_path / 'r').exists()


def test_unknown_domain(tmp_path):
  rc, err = run_cli('--task', 'robot:dance', '--run_dir', str(tmp_path / 'r'))
  assert_one_line_error(rc, err, 'unknown domain', 'walker')


def test_unknown_variant_parameter_lists_the_valid_ones(tmp_path):
  rc, err = run_cli('--task', 'cartpole:swingup@pole_lenght=0.8', '--run_dir', str(tmp_path / 'r'))
  assert_one_line_error(rc, err, "unknown physics parameter 'pole_lenght'", 'pole_length')
  assert not (tmp_path / 'r').exists()


@pytest.mark.parametrize(
  'args,field',
  [
    (['--num_actors', '0'], 'num_actors'),
    (['--max_actor_steps', '-5'], 'max_actor_steps'),
    (['--agent', 'replay.discount=1.5'], 'replay.discount'),
    (['--agent', 'replay.batch_size=0'], 'replay.batch_size'),
    (['--agent', 'no_such_field=3'], 'no_such_field'),
    (['--agent', 'pmpo.alpah=0.5'], 'pmpo.alpah'),
    (['--agent', 'pmpo.alpha=1.5'], 'MPOConfig.pmpo.alpha=1.5'),
    (['--algorithm', 'bc', '--agent', 'num_atoms=3'], 'num_atoms'),
  ],
)
def test_config_out_of_range_names_the_field(tmp_path, args, field):
  rc, err = run_cli('--run_dir', str(tmp_path / 'r'), *args)
  assert_one_line_error(rc, err, field)


def test_run_dir_in_use_is_refused(tmp_path):
  holder = RunDir(tmp_path / 'r')
  holder.create()
  holder.acquire_lock()
  try:
    # Another process holds it (a lock this process held would be its own).
    rc, err = run_command('--run_dir', str(tmp_path / 'r'))
    assert_one_line_error(rc, err, 'in use by a live program')
  finally:
    holder.release_lock()


def test_unwritable_run_dir(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('x')
  rc, err = run_cli('--run_dir', str(blocker / 'run'))
  assert_one_line_error(rc, err, str(blocker / 'run'), 'writable')


def test_relaunching_a_finished_run_says_how_to_continue(tmp_path, capfd):
  from launch.config import ExperimentConfig

  run = RunDir(tmp_path / 'r')
  run.create()
  run.write_config(ExperimentConfig(run_dir=str(run.path), max_actor_steps=3000).to_dict())
  (run.path / 'counter.json').write_text('{"counts": {"actor_steps": 3000}, "cache": {}}')
  rc, err = run_cli('--run_dir', str(run.path))
  out = capfd.readouterr().out
  assert rc == 0, err
  assert 'already reached its budget of 3000' in out
  assert '--max_actor_steps' in out
  assert list(run.path.joinpath('logs').iterdir()) == []  # nothing was launched


def test_resuming_with_only_damaged_checkpoints_is_refused_before_launch(tmp_path):
  from launch.config import ExperimentConfig

  run = RunDir(tmp_path / 'r')
  run.create()
  run.write_config(ExperimentConfig(run_dir=str(run.path)).to_dict())
  (run.checkpoints / 'ckpt-000000000010.pkl').write_bytes(b'half a checkpoint')
  rc, err = run_cli('--run_dir', str(run.path))
  assert_one_line_error(rc, err, 'No intact checkpoint', 'ckpt-000000000010.pkl')
  assert list(run.logs.iterdir()) == []  # nothing was launched


def test_errors_come_alone_without_library_noise(tmp_path):
  """No gym banner, no GLFW warning: stderr is the one error line (and MUJOCO_GL unset, as
  in a user's shell)."""
  env = {k: v for k, v in os.environ.items() if k != 'MUJOCO_GL'}
  blocker = tmp_path / 'a_file'
  blocker.write_text('x')
  for args in (
    ['--task', 'cartpole:fly', '--run_dir', str(tmp_path / 'r')],
    ['--run_dir', str(blocker / 'run')],
  ):
    proc = subprocess.run(
      [sys.executable, '-m', 'experiments.collect_infer', *args],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=120,
      env=env,
    )
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith('error: '), line


def test_one_body_agent_over_tasks_of_different_bodies_says_which(tmp_path):
  tasks = 'cartpole:swingup,point_mass:easy'
  rc, err = run_cli('--algorithm', 'bc', '--tasks', tasks, '--run_dir', str(tmp_path / 'r'))
  assert_one_line_error(
    rc, err, "algorithm 'bc' acts on one body", 'point_mass:easy: observations (4,)'
  )
  assert not (tmp_path / 'r').exists()
