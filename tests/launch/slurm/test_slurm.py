"""Slurm launch pieces that need no cluster: settings, batch script, address book, errors."""

import os
import subprocess
import sys
import threading
import time

import pytest

from agents.common.errors import ConfigError
from launch.config import ExperimentConfig
from launch.slurm.addresses import AddressBook, AddressTimeout, free_port
from launch.slurm.config import SlurmConfig
from launch.slurm.script import allocation, batch_script, program_nodes, step_command
from tests.e2e_util import ROOT


def test_no_port_is_handed_out_twice_in_a_launch_ours_or_launchpads():
  # The gateway's port is ours; the learner's, replay's and the others' are Launchpad's
  # (lp.Address, through portpicker), picked in the same process. With a bind to port 0,
  # about 1 in 100 of ours was also one of Launchpad's (seen: a relaunched learner failed
  # to bind the gateway's port).
  from launchpad.address import SimpleLocalAddressBuilder  # What lp.launch binds locally.

  ours = [free_port() for _ in range(500)]
  launchpads = [int(SimpleLocalAddressBuilder().build().rpartition(':')[2]) for _ in range(500)]
  assert len(set(ours) | set(launchpads)) == 1000


def test_settings_override_groups_and_fields():
  cfg = SlurmConfig().with_overrides(
    [('learner.gpus', 1), ('partition', 'gpu'), ('time_limit', '2:00:00'), ('actor.cpus', 2)]
  )
  assert cfg.resources['learner']['gpus'] == 1 and cfg.resources['actor']['cpus'] == 2
  assert cfg.resources['replay'] == {'cpus': 1, 'mem_gb': 4.0, 'gpus': 0}  # untouched default
  assert (cfg.partition, cfg.time_limit) == ('gpu', '2:00:00')


@pytest.mark.parametrize(
  'setting, message',
  [
    (('learner.cpu', 1), 'GROUP.KEY'),
    (('robot.cpus', 1), 'GROUP.KEY'),
    (('queue', 'x'), "unknown slurm setting 'queue'"),
    (('learner.cpus', 0), 'learner.cpus=0 is invalid'),
    (('actor.mem_gb', -1), 'actor.mem_gb=-1 is invalid'),
    (('learner.gpus', 0.5), 'learner.gpus=0.5 is invalid'),
    (('time_limit', 'soon'), 'time_limit'),
    (('partition', 'a b'), 'partition'),
    (('sbatch_args', ['qos=high']), 'sbatch_args'),
  ],
)
def test_bad_settings_are_named(setting, message):
  with pytest.raises(ConfigError, match=message):
    SlurmConfig().with_overrides([setting])


def test_config_round_trips_with_slurm_settings():
  cfg = ExperimentConfig(
    launch_type='slurm', bind='all', slurm=SlurmConfig().with_overrides([('learner.gpus', 2)])
  )
  again = ExperimentConfig.from_dict(cfg.to_dict())
  assert again.slurm.resources['learner']['gpus'] == 2 and again.launch_type == 'slurm'
  with pytest.raises(ConfigError, match='unknown slurm config field'):
    ExperimentConfig.from_dict({**cfg.to_dict(), 'slurm': {'nodes': 3}})


def test_allocation_holds_every_step_and_steps_ask_for_their_own():
  slurm = SlurmConfig().with_overrides(
    [
      ('learner.gpus', 1),
      ('learner.cpus', 4),
      ('partition', 'gpu'),
      ('sbatch_args', ['--qos=high']),
    ]
  )
  cfg = ExperimentConfig(
    run_dir='/shared/run', num_actors=3, launch_type='slurm', bind='all', slurm=slurm
  )
  nodes = program_nodes(cfg)
  assert nodes == [
    ('replay', 0),
    ('counter', 0),
    ('learner', 0),
    ('gateway', 0),
    ('actor', 0),
    ('actor', 1),
    ('actor', 2),
    ('evaluator', 0),
  ]
  opts = allocation(cfg)
  # 1 + 1 + 4 + 1 + 3 * 1 + 1 CPUs, each with the largest share any step needs (replay's 4 GiB).
  assert '--ntasks=11' in opts and '--gpus=1' in opts and '--partition=gpu' in opts
  assert '--mem-per-cpu=4096M' in opts and '--qos=high' in opts
  learner = step_command(cfg, '7', 'learner', 0, 'py', {'A': '1'})
  assert learner[:8] == [
    'srun',
    '--exact',
    '--nodes=1',
    '--ntasks=1',
    '--cpus-per-task=4',
    '--mem-per-cpu=2048M',
    '--job-name=learner_0',
    '--gpus=1',
  ]
  assert learner[-10:] == [
    '-m',
    'launch.slurm.node',
    '--run_dir',
    '/shared/run',
    '--job',
    '7',
    '--group',
    'learner',
    '--index',
    '0',
  ]
  actor = step_command(cfg, '7', 'actor', 2, 'py', {})
  assert '--gpus=1' not in ' '.join(actor) and actor[-1] == '2'
  script = batch_script(cfg, '/venv/bin/python', '/src')
  assert script.startswith('#!/bin/bash\n') and '#SBATCH --chdir=/src' in script
  assert '#SBATCH --output=/shared/run/logs/slurm/job-%j.log' in script
  assert (
    'exec /venv/bin/python -m launch.slurm.supervise --run_dir /shared/run --job '
    '"$SLURM_JOB_ID"' in script
  )


def test_offline_runs_have_no_actor_steps():
  cfg = ExperimentConfig(mode='offline', max_learner_steps=10, launch_type='slurm', bind='all')
  assert [g for g, _ in program_nodes(cfg)] == [
    'replay',
    'counter',
    'learner',
    'gateway',
    'evaluator',
  ]


def test_address_book_waits_for_a_late_server_and_times_out_clearly(tmp_path):
  book = AddressBook(tmp_path, '42')
  threading.Timer(0.5, lambda: book.publish('learner', 'node7:1234')).start()
  start = time.monotonic()
  assert book.wait('learner', timeout=10, poll=0.05) == 'node7:1234'
  assert time.monotonic() - start >= 0.4
  with pytest.raises(AddressTimeout, match='not on a file system that every Slurm node shares'):
    book.wait('replay', timeout=0.3, poll=0.05)
  assert AddressBook(tmp_path, '43').read('learner') is None  # Another job sees nothing.


def _cli(*args, env=None):
  return subprocess.run(
    [sys.executable, '-m', 'experiments.collect_infer', *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    env=env,
    timeout=300,
  )


def test_dry_run_prints_script_and_steps_and_writes_nothing(tmp_path):
  run = tmp_path / 'run'
  done = _cli(
    '--launch',
    'slurm',
    '--bind',
    'all',
    '--run_dir',
    str(run),
    '--num_actors',
    '3',
    '--dry_run',
    '--slurm',
    'learner.gpus=1',
  )
  assert done.returncode == 0, done.stderr[-2000:]
  assert '#SBATCH --gpus=1' in done.stdout and '#SBATCH --ntasks=9' in done.stdout
  steps = [line for line in done.stdout.splitlines() if line.startswith('srun ')]
  assert len(steps) == 8 and sum('--group actor' in line for line in steps) == 3
  assert sum('--group gateway' in line for line in steps) == 1
  assert not run.exists()


def test_without_slurm_the_launch_says_what_to_do(tmp_path):
  env = {**os.environ, 'PATH': str(tmp_path)}  # No sbatch, squeue or srun anywhere.
  done = _cli('--launch', 'slurm', '--bind', 'all', '--run_dir', str(tmp_path / 'run'), env=env)
  assert done.returncode == 2
  assert 'Slurm is not available here' in done.stderr and 'local_mp' in done.stderr
  assert not (tmp_path / 'run').exists()


def test_a_bad_setting_fails_before_a_run_directory_exists(tmp_path):
  done = _cli('--launch', 'slurm', '--run_dir', str(tmp_path / 'run'), '--slurm', 'learner.cpu=2')
  assert done.returncode == 2 and 'unknown slurm setting' in done.stderr
  assert not (tmp_path / 'run').exists()


def test_a_step_that_cannot_see_the_run_directory_says_so(tmp_path):
  env = {**os.environ, 'SLURMD_NODENAME': 'node17'}
  done = subprocess.run(
    [
      sys.executable,
      '-m',
      'launch.slurm.node',
      '--run_dir',
      str(tmp_path / 'elsewhere'),
      '--job',
      '5',
      '--group',
      'learner',
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    env=env,
    timeout=120,
  )
  assert done.returncode == 2
  assert 'not visible on Slurm node node17' in done.stderr and 'shares' in done.stderr
